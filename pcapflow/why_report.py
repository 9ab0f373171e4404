"""Why orders were slow, for people: ``pcapflow report --by cause`` and ``--slowest N``.

How this works. Both read the ``latency`` rows a report's filter selects
(``analysis.latency_rows``: venue, time, leg, capture) and the ``causes`` table
the ingest wrote (``pcapflow.causes``), joined on the order's key (capture,
flow, leg, correlation id and order time: the correlation id alone is one per
action, but a dataset matched by an older pcapflow may reuse JSON request ids, and
the order time keeps those apart; ``pcapflow match`` rewrites them).

``by_cause``: per venue and cause, the orders with that cause (an order with two
causes counts under each), their share of the venue's orders, the median and
largest cost (``cost_ns``: the longest the stall can have added), and the
orders' median latency; ``(none)`` is the orders with no cause, so the shares of
a venue's causes and ``(none)`` add up to at least 100%.

``slowest``: the ``n`` slowest orders with their latency split into the network
estimate (and how it was made: ``latency.network_method``) and the exchange's
share, and their causes, the costliest first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from . import analysis, render
from .report import key_text

if TYPE_CHECKING:
    from .dataset import Dataset

KEY = ["capture_id", "flow_id", "leg", "correlation_id", "order_ts"]
"""An order's key in ``latency`` and ``causes``."""
NONE = "(none)"
METHOD_SHORT = {"pure_ack": "ack", "nearest_rtt_sample": "near", "tsecr": "ts",
                "handshake": "hs", "none": "-"}
"""``network_method`` as the slowest table shows it (the note under it says what each is)."""


def _causes(ds: Dataset, rows: pd.DataFrame) -> pd.DataFrame:
    """The causes of ``rows`` (latency rows), one row per (order, cause)."""
    from . import causes

    found = causes.causes(ds)
    if rows.empty or found.empty:
        return found.iloc[0:0]
    return found.merge(rows[KEY], on=KEY, how="inner")


