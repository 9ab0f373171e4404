"""Latency figures from ``latency`` DataFrames (as ``analysis.latency`` returns them).

Every function builds a ``matplotlib.figure.Figure`` on the Agg canvas and
returns it: nothing is shown, no pyplot global state is touched, so the same
calls work in a notebook, a headless CLI run and a test. Latencies are drawn in
microseconds on log axes (order-to-ack times span µs to seconds); times on the x
axis are UTC. Groups (``by``) get one colour each, in sorted order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_GROUPS = 10
"""Groups drawn per figure; beyond this the smallest groups are left out (and the
title says so) to keep the legend readable."""

ROLLING_MIN_PERIODS = 5
"""Orders a rolling-p99 window needs before its value is drawn."""


def _figure(size: tuple[float, float] = (8, 4.5)) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _groups(df: pd.DataFrame, by: str | None) -> tuple[list[tuple[str, pd.DataFrame]], int]:
    """(label, rows) per group, largest MAX_GROUPS only, and the number left out."""
    if df.empty:
        return [], 0
    if not by or by not in df.columns:
        return [("all", df)], 0
    sizes = df.groupby(by, dropna=False).size().sort_values(ascending=False)
    keep = sorted(sizes.index[:MAX_GROUPS], key=str)
    return [(str(k), df[df[by].eq(k) if pd.notna(k) else df[by].isna()]) for k in keep], \
        max(0, len(sizes) - MAX_GROUPS)


def _us(rows: pd.DataFrame, col: str = "latency_ns") -> np.ndarray:
    return rows[col].dropna().to_numpy(dtype=np.float64) / 1e3


def _colors(ax: Axes) -> Iterator[str]:
    """The style's colour cycle, repeated (one colour per group, same order everywhere)."""
    return itertools.cycle(mpl.rcParams["axes.prop_cycle"].by_key()["color"])


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _title(ax: Axes, text: str, left_out: int) -> None:
    ax.set_title(text + (f" ({left_out} smaller groups not shown)" if left_out else ""),
                 loc="left", fontsize="medium")


def draw_histogram(ax: Axes, df: pd.DataFrame, by: str | None = "venue", bins: int = 60) -> None:
    """Step histograms of latency per group on log-spaced bins (log x axis)."""
    groups, left_out = _groups(df, by)
    values = _us(df)
    values = values[values > 0]
    if values.size == 0:
        _empty(ax, "matched orders")
        return
    lo, hi = values.min(), values.max()
    edges = np.geomspace(lo * 0.95, hi * 1.05 if hi > lo else lo * 1.1, bins + 1)
    for (label, rows), color in zip(groups, _colors(ax), strict=False):
        v = _us(rows)
        ax.hist(v[v > 0], bins=edges.tolist(), histtype="step", linewidth=1.5, color=color,
                label=f"{label} (n={v.size})")
    ax.set_xscale("log")
    ax.set_xlabel("order-to-ack latency (µs, log scale)")
    ax.set_ylabel("orders per bin")
    ax.legend(fontsize="small")
    _title(ax, "Latency histogram", left_out)


def draw_cdf(ax: Axes, df: pd.DataFrame, by: str | None = "venue") -> None:
    """Empirical CDF per group (log x), with each group's p50 and p99 marked."""
    groups, left_out = _groups(df, by)
    if not groups:
        _empty(ax, "matched orders")
        return
    for (label, rows), color in zip(groups, _colors(ax), strict=False):
        v = np.sort(_us(rows))
        if v.size == 0:
            continue
        y = np.arange(1, v.size + 1) / v.size
        ax.step(v, y, where="post", color=color, linewidth=1.5, label=label)
        for q, marker in ((0.5, "o"), (0.99, "^")):
            ax.plot([np.quantile(v, q)], [q], marker=marker, color=color, markersize=5)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("order-to-ack latency (µs, log scale)")
    ax.set_ylabel("fraction of orders ≤ x")
    ax.legend(fontsize="small", title="● p50  ▲ p99", title_fontsize="small")
    _title(ax, "Latency CDF", left_out)


