"""The ``pcapflow`` console script: Ctrl-C or SIGTERM prints one line, even while starting up.

Kept tiny on purpose: the signal handlers (``pipelines.interrupts.install_cli``) are
in place before the CLI module (typer, rich, NumPy...) is imported, so an interrupt
during those imports also ends with exit 130 and one line.
"""

from __future__ import annotations

INTERRUPTED = "interrupted: the dataset is as it was before this command"


def main() -> None:
    from .pipelines import interrupts

    interrupts.install_cli(INTERRUPTED)
    from .cli import main as cli_main

    cli_main()
