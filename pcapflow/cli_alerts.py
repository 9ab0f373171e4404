"""``pcapflow alerts``: regime changes, p99 over a threshold, retransmission storms,
zero windows, microbursts, feed gaps, stale feeds and clock steps (``pcapflow.alerts``),
one row each: the ``alerts`` table, or the detectors run again with other thresholds.

Thin: options become ``alerts.Settings``; everything else is ``pcapflow.alerts``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console

from . import alerts as alerts_mod
from . import render
from .dataset import Dataset, require
from .parsers.errors import ConfigError

FORMATS = ("table", "json", "csv")
TABLE_COLUMNS = ("start_ts", "end_ts", "severity", "kind", "venue", "endpoint", "flow_id",
                 "stream", "detail", "evidence_rows")


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


def _terminal_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[int],
                                                  list[str]]:
    """A person's view: a numbered row per alert (start to the second, how long, what,
    where), and each alert's detail as a numbered line under the table (details are
    sentences: a column of them would wrap every row)."""
    header = ["#", "start (UTC)", "for", "severity", "kind", "venue", "endpoint", "flow"]
    rows, notes = [], []
    for i, r in enumerate(_records(df[list(TABLE_COLUMNS)]), 1):
        start, end = pd.Timestamp(r["start_ts"]), pd.Timestamp(r["end_ts"])
        seconds = (end - start).total_seconds()
        rows.append([str(i), start.strftime("%Y-%m-%d %H:%M:%S"),
                     f"{seconds:,.0f} s" if seconds >= 1 else f"{seconds * 1e3:,.0f} ms",
                     str(r["severity"]), str(r["kind"]), str(r["venue"] or ""),
                     str(r["endpoint"] or ""), "" if r["flow_id"] is None else str(r["flow_id"])])
        detail = str(r["detail"] or "")
        if r["stream"]:
            detail = f"{r['stream']}: {detail}"
        notes.append(f"{i}. {detail}")
    if all(not r[7] for r in rows):  # no alert names a connection: no empty column
        return header[:7], [r[:7] for r in rows], [0, 2], notes
    return header, rows, [0, 2, 7], notes


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
    options: dict[str, Any] = {
        "p99_us": p99_us, "bucket_s": bucket_s, "min_orders": min_orders,
        "storm_per_s": storm, "stale_after_s": stale_s, "burst_window_us": burst_us,
        "burst_factor": burst_factor, "burst_min_bytes": burst_bytes}
    given = {k: v for k, v in options.items() if v is not None}
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
    elif df.empty:
        checked = ", ".join(kinds or alerts_mod.DETECTORS)
        render.note(console, f"no alerts ({checked} checked)")
    elif out.is_terminal:
        header, rows, right, notes = _terminal_cells(df)
        render.show(header, rows, right, out=out, err=console, title=f"{len(df)} alert(s)",
                    notes=notes, droppable=("flow", "for"))
    else:  # piped: every column, a line per alert
        recs = _records(df[list(TABLE_COLUMNS)])
        rows = [["" if r[c] is None else str(r[c]) for c in TABLE_COLUMNS] for r in recs]
        render.show(list(TABLE_COLUMNS), rows, [6, 9], out=out, err=console)


out = Console()
console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``alerts`` to the ``pcapflow`` command."""
    app.command("alerts")(alerts_cmd)
