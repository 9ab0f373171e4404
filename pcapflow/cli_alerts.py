"""``pcapflow alerts``: regime changes, p99 over a threshold, retransmission storms,
zero windows, microbursts, feed gaps, stale feeds and clock steps (``pcapflow.alerts``),
one row each: the ``alerts`` table, or the detectors run again with other thresholds.

Thin: options become ``alerts.Settings``; everything else is ``pcapflow.alerts``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console

from . import alerts as alerts_mod
from . import render
from .dataset import Dataset, require
from .parsers.errors import ConfigError

FORMATS = ("table", "json", "csv")


def _records(df: pd.DataFrame) -> list[dict[str, object]]:
    out = []
    for row in df.to_dict(orient="records"):
        rec: dict[str, object] = {}
        for k, v in row.items():
            if isinstance(v, pd.Timestamp):
                rec[k] = v.isoformat()
            elif v is None or v is pd.NA or (isinstance(v, float) and v != v):
                rec[k] = None
            elif hasattr(v, "item"):
                rec[k] = v.item()
            else:
                rec[k] = v
        out.append(rec)
    return out


def _cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, right-aligned columns) for a terminal or a pipe: the window as its
    start (UTC, to the µs) and length; --format json/csv keep every column."""
    header = ["start (UTC)", "length", "severity", "kind", "venue", "flow", "rows", "detail"]
    rows = []
    for r in df.itertuples():
        secs = (r.end_ts - r.start_ts).total_seconds()
        rows.append([r.start_ts.strftime("%Y-%m-%d %H:%M:%S.%f"),
                     f"{secs * 1e3:,.1f} ms" if secs < 10 else f"{secs:,.1f} s",
                     r.severity, r.kind, "" if pd.isna(r.venue) else str(r.venue),
                     "" if pd.isna(r.flow_id) else str(r.flow_id),
                     "" if pd.isna(r.evidence_rows) else f"{r.evidence_rows:,}", r.detail])
    return header, rows, [1, 5, 6]


def alerts_cmd(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    exchange: Annotated[str | None, typer.Option(
        "--exchange", "-e", help="Venue name(s), comma-separated (case-insensitive)")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Alerts whose window ends at or after this time (ISO 8601; naive = "
        "UTC)")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Alerts whose window starts before this time")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", help="Only these kinds, comma-separated: " + ", ".join(alerts_mod.DETECTORS))]
        = None,
    p99_us: Annotated[float | None, typer.Option(
        "--p99-us", help="p99 latency threshold per venue/endpoint and bucket (µs; default "
        "100000)")] = None,
    bucket_s: Annotated[int | None, typer.Option(
        "--bucket", help="p99 bucket width (s; default 60)")] = None,
    min_orders: Annotated[int | None, typer.Option(
        "--min-orders", help="Orders a bucket needs before its p99 counts (default 10)")]
        = None,
    storm: Annotated[int | None, typer.Option(
        "--storm", help="Retransmissions per second on one connection that make a storm "
        "(default 10)")] = None,
    stale_s: Annotated[float | None, typer.Option(
        "--stale", help="Seconds without a message after which a market-data stream is "
        "stale (default 5)")] = None,
    burst_us: Annotated[int | None, typer.Option(
        "--burst-window-us", help="Microburst window (µs; default 1000)")] = None,
    burst_factor: Annotated[float | None, typer.Option(
        "--burst-factor", help="A microburst is this many times the connection's mean rate "
        "(default 20) ...")] = None,
    burst_bytes: Annotated[int | None, typer.Option(
        "--burst-bytes", help="... and at least this many bytes per window (default 4096)")]
        = None,
    recompute: Annotated[bool, typer.Option(
        "--recompute", help="Run the detectors again over the whole dataset (any threshold "
        "option does); by default the alerts each capture's ingest stored are shown")]
        = False,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
) -> None:
    """Alerts over the dataset: latency regime changes (rank CUSUM), p99 above a threshold,
    retransmission storms, zero-window episodes, microbursts, feed gaps, stale feeds,
    capture clock steps (the alerts table; --recompute or a threshold runs them again)."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    given = {"p99_us": p99_us, "bucket_s": bucket_s, "min_orders": min_orders,
             "storm_per_s": storm, "stale_after_s": stale_s, "burst_window_us": burst_us,
             "burst_factor": burst_factor, "burst_min_bytes": burst_bytes}
    given = {k: v for k, v in given.items() if v is not None}
    kinds = tuple(k.strip() for k in kind.split(",") if k.strip()) if kind else None
    with Dataset(require(data)) as ds:
        try:
            if given or recompute:
                df = alerts_mod.alerts(ds, alerts_mod.Settings(**given), kinds,
                                       exchange=exchange, since=since, until=until)
            else:
                df = alerts_mod.stored(ds, kinds, exchange=exchange, since=since, until=until)
        except ConfigError as err:
            hint = {"unknown_venue": "--exchange", "bad_alert_kind": "--kind"}.get(
                err.code, "--since/--until")
            raise typer.BadParameter(str(err), param_hint=hint) from err
    if fmt == "json":
        sys.stdout.write(json.dumps(_records(df), indent=1, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(pd.DataFrame(_records(df), columns=list(df.columns)).to_csv(
            index=False, lineterminator="\n"))
    else:
        header, rows, right = _cells(df)
        render.show(header, rows, right, out=Console(), err=Console(stderr=True),
                    title=f"{len(df)} alert(s)", notes=[
                        "rows: evidence rows (--format json has the SQL that selects them)"],
                    droppable=["venue", "rows", "length"])


def register(app: typer.Typer) -> None:
    """Add ``alerts`` to the ``pcapflow`` command."""
    app.command("alerts")(alerts_cmd)
