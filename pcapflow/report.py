"""The latency report: percentile tables rendered for a terminal, JSON or CSV.

How this works: ``build`` asks ``analysis.percentiles`` for one row per group
(quantiles by linear interpolation, DuckDB ``quantile_cont`` = NumPy's default;
see ``pcapflow.analysis``) and returns a ``Report``; ``render_table``,
``to_json`` and ``to_csv`` only format it. Terminal numbers are microseconds
with 3 decimals below 10 µs, 2 below 1 ms and 1 above (nanosecond resolution
where it matters, readable where it does not); JSON and CSV keep every value
rounded to the nanosecond (3 decimals of µs).

The table is a pandas DataFrame (``build``'s default: what a notebook and the HTML
report read) or, built with ``frame=False``, ``Rows``: the same SQL's rows as plain
Python values, which is all the text and JSON output need. ``pcapflow report`` prints
that way without importing pandas, pyarrow or NumPy (~0.4 s of its start-up); the
formatting below reads either kind of table, so both print the same text.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import analysis, render
from .coverage import TABLES as COVERAGE_TABLES
from .coverage import coverage as connection_coverage

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

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
TABLES = ("latency", "unmatched", *COVERAGE_TABLES)
"""The views ``build`` reads (a ``Dataset(..., views=TABLES)`` of these alone answers it)."""
QUANTILE_NOTE = ("µs; quantiles by linear interpolation (DuckDB quantile_cont, "
                 "numpy.quantile default)")


class Rows:
    """A percentile table as plain Python values: column names and one tuple per row
    (nulls ``None``, times ``datetime`` in UTC), as ``analysis.percentile_rows`` gives
    them. Holds what ``cells`` and ``records`` read of a DataFrame."""

    __slots__ = ("columns", "rows")

    def __init__(self, columns: list[str], rows: list[tuple[object, ...]]) -> None:
        self.columns = list(columns)
        self.rows = list(rows)

    @property
    def empty(self) -> bool:
        return not self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[object]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def insert(self, at: int, name: str, values: Sequence[object]) -> None:
        """Add a column before position ``at`` (as ``DataFrame.insert``)."""
        self.columns.insert(at, name)
        self.rows = [(*r[:at], v, *r[at:]) for r, v in zip(self.rows, values, strict=True)]

    def __repr__(self) -> str:
        return f"Rows({self.columns!r}, {len(self.rows)} rows)"



@dataclass(slots=True, kw_only=True)
class Report:
    """A percentile table and what it was computed over."""

    table: pd.DataFrame | Rows
    """A DataFrame (``build``'s default) or ``Rows`` (``build(frame=False)``)."""
    keys: list[str]
    by: list[str]
    exchange: list[str | None] | None = None
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    leg: str | None = "ack"
    metric: str = "latency"
    capture: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.table.empty

    @property
    def frame(self) -> pd.DataFrame:
        """The table as a DataFrame (a report ``build`` made with its default)."""
        if isinstance(self.table, Rows):
            raise TypeError("this report was built with frame=False: its table is Rows")
        return self.table

    def title(self) -> str:
        """One line saying what the table shows and over which rows."""
        what = {"latency": "Order-to-ack latency",
                "network_rtt": "Network round trip (own pure ACK)",
                "network": "Network round trip (estimate)",
                "exchange": "Exchange time (estimate)"}[self.metric]
        parts = [f"{what} by {', '.join(self.by)}"]
        if self.exchange:
            parts.append(", ".join(v or "(unknown)" for v in self.exchange))
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
    exchange: str | Sequence[str | None] | None = None,
    since: analysis.TimeLike | None = None,
    until: analysis.TimeLike | None = None,
    leg: str | None = "ack",
    *,
    metric: str = "latency",
    capture: str | None = None,
    whole: Dataset | None = None,
    frame: bool = True,
) -> Report:
    """Compute the report (raises ``ConfigError`` for an unknown exchange or group).

    ``whole``: when ``ds`` is narrowed to a time window's captures (``Dataset.narrow``),
    the whole dataset, against which an empty result is explained (which filter emptied
    it, what time the orders span). ``frame=False``: the table as ``Rows`` (no pandas),
    for printing."""
    groups = analysis.group_columns(by)
    flt = analysis.make_filter(ds, exchange=exchange, since=since, until=until, leg=leg,
                               capture=capture)
    table: pd.DataFrame | Rows
    if frame:
        table = analysis.percentiles(ds, by=groups, exchange=flt.exchange, since=flt.since,
                                     until=flt.until, leg=leg, metric=metric, capture=capture)
    else:
        table = Rows(*analysis.percentile_rows(ds, groups, flt, metric=metric))
    if "capture_id" in table.columns:  # the file name, which people know it by
        names = capture_names(ds)
        table.insert(list(table.columns).index("capture_id"), "capture",
                     [names.get(c, c) for c in _column(table, "capture_id")])  # type: ignore[call-overload]
    keys = [c for c in table.columns if c not in {s for s, _ in STAT_COLUMNS}
            and not c.endswith("_us") and c != "encrypted"
            and not (c == "capture_id" and "capture" in table.columns)]
    notes = []
    if table.empty:
        notes.append(analysis.why_empty(whole if whole is not None else ds, flt))
    elif _any_null(table, "venue"):
        notes.append("(unknown): connections no venue rule named, e.g. FIX without a "
                     "venue map; select them with --exchange unknown, name them with "
                     "--venues map.toml (docs/venue-map.md)")
    if ds.fetchone("SELECT 1 FROM captures LIMIT 1") is not None:
        ids = analysis.resolve_capture(ds, capture) if capture is not None else None
        line = connection_coverage(ds, capture_ids=ids, venues=flt.exchange).line()
        if line:
            notes.append(line)
    if not table.empty and _total(table, "encrypted"):
        notes.append(f"{_total(table, 'encrypted')} rows were paired from TLS record "
                     "timing only (not decrypted): see the `encrypted` column")
    coverage = analysis.coverage_note(analysis.network_coverage(ds, flt), metric)
    if coverage:
        notes.append(coverage)
    return Report(table=table, keys=keys, by=groups, exchange=flt.exchange, since=flt.since,
                  until=flt.until, leg=leg, metric=metric, capture=capture, notes=notes)


