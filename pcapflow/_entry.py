"""The ``pcapflow`` console script: Ctrl-C or SIGTERM prints one line, even while starting up.

Kept tiny on purpose: the signal handlers (``pipelines.interrupts.install_cli``) are
in place before the CLI module (typer, rich, NumPy...) is imported, so an interrupt
during those imports also ends with exit 130 and one line. When the command is done,
the process leaves with ``os._exit`` once its output is flushed: the interpreter's own
shutdown (joining DuckDB's and Arrow's thread pools, restoring the default signal
handlers) would only add time, and a window in which SIGTERM kills it silently.
"""

from __future__ import annotations

INTERRUPTED = "interrupted: the dataset is as it was before this command"
CONSOLE = False
"""This process is the console script (not a test or a notebook importing the CLI)."""


def main() -> None:
    import contextlib
    import gc
    import os
    import sys

    global CONSOLE
    CONSOLE = True
    # No cyclic collection while the command's libraries are imported: the CLI turns the
    # collector back on once they are in (``cli._startup_done``)
    gc.disable()
    from .pipelines import interrupts

    interrupts.install_cli(INTERRUPTED)
    code: object = 0
    try:
        from .cli import main as cli_main

        cli_main()
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe: nothing more can be said there
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)