def auto_window(times: pd.Series) -> pd.Timedelta:
    """A rolling window of about 1/20 of the time span, rounded to 1-2-5 steps (≥ 1 ms)."""
    span = (times.max() - times.min()) if len(times) else pd.Timedelta(0)
    target = max(span / 20, pd.Timedelta("1ms"))
    steps = [pd.Timedelta(m * 10**e, "ms") for e in range(0, 8) for m in (1, 2, 5)]
    return next((s for s in steps if s >= target), steps[-1])


def rolling_quantile(rows: pd.DataFrame, window: str | pd.Timedelta | int, q: float = 0.99,
                     col: str = "latency_ns") -> pd.Series:
    """Rolling ``q``-quantile (ns) of ``col`` over ``window`` (time span or order count),
    indexed by order time; linear interpolation, as everywhere in pcapflow."""
    s = rows.dropna(subset=[col]).sort_values("order_ts").set_index("order_ts")[col]
    s = s.astype("float64")
    if isinstance(window, int):
        return s.rolling(window, min_periods=min(window, ROLLING_MIN_PERIODS)).quantile(q)
    return s.rolling(pd.Timedelta(window), min_periods=ROLLING_MIN_PERIODS).quantile(q)


def draw_timeline(ax: Axes, df: pd.DataFrame, by: str | None = "venue",
                  window: str | pd.Timedelta | int | None = None) -> None:
    """Each order's latency against its time (dots) and a rolling p99 per group (line)."""
    groups, left_out = _groups(df, by)
    if not groups:
        _empty(ax, "matched orders")
        return
    win = window if window is not None else auto_window(df["order_ts"])
    for (label, rows), color in zip(groups, _colors(ax), strict=False):
        rows = rows.dropna(subset=["latency_ns"])
        t = rows["order_ts"].dt.tz_convert("UTC").dt.tz_localize(None)
        ax.scatter(t, rows["latency_ns"] / 1e3, s=6, alpha=0.45, color=color, linewidths=0)
        p99 = rolling_quantile(rows, win)
        ax.plot(p99.index.tz_convert("UTC").tz_localize(None), p99.to_numpy() / 1e3,
                color=color, linewidth=1.6, label=f"{label} rolling p99")
    ax.set_yscale("log")
    ax.set_xlabel("order time (UTC)")
    ax.set_ylabel("latency (µs, log scale)")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=20)
    _title(ax, f"Latency over time (rolling p99, window {_window_label(win)})", left_out)


def _window_label(win: str | pd.Timedelta | int) -> str:
    if isinstance(win, int):
        return f"{win} orders"
    td = pd.Timedelta(win)
    for unit, ns in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if td.value >= ns and td.value % ns == 0:
            return f"{td.value // ns} {unit}"
    return str(td)


def draw_breakdown(ax: Axes, df: pd.DataFrame, by: str | None = "venue") -> None:
    """Median latency per group split into the network round-trip estimate and the
    exchange's share, with each group's coverage (orders with an estimate, of all)."""
    groups, left_out = _groups(df, by)
    cols = ["network_est_ns", "exchange_ns"]
    if "network_est_ns" not in df.columns or df["network_est_ns"].isna().all():
        cols = ["network_rtt_ns", "exchange_ns"]  # a dataset matched before decompose.sql
    rows = [(label, g.dropna(subset=cols), len(g)) for label, g in groups]
    rows = [r for r in rows if len(r[1])]
    if not rows:
        _empty(ax, "orders with a network round trip")
        return
    labels = [f"{label}\n{len(g):,}/{n:,} orders" for label, g, n in rows]
    net = np.array([np.median(g[cols[0]]) for _, g, _ in rows]) / 1e3
    exch = np.array([np.median(g["exchange_ns"]) for _, g, _ in rows]) / 1e3
    y = np.arange(len(labels))
    ax.barh(y, net, color="tab:blue", label="network round trip, estimated (median)")
    ax.barh(y, exch, left=net, color="tab:orange", label="exchange, estimated (median)")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("µs (medians of each part; they need not add up to the median latency)")
    ax.legend(fontsize="small")
    if "network_method" in df.columns:
        counts = df["network_method"].fillna("none").value_counts()
        ax.text(0.99, 0.02, "network estimate: " + ", ".join(
            f"{m} {int(counts[m]):,}" for m in counts.index),
            transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="#555")
    _title(ax, "Where the time goes", left_out)