def _column(table: pd.DataFrame | Rows, name: str) -> list[object]:
    """A column's values (a DataFrame's as Python scalars, as iterating it gives them)."""
    return table.column(name) if isinstance(table, Rows) else list(table[name])


def _any_null(table: pd.DataFrame | Rows, name: str) -> bool:
    if isinstance(table, Rows):
        return any(_missing(v) for v in table.column(name))
    return bool(table[name].isna().any())


def _total(table: pd.DataFrame | Rows, name: str) -> int:
    """The sum of an integer column (0 for no rows)."""
    if isinstance(table, Rows):
        return sum(int(v) for v in table.column(name) if not _missing(v))  # type: ignore[call-overload]
    return int(table[name].sum())


def _dicts(table: pd.DataFrame | Rows) -> Iterator[dict[str, object]]:
    """The rows as dicts (a DataFrame's as ``to_dict(orient="records")`` gives them)."""
    if isinstance(table, Rows):
        return (dict(zip(table.columns, r, strict=True)) for r in table.rows)
    return iter(table.to_dict(orient="records"))


def _missing(v: object) -> bool:
    """A null as pandas sees one (``pd.isna`` of a scalar), without pandas: None, NaN,
    NaT (unequal to itself), ``pd.NA`` (whose comparisons are NA: no truth value)."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except TypeError:
        return True


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
NULL_KEY = {"status": "(no reply)", "venue": "(unknown)"}


def key_text(value: object, key: str = "") -> str:
    """A group key as people read it: FIX MsgTypes by name, empty keys said, times to
    the minute."""
    if _missing(value):
        return NULL_KEY.get(key, "-")
    if key == "endpoint" and value in analysis.FIX_ENDPOINTS:
        return analysis.FIX_ENDPOINTS[value]
    if isinstance(value, dt.datetime):  # (a pandas Timestamp is one)
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def capture_names(ds: Dataset) -> dict[str, str]:
    """capture_id -> the capture's file name (a set's first file): how people know it."""
    return dict(ds.fetchall("SELECT capture_id, arg_min(regexp_extract(path, '[^/]*$'), "
                            "file_index) FROM captures GROUP BY ALL"))


def group_labels(rows: pd.DataFrame, by: Sequence[str], names: dict[str, str] | None = None
                 ) -> tuple[pd.DataFrame, str]:
    """``rows`` (of ``latency``) with one column naming each row's group as the report's
    table does (``binance / order.place``), and that column's name: what plots colour by,
    so ``--plot`` and ``--html`` follow ``--by``. ``names`` (``capture_names``) shows
    captures by file name rather than by id."""
    if list(by) == ["venue"] or rows.empty:
        return rows, "venue"
    names = names or {}
    capture = rows["capture_id"].map(lambda c: names.get(c, c[:8]))
    parts = []
    for g in by:
        if g == "minute":
            parts.append(rows["order_ts"].dt.floor("min").dt.strftime("%H:%M"))
        elif g == "flow":
            parts.append(capture + ":" + rows["flow_id"].astype(str))
        elif g == "capture":
            parts.append(capture)
        else:
            parts.append(rows[g].map(lambda v, g=g: key_text(v, g)))
    out = rows.copy()
    out["group"] = parts[0].str.cat(parts[1:], sep=" / ") if len(parts) > 1 else parts[0]
    return out, "group"


# Short headings that keep a report within 80 columns ("unans": orders never answered).
SHORT_HEAD = {"count": "count", "unmatched": "unans", "encrypted": "enc"}


def cells(report: Report) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, right-aligned column indexes) of a report for a terminal or a pipe.

    Each duration column gets its own unit (``render.duration_unit``: µs, or ms once
    its largest value reaches 10 ms), named in its heading (``p99 ms``).
    """
    t = report.table
    show_enc = bool(len(t)) and _total(t, "encrypted") > 0
    header = [k.replace("_", " ") for k in report.keys]
    cols: list[tuple[str, str, float]] = []  # (column, heading, divisor from µs)
    for col, head in STAT_COLUMNS:
        if col in ("count", "unmatched"):
            cols.append((col, SHORT_HEAD[col], 0.0))
        else:
            unit, div = (render.duration_unit(_num(v) for v in _column(t, col)) if len(t)
                         else ("µs", 1.0))
            cols.append((col, f"{head} {unit}", div))
    if show_enc:
        cols.append(("encrypted", SHORT_HEAD["encrypted"], 0.0))
    header += [h for _, h, _ in cols]
    rows = []
    dicts = _dicts(t) if isinstance(t, Rows) else (
        row._asdict() for row in t.itertuples(index=False))
    for r in dicts:
        line = [key_text(r[k], k) for k in report.keys]
        for col, _, div in cols:
            v = _num(r[col])
            line.append(f"{int(v or 0):,}" if div == 0.0 else
                        render.number(None if v is None else v / div))
        rows.append(line)
    right = list(range(len(report.keys), len(header)))
    return header, rows, right


