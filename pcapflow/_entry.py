"""The ``pcapflow`` console script: Ctrl-C prints one line, even while starting up.

Kept tiny on purpose: the CLI module (typer, rich) is imported inside the
``try``, so an interrupt during those imports is caught too.
"""

from __future__ import annotations

import sys

INTERRUPTED = "interrupted: the dataset is as it was before this command"


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED + "\n")
        sys.exit(130)
    cli_main()
