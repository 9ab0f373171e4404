"""The documentation that is generated from code stays current."""

from __future__ import annotations

import subprocess
import sys

from helpers.paths import REPO


def test_table_reference_is_current() -> None:
    out = subprocess.run([sys.executable, "-m", "pcapflow.pipelines.tables.schemas"], check=True,
                         capture_output=True, text=True).stdout
    assert (REPO / "docs" / "tables.md").read_text() == out, (
        "regenerate: python -m pcapflow.pipelines.tables.schemas > docs/tables.md")


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    cmd = "python3 -m pip install -q -e '.[dev]' && python3 -bb -m pytest -q"
    assert cmd in readme and cmd in ci
