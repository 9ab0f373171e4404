"""``pcapflow demo``: the first five minutes, in one command.

Ingests the bundled sample captures (``pcapflow.samples``) with their TLS key
logs into a fresh dataset directory, prints the latency report per venue and
per endpoint, writes the summary plot and the HTML report, and says where
everything went and what to run next. ``run`` is the library function; the
command only prints. The dataset directory is wiped only when an earlier demo
created it (it carries a marker file); any other non-empty directory is refused.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import api, report, samples
from .cli_report import write_outputs
from .dataset import Dataset
from .parsers.errors import ConfigError
from .render import escape

console = Console(stderr=True)
out = Console()

DEFAULT_OUT = Path("pcapflow_demo")
VENUE_MAP = """\
# Venue map for the bundled samples (see `pcapflow ingest --venues`). The TLS samples
# name their venue through SNI / Host (built-in rules); the FIX samples talk to a mock
# acceptor, which only its FIX comp ids identify.
[[venue]]
name = "mockfix"
sender_comp_id = "PCFTRADER1"   # FIX 49 of our messages
target_comp_id = "MOCKEX"       # FIX 56 of our messages
matcher = "fix"
"""
MARKER = ".pcapflow-demo"
"""File an earlier demo left in its dataset directory: proof the directory may be wiped."""


@dataclass(slots=True, kw_only=True)
class DemoResult:
    """Where the demo put things and what it found."""

    data: Path
    venue_map: Path
    plot: Path
    html: Path
    by_venue: report.Report
    by_endpoint: report.Report
    captures: int


def fresh_data_dir(data: Path) -> None:
    """Make ``data`` an empty dataset directory (refusing to wipe anything not ours)."""
    if data.exists():
        if not data.is_dir():
            raise ConfigError(f"{data}: exists and is not a directory", code="bad_data_dir")
        if any(data.iterdir()) and not (data / MARKER).exists():
            raise ConfigError(f"{data}: not empty and not made by `pcapflow demo`; "
                              "pass another --data", code="data_dir_not_empty")
        shutil.rmtree(data)
    data.mkdir(parents=True)
    (data / MARKER).write_text("dataset written by `pcapflow demo`; safe to delete\n")


def run(data: Path | None = None, out_dir: Path = DEFAULT_OUT) -> DemoResult:
    """Ingest every bundled sample into ``data`` (default ``OUT/data``) and write the
    plot and HTML report into ``out_dir``."""
    data = data if data is not None else out_dir / "data"
    fresh_data_dir(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    venue_map = out_dir / "venues.toml"
    venue_map.write_text(VENUE_MAP)
    bundled = samples.samples()
    keylogs = [s.keylog for s in bundled if s.keylog is not None]
    with console.status(f"ingesting {len(bundled)} sample captures from "
                        f"{samples.sample_dir()} (the first run compiles kernels: about a "
                        "minute)"):
        api.ingest([s.capture for s in bundled], keylog=keylogs, data=data, venues=venue_map)
    with Dataset(data) as ds:
        by_venue = report.build(ds, by="venue")
        by_endpoint = report.build(ds, by="endpoint")
        plot, html = out_dir / "latency.png", out_dir / "report.html"
        write_outputs(ds, by_venue, plot, html)
    return DemoResult(data=data, venue_map=venue_map, plot=plot, html=html, by_venue=by_venue,
                      by_endpoint=by_endpoint, captures=len(bundled))


def demo_cmd(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory to create (default OUT/data); wiped if an "
        "earlier demo made it")] = None,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Where the plot and HTML report go")] = DEFAULT_OUT,
) -> None:
    """Ingest the bundled sample captures and print their latency report per venue."""
    res = run(data, out_dir)
    out.print(f"[bold]pcapflow demo[/bold]: {res.captures} sample captures ingested "
              f"into {escape(res.data)}\n", soft_wrap=True)
    # The demo shows people the tables as a terminal does, even piped (fitted to the
    # console's width: 80 columns when it cannot tell).
    for rep in (res.by_venue, res.by_endpoint):
        out.print(report.render_table(rep, width=out.width))
        for note in rep.notes:
            out.print(f"[dim]{escape(note)}[/dim]", highlight=False, soft_wrap=True)
        out.print()
    venue = res.by_venue.frame["venue"].dropna()
    lines = [
        f"plots:       {res.plot}",
        f"HTML report: {res.html}",
        f"dataset:     {res.data}",
        "",
        f"next: pcapflow report --data {res.data} --by endpoint,kind --exchange "
        f"{venue.iloc[0] if len(venue) else 'NAME'}",
        f"      pcapflow query --data {res.data} "
        "\"SELECT venue, count(*) FROM latency GROUP BY venue\"",
    ]
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``pcapflow`` command."""
    app.command("demo")(demo_cmd)
