"""``pcapflow verify CAPTURE``: a sample of pcapflow's rows checked against Wireshark.

Thin: ``pcapflow.verify`` does the work (ingest into a temporary dataset, sample, tshark
through pyshark); this prints the agreement per table and each disagreement. Exit 0
when every sampled row Wireshark dissected agrees, 1 when one differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import render, verify
from .parsers.errors import PcapflowError
from .render import escape

console = Console(stderr=True, soft_wrap=True)
out = Console()


def verify_cmd(
    capture: Annotated[Path, typer.Argument(help="The capture to check (pcap/pcapng)")],
    keylog: Annotated[list[Path] | None, typer.Option(
        "--keylog", help="NSS key log file; repeatable")] = None,
    venues: Annotated[Path | None, typer.Option("--venues", help="Venue map (TOML)")] = None,
    sample: Annotated[int, typer.Option(
        "--sample", help="Rows checked per message table")] = verify.DEFAULT_SAMPLE,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the sample")] = 0,
) -> None:
    """Check a random sample of pcapflow's messages (HTTP, WebSocket, FIX, TLS records)
    against Wireshark's dissection of the same frames (tshark via pyshark)."""
    if not capture.is_file():
        raise PcapflowError(f"{capture}: no such capture file")
    if sample < 1:
        raise typer.BadParameter("at least 1", param_hint="--sample")
    checks = verify.verify(capture, keylog or [], sample=sample, seed=seed, venues=venues)
    rows = verify.summary(checks)
    if not rows:
        console.print(f"{escape(capture)}: no messages to check (no HTTP, WebSocket, FIX or TLS "
                      "rows)", highlight=False)
        return
    render.show(["table", "checked", "agree", "differ", "not dissected"], rows, [1, 2, 3, 4],
                out=out, err=console, title=f"{capture} against Wireshark (tshark)",
                notes=["agree: same fields in the same frame, same time to the ns; "
                       "not dissected: Wireshark shows no such message in that frame"])
    bad = [c for c in checks if c.outcome == "differs"]
    for c in bad[:20]:
        console.print(f"differs: {c.table} frame {c.frame}: pcapflow {c.ours}, Wireshark "
                      f"{c.theirs[:3]}{'' if c.time_ok else ' (time differs)'}",
                      highlight=False)
    if len(bad) > 20:
        console.print(f"... and {len(bad) - 20} more that differ", highlight=False)
    if bad:
        raise PcapflowError(f"{len(bad)} of {len(checks)} sampled rows differ from Wireshark")


def register(app: typer.Typer) -> None:
    """Add ``verify`` to the ``pcapflow`` command."""
    app.command("verify")(verify_cmd)
