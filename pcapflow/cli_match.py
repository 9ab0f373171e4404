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
from rich.table import Table

from .dataset import data_dir
from .parsers.errors import PcapflowError
from .pipelines.match import rematch
from .venues import registry


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
    results = rematch(root, registry(venues, root))
    table = Table(title=f"matched in {root}", title_justify="left")
    for col in ("capture", "orders", "matched", "unmatched", "venues"):
        table.add_column(col, justify="left" if col in ("capture", "venues") else "right")
    for cid, res in results.items():
        lat = res.tables["latency"]
        acked = sum(1 for leg in lat.column("leg").to_pylist() if leg == "ack")
        names = sorted(set(res.flow_venue.values()))
        table.add_row(cid, f"{res.tables['orders'].num_rows:,}", f"{acked:,}",
                      f"{res.tables['unmatched'].num_rows:,}", ", ".join(names))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``match`` to the ``pcapflow`` command."""
    app.command("match")(match)
