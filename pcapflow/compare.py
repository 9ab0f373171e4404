"""Before/after, per group: did latency change, and is it more than noise?

How this works. Both datasets are filtered the same way and grouped by the same keys
(``by``: venue, endpoint, kind...; venue always first, as in ``report``). For each
group present on both sides, the p50/p90/p99 of each side, their differences
(after - before) and percentile-bootstrap confidence intervals of the differences
come from ``analysis.bootstrap_quantile_diff`` (each side resampled independently with
replacement, ``n_boot`` times; linear-interpolation quantiles as everywhere in
pcapflow). The verdict of a group reads the intervals:

- ``faster``: some quantile's interval lies wholly below 0 and none wholly above;
- ``slower``: some wholly above 0 and none wholly below;
- ``mixed``: some below and some above (e.g. the median faster, the tail slower);
- ``no evidence``: every interval contains 0 (no change is claimed; it may still be
  there, too small for this many samples to show);
- ``too few``: fewer than ``MIN_SAMPLES`` orders on a side (nothing is claimed);
- ``before only`` / ``after only``: the group is on one side only.

The same seed gives the same intervals, so a report can be reproduced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import analysis, render

if TYPE_CHECKING:
    from .dataset import Dataset

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
MIN_SAMPLES = 20
"""Fewer orders than this on either side of a group: verdict ``too few``."""
N_BOOT = 1000
CI = 0.95


def _label(q: float) -> str:
    return analysis.quantile_column(q).removesuffix("_us")


def _group_keys(by: str | Sequence[str]) -> list[str]:
    cols = []
    for g in analysis.group_columns(by):
        if g == "flow":
            cols += ["capture_id", "flow_id"]
        elif g == "capture":
            cols.append("capture_id")
        elif g == "minute":
            raise analysis.ConfigError("compare cannot group by minute (the two sides cover "
                                       "different times)", code="bad_group")
        else:
            cols.append(g)
    return cols


def verdict(significant_lower: Sequence[bool], significant_higher: Sequence[bool]) -> str:
    """The verdict of one group from which quantile intervals exclude 0 (module docstring)."""
    lower, higher = any(significant_lower), any(significant_higher)
    if lower and higher:
        return "mixed"
    if lower:
        return "faster"
    if higher:
        return "slower"
    return "no evidence"


def compare(before: Dataset, after: Dataset, by: str | Sequence[str] = "venue", *,
            quantiles: Sequence[float] = QUANTILES, n_boot: int = N_BOOT, ci: float = CI,
            seed: int | None = 0, metric: str = "latency", **filters: Any) -> pd.DataFrame:
    """One row per group: ``n_before``, ``n_after``; per quantile (``p50``...) the
    ``*_before_us``, ``*_after_us``, ``*_diff_us`` (after - before) and the interval
    ``*_ci_low_us``/``*_ci_high_us``; and ``verdict`` (module docstring).

    ``filters`` are ``analysis.latency``'s (``venue``/``exchange``, ``endpoint``,
    ``kind``, ``status``, ``since``, ``until``, ``leg``, ``capture``), applied to both.
    """
    if metric not in analysis.METRICS:
        raise analysis.ConfigError(f"unknown metric {metric!r}", code="bad_metric")
    if "venue" in filters:
        filters["exchange"] = filters.pop("venue")
    keys = _group_keys(by)
    col = analysis.METRICS[metric]
    sides = []
    for ds in (before, after):
        exchange = filters.get("exchange")
        # a venue named on one side only is not an error here: that side has no rows
        if exchange is not None:
            have = {v.lower() for v in analysis.venues(ds)}
            wanted = exchange.split(",") if isinstance(exchange, str) else list(exchange)
            kept = [w for w in wanted if w.strip().lower() in have]
            f = {**filters, "exchange": kept} if kept else None
        else:
            f = filters
        df = analysis.latency(ds, **f) if f is not None else pd.DataFrame(columns=[*keys, col])
        df = df.dropna(subset=[col])
        sides.append({k: g[col].to_numpy(dtype=np.float64)
                      for k, g in df.groupby(keys, dropna=False, sort=True)})
    rows = []
    for key in sorted(set(sides[0]) | set(sides[1]), key=lambda k: tuple(map(str, _tuple(k)))):
        a, b = sides[0].get(key), sides[1].get(key)
        row: dict[str, object] = dict(zip(keys, _tuple(key), strict=True))
        row["n_before"] = 0 if a is None else a.size
        row["n_after"] = 0 if b is None else b.size
        for q in quantiles:
            lab = _label(q)
            row[f"{lab}_before_us"] = np.quantile(a, q) / 1e3 if a is not None else math.nan
            row[f"{lab}_after_us"] = np.quantile(b, q) / 1e3 if b is not None else math.nan
            for c in ("diff", "ci_low", "ci_high"):
                row[f"{lab}_{c}_us"] = math.nan
        if a is None or b is None:
            row["verdict"] = "after only" if a is None else "before only"
        elif min(a.size, b.size) < MIN_SAMPLES:
            row["verdict"] = "too few"
        else:
            res = analysis.bootstrap_quantile_diff(a, b, quantiles, n_boot=n_boot, ci=ci,
                                                   seed=seed)
            for q, r in zip(quantiles, res.itertuples(), strict=True):
                lab = _label(q)
                row[f"{lab}_diff_us"] = r.diff / 1e3
                row[f"{lab}_ci_low_us"] = r.ci_low / 1e3
                row[f"{lab}_ci_high_us"] = r.ci_high / 1e3
            row["verdict"] = verdict(list(res.ci_high < 0), list(res.ci_low > 0))
        rows.append(row)
    cols = [*keys, "n_before", "n_after"]
    for q in quantiles:
        lab = _label(q)
        cols += [f"{lab}_{c}_us" for c in ("before", "after", "diff", "ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=[*cols, "verdict"])


def _tuple(key: object) -> tuple[object, ...]:
    return key if isinstance(key, tuple) else (key,)


# -- output ---------------------------------------------------------------------------------

def cells(table: pd.DataFrame, keys: Sequence[str], quantiles: Sequence[float] = QUANTILES
          ) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows and right-aligned columns for a terminal or a pipe: the orders on each
    side, per quantile before→after and the change with its 95% interval (three
    significant digits, one unit per quantile: µs, or ms from 10 ms), and the verdict."""
    from .report import key_text

    header = [k.replace("_", " ") for k in keys] + ["n"]
    columns: list[list[str]] = [[key_text(v, k) for v in table[k]] for k in keys]
    columns.append([f"{int(a):,}→{int(b):,}" for a, b in zip(table["n_before"],
                                                             table["n_after"], strict=True)])
    for q in quantiles:
        lab = _label(q)
        unit, div = render.duration_unit([*table[f"{lab}_before_us"],
                                          *table[f"{lab}_after_us"]])
        header.append(f"{lab} {unit}")
        columns.append([f"{_sig(x / div)}→{_sig(y / div)}"
                        for x, y in zip(table[f"{lab}_before_us"], table[f"{lab}_after_us"],
                                        strict=True)])
        header.append(f"Δ{lab} {unit} [CI]")
        columns.append([_delta(d, lo, hi, div) for d, lo, hi in zip(
            table[f"{lab}_diff_us"], table[f"{lab}_ci_low_us"], table[f"{lab}_ci_high_us"],
            strict=True)])
    header.append("verdict")
    columns.append(list(table["verdict"]))
    rows = [list(r) for r in zip(*columns, strict=True)] if len(table) else []
    right = list(range(len(keys), len(header) - 1))
    return header, rows, right


