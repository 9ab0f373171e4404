"""``render.LazyConsole``: rich's ``Console`` made on first use, answering
``is_terminal`` and ``file`` as rich would, without importing rich for a pipe."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from pcapflow.render import LazyConsole

CODE = """
import json, os, sys
from pcapflow.render import LazyConsole
out, err = LazyConsole(), LazyConsole(stderr=True)
print(json.dumps([out.is_terminal, out.file is sys.stdout, err.file is sys.stderr,
                  "rich" in sys.modules]))
"""


@pytest.mark.parametrize(("env", "terminal", "rich"), [
    ({}, False, False),                       # piped: plain, rich never imported
    ({"FORCE_COLOR": "1"}, True, True),       # rich's own rules decide
    ({"TTY_COMPATIBLE": "0"}, False, True),
])
def test_is_terminal_as_rich_says(env: dict[str, str], terminal: bool, rich: bool) -> None:
    import json
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         env={**base, **env}, timeout=60, check=True)
    assert json.loads(out.stdout) == [terminal, True, True, rich]


def test_forwards_to_the_real_console() -> None:
    buf = io.StringIO()
    c = LazyConsole(file=buf, force_terminal=False, width=40)
    assert c.file is buf and not c.is_terminal
    c.print("hello", highlight=False)
    assert buf.getvalue() == "hello\n"
    assert c.get() is c.get()


LINES = ["Order-to-ack latency by venue, endpoint — binance, okx", "", "  indented",
         "trailing  ", "coverage: orders from 21 of 23 connections with payload; 2 decoded",
         "µs/ms as headed; quantiles by linear interpolation (DuckDB quantile_cont)",
         "2026-11-23T20:30:00+00:00 to …", "http://example.com:8080/x", ":smile: :thumbs_up:",
         "a :x: b", "[dim]styled[/dim]", "[yellow]warning:[/yellow] w", "x \\[y] z", "a\tb",
         "two\nlines", "bell\x07", "x" * 300, " ".join(["word"] * 60), "日本語 ✓ café"]
PRINT = """
import json, sys
from pcapflow.render import LazyConsole
{make}
for line in json.loads(sys.argv[1]):
    con.print(line, highlight=False, soft_wrap=True)
con.print("after", soft_wrap=True)
print(json.dumps("rich" in sys.modules))
"""


@pytest.mark.parametrize("stderr", [True, False])
def test_plain_lines_without_rich_are_what_rich_prints(stderr: bool) -> None:
    """To a pipe, a line rich would print unchanged is written without importing rich;
    every line reads the same either way (markup, emoji codes, tabs, control characters
    and several lines go through rich)."""
    import json

    outs = []
    for make in (f"con = LazyConsole(stderr={stderr}, soft_wrap=True)",
                 f"from rich.console import Console; con = Console(stderr={stderr}, "
                 "soft_wrap=True)"):
        out = subprocess.run([sys.executable, "-c", PRINT.format(make=make),
                              json.dumps(LINES)], capture_output=True, timeout=60, check=True)
        outs.append(out)
    lazy, rich = outs
    assert (lazy.stderr, lazy.stdout.rsplit(b"\n", 2)[0]) == \
        (rich.stderr, rich.stdout.rsplit(b"\n", 2)[0])
    assert len((lazy.stderr if stderr else lazy.stdout).splitlines()) >= len(LINES)


def test_plain_line_stays_without_rich() -> None:
    code = ("import sys; from pcapflow.render import LazyConsole, note\n"
            "c = LazyConsole(stderr=True, soft_wrap=True)\n"
            "c.print('coverage: orders from 1 of 2', highlight=False, soft_wrap=True)\n"
            "note(c, 'a note', 'dim')\nprint('rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"
    assert out.stderr == "coverage: orders from 1 of 2\na note\n"
