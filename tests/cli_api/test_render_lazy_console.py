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