DROPPABLE = ("p90 ", "Δp90 ", "p50 ", "p99 ")
"""Headings (by prefix) a terminal too narrow for the comparison leaves out, in order: the
changes and their intervals stay, the before→after values go first."""


def _sig(v: float, sign: str = "") -> str:
    """Three significant digits, never an exponent: 2.33, 23.3, 233, 2,331; '-' for none."""
    if v is None or math.isnan(v):
        return "-"
    if abs(v) < 10:
        return f"{v:{sign},.2f}"
    if abs(v) < 100:
        return f"{v:{sign},.1f}"
    return f"{v:{sign},.0f}"


def _delta(d: float, lo: float, hi: float, div: float) -> str:
    if math.isnan(d):
        return "-"
    if math.isnan(lo) or math.isnan(hi):
        return _sig(d / div, "+")
    return f"{_sig(d / div, '+')} [{_sig(lo / div, '+')}, {_sig(hi / div, '+')}]"


def records(table: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as plain dicts (µs rounded to the ns, NaN as null)."""
    out = []
    for row in table.to_dict(orient="records"):
        rec: dict[str, object] = {}
        for k, v in row.items():
            if isinstance(v, float):
                rec[k] = None if math.isnan(v) else (round(v, 3) if k.endswith("_us") else v)
            elif isinstance(v, np.integer):
                rec[k] = int(v)
            else:
                rec[k] = v
        out.append(rec)
    return out


def to_json(table: pd.DataFrame) -> str:
    return json.dumps(records(table), indent=1, ensure_ascii=False) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    return pd.DataFrame(records(table), columns=list(table.columns)).to_csv(
        index=False, lineterminator="\n")


def to_html(table: pd.DataFrame, keys: Sequence[str], title: str) -> str:
    """A self-contained HTML page of the comparison."""
    from html import escape

    header, rows, _ = cells(table, keys)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    note = (f"Differences are after - before; intervals are {CI:.0%} percentile-bootstrap "
            f"intervals ({N_BOOT} resamples of each side); a verdict needs an interval that "
            f"excludes 0 and at least {MIN_SAMPLES} orders on each side.")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>body{{font-family:sans-serif}}"
            "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}"
            "</style></head><body>"
            f"<h1>{escape(title)}</h1><table><tr>{head}</tr>{body}</table>"
            f"<p>{escape(note)}</p></body></html>\n")