def histogram(df: pd.DataFrame, by: str | None = "venue", bins: int = 60) -> Figure:
    """Figure: latency histogram per group on a log axis."""
    fig = _figure()
    draw_histogram(fig.add_subplot(), df, by, bins)
    return fig


def cdf(df: pd.DataFrame, by: str | None = "venue") -> Figure:
    """Figure: latency CDF per group."""
    fig = _figure()
    draw_cdf(fig.add_subplot(), df, by)
    return fig


def timeline(df: pd.DataFrame, by: str | None = "venue",
             window: str | pd.Timedelta | int | None = None) -> Figure:
    """Figure: latency over time with a rolling p99 per group."""
    fig = _figure(size=(9, 4.5))
    draw_timeline(fig.add_subplot(), df, by, window)
    return fig


def breakdown(df: pd.DataFrame, by: str | None = "venue") -> Figure:
    """Figure: network round trip vs exchange time per group."""
    fig = _figure(size=(8, 0.6 * max(3, df[by].nunique() if by in df else 1) + 1.5))
    draw_breakdown(fig.add_subplot(), df, by)
    return fig


def summary(df: pd.DataFrame, by: str | None = "venue", title: str | None = None) -> Figure:
    """Figure: histogram and CDF side by side above the timeline (the report's plot)."""
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2)
    draw_histogram(fig.add_subplot(grid[0, 0]), df, by)
    draw_cdf(fig.add_subplot(grid[0, 1]), df, by)
    draw_timeline(fig.add_subplot(grid[1, :]), df, by)
    if title:
        fig.suptitle(title, fontsize="large", x=0.01, ha="left")
    return fig


SEVERITY_COLORS = {"info": "#4c72b0", "warning": "#dd8452", "critical": "#c44e52"}


def draw_alert_timeline(ax: Axes, alerts: pd.DataFrame,
                        latency: pd.DataFrame | None = None) -> None:
    """One lane per alert kind: each alert a bar over its window (a tick when the window
    is a point), coloured by severity; with ``latency``, its orders in grey above, so an
    alert lines up with what the orders felt."""
    if alerts.empty:
        _empty(ax, "alerts")
        return
    kinds = sorted(alerts.kind.unique())
    lane = {k: i for i, k in enumerate(kinds)}
    t0 = alerts.start_ts.min()
    if latency is not None and len(latency):
        t0 = min(t0, latency.order_ts.min())
    for sev, rows in alerts.groupby("severity"):
        color = SEVERITY_COLORS.get(str(sev), "grey")
        start = (rows.start_ts - t0).dt.total_seconds().to_numpy()
        width = (rows.end_ts - rows.start_ts).dt.total_seconds().to_numpy()
        y = rows.kind.map(lane).to_numpy()
        ax.barh(y, np.maximum(width, 0), left=start, height=0.6, color=color, label=str(sev))
        ax.scatter(start, y, marker="|", s=200, color=color)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_ylim(-0.7, len(kinds) - 0.3 + (1.2 if latency is not None and len(latency) else 0))
    if latency is not None and len(latency):
        x = (latency.order_ts - t0).dt.total_seconds().to_numpy()
        lat = latency.latency_ns.astype("float64").to_numpy()
        top = len(kinds) - 0.2 + lat / max(np.nanmax(lat), 1.0)
        ax.scatter(x, top, s=4, color="grey", alpha=0.5, label="orders (height: latency)")
    ax.set_xlabel(f"seconds since {t0.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    ax.legend(loc="upper left", fontsize="small", ncols=4)
    ax.set_title("Alert timeline", loc="left")


def alert_timeline(alerts: pd.DataFrame, latency: pd.DataFrame | None = None) -> Figure:
    """Figure: ``draw_alert_timeline``."""
    kinds = alerts.kind.nunique() if len(alerts) else 1
    fig = _figure(size=(9, 1.2 + 0.55 * (kinds + 2)))
    draw_alert_timeline(fig.add_subplot(), alerts, latency)
    return fig
