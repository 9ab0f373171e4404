"""``pcapflow match``: re-run order/ack matching over an existing dataset.

Useful after editing a venue map: no capture is read again. Each capture's
``flows.venue``, ``orders``, ``acks``, ``latency`` and ``unmatched`` are
replaced atomically (``pipelines.match.rematch_capture``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import render
from .dataset import data_dir
from .parsers.errors import PcapflowError
from .pipelines.match import rematch
from .venues import registry

out = Console()
console = Console(stderr=True, soft_wrap=True)


def match(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    venues: Annotated[Path | None, typer.Option(
        "--venues", help="TOML venue map: addresses/ports/hosts/FIX comp ids -> venue")] = None,
) -> None:
    """Match orders to acks again over an ingested dataset (e.g. with a new venue map)."""
    root = data_dir(data)
    if not (root / "captures").is_dir():
        raise PcapflowError(f"{root}: no dataset here (run pcapflow ingest first)")
    if venues is not None and not venues.exists():
        raise PcapflowError(f"{venues}: venue map file not found")
    from .why import rederive

    results = rematch(root, registry(venues, root), rederive(root))
    rows = []
    names: dict[str, str] = {}
    from .dataset import Dataset

    with Dataset(root) as ds:  # captures by file name, as everywhere else
        names = dict(ds.fetchall("SELECT capture_id, arg_min(regexp_extract(path, '[^/]*$'), "
                                 "file_index) FROM captures GROUP BY ALL"))
    for cid, res in results.items():
        lat = res.tables["latency"]
        acked = sum(1 for leg in lat.column("leg").to_pylist() if leg == "ack")
        rows.append([names.get(cid, cid), f"{res.tables['orders'].num_rows:,}", f"{acked:,}",
                     f"{res.tables['unmatched'].num_rows:,}",
                     ", ".join(sorted(set(res.flow_venue.values())))])
    render.show(["capture", "orders", "matched", "unmatched", "venues"], rows, [1, 2, 3],
                out=out, err=console, title=f"matched in {root}")


def compact(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Dataset directory (default $PCAPFLOW_DATA or ./pcapflow_data)")] = None,
    capture: Annotated[list[str] | None, typer.Option(
        "--capture", help="Only this capture id (repeatable; default: every capture)")] = None,
) -> None:
    """Merge each capture's final Parquet parts into few (a watched or resumed set has
    one per file per table): the same rows, faster queries (``pipelines.compact``)."""
    import time

    from .pipelines import compact as comp

    root = data_dir(data)
    if not (root / "captures").is_dir():
        raise PcapflowError(f"{root}: no dataset here (run pcapflow ingest first)")
    ids = list(capture) if capture else comp.captures(root)
    rows = []
    t0 = time.perf_counter()
    for cid in ids:
        before = comp.partition_counts(root, cid)
        changes = comp.compact(root, [cid], full=True)
        after = comp.partition_counts(root, cid)
        if changes:
            rows.append([cid, f"{sum(before.values()):,}", f"{sum(after.values()):,}",
                         f"{max(after.values(), default=0):,}"])
        elif comp.STATS.pop("skipped_busy", 0):
            console.print(f"capture {cid}: another process is ingesting into the dataset; "
                          "left as it is (run pcapflow compact again later)", highlight=False)
        elif comp.STATS.pop("skipped_schema", 0):
            console.print(f"capture {cid}: parts written by another pcapflow version; left "
                          "as it is (re-ingest it to compact it)", highlight=False)
    if not rows:
        console.print(f"{root}: nothing to merge", highlight=False)
        return
    render.show(["capture", "parts before", "parts after", "most in a table"], rows, [1, 2, 3],
                out=out, err=console,
                title=f"compacted in {root} ({time.perf_counter() - t0:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add ``match`` and ``compact`` to the ``pcapflow`` command."""
    app.command("match")(match)
    app.command("compact")(compact)