def by_cause(ds: Dataset, flt: analysis.Filter) -> pd.DataFrame:
    """Per venue and cause: orders, their share, cost p50/max and latency p50 (µs)."""
    rows = analysis.latency_rows(ds, flt)
    cols = ["venue", "cause", "orders", "share_pct", "cost_p50_us", "cost_max_us",
            "latency_p50_us"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows[rows.latency_ns.notna()]
    found = _causes(ds, rows)
    # the costliest row per (order, cause): an order resent twice counts once
    per = (found.sort_values("cost_ns", ascending=False, na_position="last")
           .drop_duplicates([*KEY, "cause"]))
    per = per.merge(rows[[*KEY]], on=KEY)
    named = per[KEY].drop_duplicates()
    none = rows.merge(named, on=KEY, how="left", indicator=True)
    none = none[none["_merge"] == "left_only"].assign(cause=NONE, cost_ns=pd.NA)
    both = pd.concat([per[["venue", "cause", "cost_ns", "latency_ns"]],
                      none[["venue", "cause", "cost_ns", "latency_ns"]]], ignore_index=True)
    total = rows.groupby("venue", dropna=False).size()
    out = []
    for (venue, cause), g in both.groupby(["venue", "cause"], dropna=False, sort=True):
        cost = pd.to_numeric(g.cost_ns, errors="coerce").dropna()
        out.append({"venue": venue, "cause": cause, "orders": len(g),
                    "share_pct": 100.0 * len(g) / int(total.get(venue, len(g))),
                    "cost_p50_us": cost.median() / 1e3 if len(cost) else None,
                    "cost_max_us": cost.max() / 1e3 if len(cost) else None,
                    "latency_p50_us": float(g.latency_ns.astype("float64").median()) / 1e3})
    df = pd.DataFrame(out, columns=cols)
    df["_none"] = df.cause == NONE
    return (df.sort_values(["venue", "_none", "orders"], ascending=[True, True, False])
            .drop(columns="_none").reset_index(drop=True))


def slowest(ds: Dataset, flt: analysis.Filter, n: int = 10) -> pd.DataFrame:
    """The ``n`` slowest orders: latency, network estimate (method), exchange time and
    causes (``why``: cause and cost, costliest first; ``why_detail``: the sentences)."""
    rows = analysis.latency_rows(ds, flt)
    rows = rows[rows.latency_ns.notna()]
    if rows.empty:
        return pd.DataFrame(columns=["order_ts", "venue", "endpoint", "latency_us",
                                     "network_us", "network_method", "exchange_us", "why",
                                     "why_detail"])
    top = rows.sort_values("latency_ns", ascending=False, kind="stable").head(n)
    found = _causes(ds, top)
    out = []
    for r in top.itertuples():
        mine = found[(found.capture_id == r.capture_id) & (found.flow_id == r.flow_id)
                     & (found.leg == r.leg) & (found.correlation_id == r.correlation_id)
                     & (found.order_ts == r.order_ts)]
        mine = mine.sort_values("cost_ns", ascending=False, na_position="last")
        why = ", ".join(c.cause + ("" if pd.isna(c.cost_ns) else
                                   f" {render.number(c.cost_ns / 1e6)} ms")
                        for c in mine.drop_duplicates("cause").itertuples())
        out.append({
            "order_ts": r.order_ts, "venue": r.venue, "endpoint": r.endpoint,
            "correlation_id": r.correlation_id,
            "latency_us": r.latency_ns / 1e3,
            "network_us": None if pd.isna(r.network_est_ns) else r.network_est_ns / 1e3,
            "network_method": r.network_method,
            "exchange_us": None if pd.isna(r.exchange_ns) else r.exchange_ns / 1e3,
            "why": why or NONE,
            "why_detail": " | ".join(mine.detail) or "no stall seen on the wire"})
    return pd.DataFrame(out)


def cause_unit(df: pd.DataFrame) -> tuple[str, float]:
    """The unit of ``by_cause``'s durations on a terminal (µs, or ms from 10 ms)."""
    return render.duration_unit(
        [*df.cost_max_us.dropna(), *df.latency_p50_us.dropna()]) if len(df) else ("µs", 1.0)


def cause_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, right-aligned columns) of ``by_cause`` for a terminal or a pipe
    (durations in ``cause_unit``, which the title says: the table fits 80 columns)."""
    _, div = cause_unit(df)
    header = ["venue", "cause", "orders", "share", "cost p50", "cost max", "lat p50"]
    rows = [[key_text(r.venue, "venue"), r.cause, f"{r.orders:,}", f"{r.share_pct:.0f}%",
             render.number(None if pd.isna(r.cost_p50_us) else r.cost_p50_us / div),
             render.number(None if pd.isna(r.cost_max_us) else r.cost_max_us / div),
             render.number(r.latency_p50_us / div)] for r in df.itertuples()]
    return header, rows, [2, 3, 4, 5, 6]


def slowest_cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, right-aligned columns) of ``slowest`` (times of day to the µs)."""
    unit, div = render.duration_unit(df.latency_us) if len(df) else ("µs", 1.0)
    header = ["time (UTC)", "venue", "endpoint", f"lat {unit}", f"net {unit}", "how",
              f"exch {unit}", "why"]
    rows = [[r.order_ts.strftime("%H:%M:%S.%f"), key_text(r.venue, "venue"),
             key_text(r.endpoint, "endpoint"),
             render.number(r.latency_us / div),
             render.number(None if pd.isna(r.network_us) else r.network_us / div),
             METHOD_SHORT.get(r.network_method, str(r.network_method)),
             render.number(None if pd.isna(r.exchange_us) else r.exchange_us / div), r.why]
            for r in df.itertuples()]
    return header, rows, [3, 4, 6]


CAUSE_NOTE = ("orders: with that cause (an order may have several; (none): no stall seen); "
              "share: of the venue's orders; cost: the longest the stall can have added "
              "(causes.cost_ns)")
SLOWEST_NOTE = ("net: network round-trip estimate, how: ack = the order's own pure ACK, "
                "near = a nearby pure-ACK sample, ts = a nearby TCP timestamps echo, "
                "hs = the handshake; exch = latency - net; "
                "--format json has every cause's sentence")
