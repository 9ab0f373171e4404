"""``pcapflow report``: latency percentiles per venue/endpoint/..., plots and an HTML report.

Thin: options are parsed here, everything else is ``pcapflow.report``,
``pcapflow.plots`` and ``pcapflow.html_report`` (the same calls a notebook makes).
A bad ``--by``, ``--exchange`` or time is a usage error (exit 2) that names what
is accepted, e.g. the venues present in the dataset.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import analysis, render, report
from .dataset import Dataset, require
from .parsers.errors import ConfigError

console = Console(stderr=True, soft_wrap=True)
out = Console()

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
        "several; venue is always included)")] = "venue",
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
) -> None:
    """Order-to-ack latency per group: count, unmatched, mean, p50, p90, p99, p99.9, max (µs)."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(FORMATS)}", param_hint="--format")
    if leg not in LEGS:
        raise typer.BadParameter(f"use one of {', '.join(LEGS)}", param_hint="--leg")
    with contextlib.ExitStack() as stack:
        ds = whole = stack.enter_context(Dataset(require(data)))
        try:
            if since is not None or until is not None:
                # a time window reads only the captures that overlap it (pcapflow.scale)
                ds = stack.enter_context(ds.narrow(since, until))
            rep = report.build(ds, by=by, exchange=exchange, since=since, until=until,
                               leg=None if leg == "all" else leg, metric=metric,
                               capture=capture, whole=whole)
        except ConfigError as err:
            hint = OPTION_OF_ERROR.get(err.code, "--since/--until")
            raise typer.BadParameter(str(err), param_hint=hint) from err
        emit(rep, fmt)
        for path in write_outputs(ds, rep, plot, html):
            console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``pcapflow`` command."""
    app.command("report")(report_cmd)
