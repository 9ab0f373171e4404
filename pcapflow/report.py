"""The latency report: percentile tables rendered for a terminal, JSON or CSV.

How this works: ``build`` asks ``analysis.percentiles`` for one row per group
(quantiles by linear interpolation, DuckDB ``quantile_cont`` = NumPy's default;
see ``pcapflow.analysis``) and returns a ``Report``; ``render_table``,
``to_json`` and ``to_csv`` only format it. Terminal numbers are microseconds
with 3 decimals below 10 µs, 2 below 1 ms and 1 above (nanosecond resolution
where it matters, readable where it does not); JSON and CSV keep every value
rounded to the nanosecond (3 decimals of µs).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from rich import box
from rich.table import Table

from . import analysis

if TYPE_CHECKING:
    from .dataset import Dataset

# Columns of a report, in display order: (DataFrame column, heading).
STAT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("count", "count"),
    ("unmatched", "unmatched"),
    ("mean_us", "mean"),
    ("p50_us", "p50"),
    ("p90_us", "p90"),
    ("p99_us", "p99"),
    ("p99_9_us", "p99.9"),
    ("max_us", "max"),
)
QUANTILE_NOTE = ("µs; quantiles by linear interpolation (DuckDB quantile_cont, "
                 "numpy.quantile default)")


@dataclass(slots=True, kw_only=True)
class Report:
    """A percentile table and what it was computed over."""

    table: pd.DataFrame
    keys: list[str]
    by: list[str]
    exchange: list[str] | None = None
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    leg: str | None = "ack"
    metric: str = "latency"
    capture: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.table.empty

    def title(self) -> str:
        """One line saying what the table shows and over which rows."""
        what = {"latency": "Order-to-ack latency",
                "network_rtt": "Network round trip (own pure ACK)",
                "network": "Network round trip (estimate)",
                "exchange": "Exchange time (estimate)"}[self.metric]
        parts = [f"{what} by {', '.join(self.by)}"]
        if self.exchange:
            parts.append(", ".join(self.exchange))
        if self.leg and self.leg != "ack":
            parts.append(f"leg {self.leg}")
        if self.since is not None or self.until is not None:
            parts.append(f"{_ts(self.since) or '…'} to {_ts(self.until) or '…'}")
        return " — ".join(parts)

    def filter(self) -> analysis.Filter:
        """The row filter this report was computed with (for plots and row listings)."""
        return analysis.Filter(exchange=self.exchange, since=self.since, until=self.until,
                               leg=self.leg, capture=self.capture)


def _ts(t: pd.Timestamp | None) -> str:
    return "" if t is None else t.isoformat()


def build(
    ds: Dataset,
    by: str | Sequence[str] = "venue",
    exchange: str | Sequence[str] | None = None,
    since: analysis.TimeLike | None = None,
    until: analysis.TimeLike | None = None,
    leg: str | None = "ack",
    *,
    metric: str = "latency",
    capture: str | None = None,
) -> Report:
    """Compute the report (raises ``ConfigError`` for an unknown exchange or group)."""
    groups = analysis.group_columns(by)
    flt = analysis.make_filter(ds, exchange=exchange, since=since, until=until, leg=leg,
                               capture=capture)
    table = analysis.percentiles(ds, by=groups, exchange=flt.exchange, since=flt.since,
                                 until=flt.until, leg=leg, metric=metric, capture=capture)
    keys = [c for c in table.columns if c not in {s for s, _ in STAT_COLUMNS}
            and not c.endswith("_us") and c != "encrypted"]
    notes = []
    if table.empty:
        notes.append("no matched orders: ingest captures (with --keylog for TLS) first")
    elif int(table["encrypted"].sum()):
        notes.append(f"{int(table['encrypted'].sum())} rows were paired from TLS record "
                     "timing only (no key log): see the `encrypted` column")
    coverage = analysis.coverage_note(analysis.network_coverage(ds, flt), metric)
    if coverage:
        notes.append(coverage)
    return Report(table=table, keys=keys, by=groups, exchange=flt.exchange, since=flt.since,
                  until=flt.until, leg=leg, metric=metric, capture=capture, notes=notes)


def format_us(value: float | None) -> str:
    """Microseconds with 1-3 decimals by magnitude: 7.125, 812.40, 15230.5; '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) < 10:
        return f"{value:,.3f}"
    if abs(value) < 1000:
        return f"{value:,.2f}"
    return f"{value:,.1f}"


# What an empty group key means, per key (status is empty for orders never answered).
NULL_KEY = {"status": "(no reply)", "venue": "(unknown venue)"}


def key_text(value: object, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return NULL_KEY.get(key, "-")
    if isinstance(value, pd.Timestamp | dt.datetime):
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")
    return str(value)


def render_table(report: Report) -> Table:
    """A rich Table: one row per group, group keys left, numbers right-aligned."""
    table = Table(title=report.title(), title_justify="left", caption=QUANTILE_NOTE,
                  caption_justify="left", box=box.SIMPLE_HEAD)
    show_enc = bool(len(report.table)) and int(report.table["encrypted"].sum()) > 0
    for k in report.keys:
        table.add_column(k.replace("_", " "), no_wrap=True)
    for col, head in STAT_COLUMNS:
        table.add_column(head if col in ("count", "unmatched") else f"{head} µs",
                         justify="right")
    if show_enc:
        table.add_column("encrypted", justify="right")
    for row in report.table.itertuples(index=False):
        r = row._asdict()
        cells = [key_text(r[k], k) for k in report.keys]
        cells += [f"{int(r[c]):,}" if c in ("count", "unmatched") else format_us(_num(r[c]))
                  for c, _ in STAT_COLUMNS]
        if show_enc:
            cells.append(f"{int(r['encrypted']):,}")
        table.add_row(*cells)
    return table


def _num(v: object) -> float | None:
    return None if v is None or pd.isna(v) else float(v)  # type: ignore[arg-type]


def records(report: Report) -> list[dict[str, object]]:
    """Report rows as plain dicts: keys as text (times ISO 8601), µs rounded to the ns."""
    out = []
    for row in report.table.to_dict(orient="records"):
        rec: dict[str, object] = {}
        for k, v in row.items():
            if k.endswith("_us"):
                rec[k] = None if pd.isna(v) else round(float(v), 3)
            elif k in ("count", "unmatched", "encrypted", "flow_id"):
                rec[k] = None if pd.isna(v) else int(v)
            elif isinstance(v, pd.Timestamp):
                rec[k] = v.isoformat()
            else:
                rec[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        out.append(rec)
    return out


def to_json(report: Report) -> str:
    """JSON array of ``records`` (one object per group)."""
    return json.dumps(records(report), indent=1, ensure_ascii=False) + "\n"


def to_csv(report: Report) -> str:
    """CSV with a header row; the same values as ``to_json``."""
    df = pd.DataFrame(records(report), columns=list(report.table.columns))
    return df.to_csv(index=False, lineterminator="\n")
