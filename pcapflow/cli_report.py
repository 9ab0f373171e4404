"""``pcapflow report``: latency percentiles per venue/endpoint/..., plots and an HTML report.

Thin: options are parsed here, everything else is ``pcapflow.report``,
``pcapflow.plots`` and ``pcapflow.html_report`` (the same calls a notebook makes).
A bad ``--by``, ``--exchange`` or time is a usage error (exit 2) that names what
is accepted, e.g. the venues present in the dataset. The default report (a table or
JSON, no ``--html``, ``--by cause`` or ``--slowest``) runs without pandas
(``report.build(frame=False)``); rich loads only for a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import analysis, render, report
from .dataset import Dataset, require
from .parsers.errors import ConfigError
from .render import escape

if TYPE_CHECKING:
    import pandas as pd

console = render.LazyConsole(stderr=True, soft_wrap=True)
out = render.LazyConsole()

FORMATS = ("table", "json", "csv")
LEGS = ("ack", "engine", "all")
# Which option a ConfigError from the report is about (for the usage message).
OPTION_OF_ERROR = {"unknown_venue": "--exchange", "bad_group": "--by", "bad_metric": "--metric",
                   "unknown_capture": "--capture"}


def emit(rep: report.Report, fmt: str) -> None:
    """Print a report on stdout in ``fmt`` (table, json or csv); notes go to stderr."""
    if fmt == "json":
        sys.stdout.write(report.to_json(rep))
    elif fmt == "csv":
        sys.stdout.write(report.to_csv(rep))
    elif out.is_terminal:
        out.print(report.render_table(rep, width=out.width))
    else:  # piped: plain aligned text, the title and caption on stderr
        header, rows, right = report.cells(rep)
        render.show(header, rows, right, out=out, err=console, title=rep.title(),
                    notes=[report.caption(rep)])
    for note in rep.notes:
        render.note(console, note, "dim")


def write_outputs(ds: Dataset, rep: report.Report, plot: Path | None,
                  html: Path | None) -> list[Path]:
    """Write the summary figure (PNG) and/or the HTML report; return the paths written."""
    written = []
    if plot is not None:
        from . import plots  # matplotlib: only for a figure

        rows, label = report.group_labels(analysis.latency_rows(ds, rep.filter()), rep.by,
                                          report.capture_names(ds))
        fig = plots.summary(rows, by=label, title=rep.title())
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)
        written.append(plot)
    if html is not None:
        from . import html_report

        written.append(html_report.write(html, ds, rep))
    return written


def report_cmd(
    exchange: Annotated[str | None, typer.Option(
        "--exchange", "-e", help="Venue name(s), comma-separated (case-insensitive)")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    by: Annotated[str, typer.Option(
        "--by", help="Group by " + "|".join(analysis.GROUPS) + " (comma-separated for "
        "several; venue is always included), or cause: per venue, the orders each stall "
        "explains (the causes table)")] = "venue",
    since: Annotated[str | None, typer.Option(
        "--since", help="Orders at or after this time (ISO 8601; naive = UTC)")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Orders before this time (ISO 8601; naive = UTC)")] = None,
    leg: Annotated[str, typer.Option(
        "--leg", help="ack (reply), engine (first private-stream event) or all")] = "ack",
    metric: Annotated[str, typer.Option(
        "--metric", help="latency; network_rtt (own pure ACK, where known); network "
        "(round-trip estimate, every order); exchange (latency minus network)")]
        = "latency",
    capture: Annotated[str | None, typer.Option(
        "--capture", help="Only this capture (file name, path or capture_id prefix)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also write histogram, CDF and timeline to this PNG")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write a self-contained HTML report here")] = None,
    slowest: Annotated[int, typer.Option(
        "--slowest", help="Also list the N slowest orders and why (network estimate, "
        "exchange time, causes)", min=0)] = 0,
) -> None:
    """Order-to-ack latency per group: count, unmatched, mean, p50, p90, p99, p99.9, max (µs)."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    if leg not in LEGS:
        raise typer.BadParameter(f"use one of {', '.join(LEGS)}", param_hint="--leg")
    cause = [b.strip() for b in by.split(",")] in (["cause"], ["venue", "cause"],
                                                   ["cause", "venue"])
    # the table alone reads a few views (~1-2 ms each to make); the rest need them all
    views = None if cause or slowest or plot or html else report.TABLES
    with contextlib.ExitStack() as stack:
        ds = whole = stack.enter_context(Dataset(require(data), views=views))
        if cause:
            _why(ds, exchange, since, until, None if leg == "all" else leg, capture, fmt,
                 slowest)
            return
        try:
            if since is not None or until is not None:
                # a time window reads only the captures that overlap it (pcapflow.scale)
                ds = stack.enter_context(ds.narrow(since, until))
            rep = report.build(ds, by=by, exchange=exchange, since=since, until=until,
                               leg=None if leg == "all" else leg, metric=metric,
                               capture=capture, whole=whole, frame=html is not None)
        except ConfigError as err:
            hint = OPTION_OF_ERROR.get(err.code, "--since/--until")
            raise typer.BadParameter(str(err), param_hint=hint) from err
        emit(rep, fmt)
        if slowest:
            from . import why_report

            _emit_slowest(why_report.slowest(ds, rep.filter(), slowest), fmt)
        for path in write_outputs(ds, rep, plot, html):
            console.print(f"wrote {escape(path)}", highlight=False)


def _why(ds: Dataset, exchange: str | None, since: str | None, until: str | None,
         leg: str | None, capture: str | None, fmt: str, slowest: int) -> None:
    """``--by cause``: the causes table per venue (and ``--slowest``)."""
    from . import why_report

    try:
        flt = analysis.make_filter(ds, exchange=exchange, since=since, until=until, leg=leg,
                                   capture=capture)
    except ConfigError as err:
        hint = OPTION_OF_ERROR.get(err.code, "--since/--until")
        raise typer.BadParameter(str(err), param_hint=hint) from err
    df = why_report.by_cause(ds, flt)
    if fmt in ("json", "csv"):
        _write_frame(df, fmt)
    else:
        header, rows, right = why_report.cause_cells(df)
        unit, _ = why_report.cause_unit(df)
        render.show(header, rows, right, out=out, err=console,
                    title=f"Orders by cause of delay (the stalls inside each order's window; "
                          f"durations in {unit})",
                    notes=[why_report.CAUSE_NOTE], droppable=["cost p50"])
    if slowest:
        _emit_slowest(why_report.slowest(ds, flt, slowest), fmt)


def _emit_slowest(df: pd.DataFrame, fmt: str) -> None:
    from . import why_report

    if fmt in ("json", "csv"):
        _write_frame(df, fmt)
        return
    header, rows, right = why_report.slowest_cells(df)
    render.show(header, rows, right, out=out, err=console,
                title=f"The {len(df)} slowest orders and why", notes=[why_report.SLOWEST_NOTE],
                droppable=["how", "time (UTC)"])


def _write_frame(df: pd.DataFrame, fmt: str) -> None:
    """``df`` as JSON records or CSV on stdout: times ISO 8601, missing values null."""
    import json

    import pandas as pd

    recs = [{k: (v.isoformat() if isinstance(v, pd.Timestamp) else
                 None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else
                 v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in df.to_dict(orient="records")]
    if fmt == "json":
        sys.stdout.write(json.dumps(recs, indent=1, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(pd.DataFrame(recs, columns=list(df.columns)).to_csv(
            index=False, lineterminator="\n"))


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``pcapflow`` command."""
    app.command("report")(report_cmd)
