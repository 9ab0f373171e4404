"""A self-contained HTML latency report: one file, no network, no scripts.

How this works: the report's percentile table, the captures it covers and the
unanswered orders become HTML tables; the figures from ``plots`` are rendered
to PNG in memory and embedded as ``data:image/png;base64`` URIs, so the file
can be mailed or attached to a ticket as is. Every value is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from . import __version__, analysis, plots, why_report
from . import report as report_mod
from .report import QUANTILE_NOTE, STAT_COLUMNS, Report, format_us, key_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dataset import Dataset

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9em; }
img { max-width: 100%; border: 1px solid #eee; }
"""


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """A figure rendered to PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _esc(v: object) -> str:
    return html.escape(str(v))


def percentile_table(report: Report) -> str:
    """The percentile table as an HTML <table>."""
    head = "".join(f"<th>{_esc(k)}</th>" for k in report.keys)
    head += "".join(f"<th>{_esc(h if c in ('count', 'unmatched') else h + ' µs')}</th>"
                    for c, h in STAT_COLUMNS)
    body = []
    for r in report.frame.to_dict(orient="records"):
        cells = "".join(f"<td>{_esc(key_text(r[k], k))}</td>" for k in report.keys)
        for c, _ in STAT_COLUMNS:
            v = r[c]
            text = f"{int(v):,}" if c in ("count", "unmatched") else \
                format_us(None if pd.isna(v) else float(v))
            cells += f'<td class="num">{_esc(text)}</td>'
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _cell(v: object) -> str:
    if v is None or (not isinstance(v, list | tuple | dict) and pd.isna(v)):
        return ""
    return _esc(v)


def frame_table(df: pd.DataFrame, max_rows: int = 200) -> str:
    """Any DataFrame as an HTML table (first ``max_rows`` rows, values escaped)."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    rows = ["<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
            for row in df.head(max_rows).itertuples(index=False)]
    more = f'<p class="note">{len(df) - max_rows} more rows not shown</p>' \
        if len(df) > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def render(
    report: Report,
    figures: Mapping[str, Figure] | None = None,
    *,
    captures: pd.DataFrame | None = None,
    unanswered: pd.DataFrame | None = None,
    more_reports: Sequence[Report] = (),
    title: str = "pcapflow latency report",
    sections: Mapping[str, pd.DataFrame] | None = None,
    tail_sections: Mapping[str, pd.DataFrame] | None = None,
) -> str:
    """The HTML document for a report, its figures (caption -> Figure) and context tables."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="note">pcapflow {_esc(__version__)}; {_esc(QUANTILE_NOTE)}. Latency = '
        "reply's last byte available in order minus the order's last byte first sent, "
        "both as captured.</p>",
        f"<h2>{_esc(report.title())}</h2>",
        percentile_table(report),
    ]
    parts += [f'<p class="note">{_esc(n)}</p>' for n in report.notes]
    for extra in more_reports:
        parts += [f"<h2>{_esc(extra.title())}</h2>", percentile_table(extra)]
    for caption, fig in (figures or {}).items():
        parts += [f"<h2>{_esc(caption)}</h2>", _img(figure_png(fig), caption)]
    for caption, df in (sections or {}).items():
        if len(df):
            parts += [f"<h2>{_esc(caption)}</h2>", frame_table(df)]
    if unanswered is not None and len(unanswered):
        parts += ["<h2>Orders with no reply</h2>", frame_table(unanswered)]
    if captures is not None and len(captures):
        parts += ["<h2>Captures</h2>", frame_table(captures)]
    for caption, df in (tail_sections or {}).items():
        if len(df):
            parts += [f"<h2>{_esc(caption)}</h2>", frame_table(df)]
    parts.append("</body></html>")
    return "\n".join(parts)


def build(ds: Dataset, report: Report, *, title: str = "pcapflow latency report") -> str:
    """The full HTML report for ``report`` over ``ds``: its table, the same by endpoint,
    all four figures, the unanswered orders and the captures."""
    flt = report.filter()
    rows, label = report_mod.group_labels(analysis.latency_rows(ds, flt), report.by,
                                             report_mod.capture_names(ds))
    per = ", ".join(report.by)
    figures = {
        f"Latency histogram per {per}": plots.histogram(rows, by=label),
        f"Latency CDF per {per}": plots.cdf(rows, by=label),
        f"Latency over time per {per}": plots.timeline(rows, by=label),
        f"Where the time goes per {per}": plots.breakdown(rows, by=label),
    }
    captures = ds.df("SELECT capture_id, regexp_extract(path, '[^/]*$') AS file, format, "
                     "packets, first_ts, last_ts, flows FROM captures ORDER BY first_ts")
    unanswered = analysis.unmatched(ds, flt)[["venue", "capture_id", "flow_id", "endpoint",
                                               "kind", "correlation_id", "ts"]]
    more = []
    if "endpoint" not in report.by:  # the detail a reader asks for next
        more.append(report_mod.build(ds, by=[*report.by, "endpoint"], exchange=report.exchange,
                                     since=report.since, until=report.until, leg=report.leg,
                                     metric=report.metric, capture=report.capture))
    found = _alerts(ds, report)
    figures["Alert timeline (the alerts table; grey: orders, by latency)"] = \
        plots.alert_timeline(found, rows)
    causes = why_report.by_cause(ds, flt)
    if len(causes):
        causes = causes.assign(share_pct=causes.share_pct.round(1))
    return render(report, figures, captures=captures, unanswered=unanswered,
                  more_reports=more, title=title,
                  sections={"The slowest orders and why": slowest_and_why(ds, rows),
                            "Orders by cause of delay": causes},
                  tail_sections={"Alerts": found})


SLOWEST = 10
"""Orders listed in "The slowest orders and why"."""


def slowest_and_why(ds: Dataset, rows: pd.DataFrame, n: int = SLOWEST) -> pd.DataFrame:
    """The ``n`` slowest orders of ``rows``: latency split into network estimate
    (and its method) and exchange, and the stalls inside each (``pcapflow.causes``)."""
    from . import causes

    if rows.empty or "latency_ns" not in rows:
        return pd.DataFrame()
    top = rows.nlargest(n, "latency_ns")
    found = causes.causes(ds)
    out = []
    for r in top.itertuples():
        mine = found[(found.capture_id == r.capture_id) & (found.flow_id == r.flow_id)
                     & (found.correlation_id == r.correlation_id)
                     & (found.order_ts == r.order_ts) & (found.leg == r.leg)]
        why = "; ".join(f"{c.cause} ({format_us(c.cost_ns / 1e3)} µs): {c.detail}"
                        if pd.notna(c.cost_ns) else f"{c.cause}: {c.detail}"
                        for c in mine.itertuples()) or "no TCP stall seen"
        out.append({"venue": r.venue, "endpoint": r.endpoint, "order_ts": r.order_ts,
                    "latency µs": format_us(r.latency_ns / 1e3),
                    "network µs": "" if pd.isna(r.network_est_ns)
                    else f"{format_us(r.network_est_ns / 1e3)} ({r.network_method})",
                    "exchange µs": "" if pd.isna(r.exchange_ns)
                    else format_us(r.exchange_ns / 1e3),
                    "why": why})
    return pd.DataFrame(out)


def _alerts(ds: Dataset, report: Report) -> pd.DataFrame:
    """The ``alerts`` table (each capture's ingest found them) of the report's venues."""
    from . import alerts

    df = alerts.stored(ds, since=report.since, until=report.until)
    if report.exchange:
        df = df[df.venue.isin(report.exchange) | df.venue.isna()]
    return df[["start_ts", "end_ts", "severity", "kind", "venue", "endpoint", "flow_id",
               "stream", "detail", "evidence_rows"]]


def write(path: str | os.PathLike[str], ds: Dataset, report: Report, **kw: str) -> Path:
    """Write ``build(ds, report)`` to ``path`` (UTF-8) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build(ds, report, **kw), encoding="utf-8")
    return out
