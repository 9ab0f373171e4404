"""``pcapflow compare BEFORE AFTER``: did latency change between two datasets or captures?

Thin: each side is a dataset directory, or a capture file ingested for the comparison
into a temporary dataset (with the ``--keylog`` files given); the numbers are
``pcapflow.compare.compare`` (bootstrap intervals, a verdict per group).
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import compare, render
from .parsers.errors import ConfigError, PcapflowError
from .render import escape

console = Console(stderr=True, soft_wrap=True)
out = Console()


def _side(arg: Path, keylog: list[Path], venues: Path | None, stack: ExitStack) -> Path:
    """A dataset directory for one side: ``arg`` itself, or ``arg`` (a capture) ingested."""
    from .dataset import require

    if arg.is_dir():
        return require(arg)
    if not arg.exists():
        raise PcapflowError(f"{arg}: no such dataset directory or capture file")
    from . import api

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcapflow-compare-")))
    console.print(f"ingesting {escape(arg)} for the comparison", highlight=False)
    api.ingest([str(arg)], keylog=keylog, data=tmp / "data", venues=venues)
    return tmp / "data"


def compare_cmd(
    before: Annotated[Path, typer.Argument(help="Dataset directory or capture file (before)")],
    after: Annotated[Path, typer.Argument(help="Dataset directory or capture file (after)")],
    by: Annotated[str, typer.Option(
        "--by", help="Group by venue|endpoint|kind|status|leg|capture|flow, comma-separated "
        "(venue is always included)")] = "venue",
    exchange: Annotated[str | None, typer.Option(
        "--exchange", "-e", help="Venue name(s), comma-separated")] = None,
    keylog: Annotated[list[Path] | None, typer.Option(
        "--keylog", help="Key log for sides given as captures; repeatable")] = None,
    venues: Annotated[Path | None, typer.Option(
        "--venues", help="Venue map for sides given as captures")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv")] = "table",
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write the comparison as a self-contained HTML page")] = None,
    n_boot: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same CIs)")] = 0,
) -> None:
    """Before/after per group: p50/p90/p99, their changes with 95% bootstrap intervals,
    and a verdict (faster, slower, mixed, no evidence, too few)."""
    from .dataset import Dataset

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("use one of table, json, csv", param_hint="--format")
    if n_boot < 10:
        raise typer.BadParameter("at least 10", param_hint="--resamples")
    with ExitStack() as stack:
        a = stack.enter_context(Dataset(_side(before, keylog or [], venues, stack)))
        b = stack.enter_context(Dataset(_side(after, keylog or [], venues, stack)))
        try:
            table = compare.compare(a, b, by=by, exchange=exchange, n_boot=n_boot, seed=seed)
        except ConfigError as err:
            raise typer.BadParameter(str(err), param_hint="--by/--exchange") from err
    keys = [c for c in table.columns if c not in ("n_before", "n_after", "verdict")
            and not c.endswith("_us")]
    title = f"Latency before ({before}) and after ({after}), by {', '.join(keys)}"
    if fmt == "json":
        sys.stdout.write(compare.to_json(table))
    elif fmt == "csv":
        sys.stdout.write(compare.to_csv(table))
    else:
        header, rows, right = compare.cells(table, keys)
        render.show(header, rows, right, out=out, err=console, title=title, notes=[
            "n: orders before→after; Δ: after - before, [95% bootstrap interval]; a verdict "
            f"needs an interval that excludes 0 and {compare.MIN_SAMPLES}+ orders a side"],
            droppable=[h for p in compare.DROPPABLE for h in header if h.startswith(p)])
    if table.empty:
        console.print("no matched orders on either side: nothing to compare", highlight=False)
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(compare.to_html(table, keys, title), encoding="utf-8")
        console.print(f"wrote {escape(html)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the ``pcapflow`` command."""
    app.command("compare")(compare_cmd)