def caption(report: Report) -> str:
    """The line under a report: units, quantile method, and which rows are left out."""
    return ("µs/ms as headed; quantiles by linear interpolation (DuckDB quantile_cont, "
            "numpy.quantile default); unans = orders with no reply")


def render_table(report: Report, width: int | None = None) -> Table:
    """A rich Table for a terminal: one row per group, group keys left, numbers right.

    With ``width``, the mean, then p90, then the encrypted count, then p99.9 are left out
    (and the caption says so) while the table would not fit otherwise, or only with a
    group's name wrapped to more than two lines."""
    header, rows, right = cells(report)
    note = caption(report)
    if width is not None:
        droppable = [h for p in ("mean ", "p90 ", "enc", "p99.9 ") for h in header
                     if h.startswith(p)]
        header, rows, right, dropped = render.fit(header, rows, right, width, droppable)
        if dropped:
            note += (f"; {', '.join(d.split()[0] for d in dropped)} left out to fit "
                     f"{width} columns (--format csv has them)")
    return render.rich_table(header, rows, right, title=report.title(), caption=note,
                             width=width)


def _num(v: object) -> float | None:
    return None if _missing(v) else float(v)  # type: ignore[arg-type]


def records(report: Report) -> list[dict[str, object]]:
    """Report rows as plain dicts: keys as text (times ISO 8601), µs rounded to the ns."""
    out = []
    for row in _dicts(report.table):
        rec: dict[str, object] = {}
        for k, v in row.items():
            if k.endswith("_us"):
                rec[k] = None if _missing(v) else round(float(v), 3)  # type: ignore[arg-type]
            elif k in ("count", "unmatched", "encrypted", "flow_id"):
                rec[k] = None if _missing(v) else int(v)  # type: ignore[call-overload]
            elif isinstance(v, dt.datetime) and not _missing(v):  # (Timestamps too)
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
    import pandas as pd

    df = pd.DataFrame(records(report), columns=list(report.table.columns))
    return df.to_csv(index=False, lineterminator="\n")
