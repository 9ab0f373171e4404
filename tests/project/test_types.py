"""mypy holds the whole ``pcapflow`` package (its own modules, ``pcapflow.parsers``
and ``pcapflow.pipelines``) to its annotations (``[tool.mypy]`` in pyproject.toml):
zero errors.

The source tree maps ``parsers/`` and ``pipelines/`` into the ``pcapflow``
package (setuptools ``package-dir``), which mypy cannot follow from an editable
install, so the test builds that layout from symlinks and checks it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("mypy") is None and not any(
    (Path(p) / "mypy").exists() for p in sys.path), reason="mypy not installed")
def test_the_package_type_checks(tmp_path: Path) -> None:
    pkg = tmp_path / "pcapflow"
    pkg.mkdir()
    for f in (REPO / "pcapflow").iterdir():
        (pkg / f.name).symlink_to(f)
    (pkg / "parsers").symlink_to(REPO / "parsers")
    (pkg / "pipelines").symlink_to(REPO / "pipelines")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"),
         "-p", "pcapflow"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
