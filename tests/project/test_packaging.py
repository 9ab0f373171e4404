"""The wheel installs one import root, ``pcapflow``, with every subpackage and data file."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.paths import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # (without the kernels compiled ahead of time: ~15-25 s of CPU for a wheel whose layout
    # is what is checked here; tests/parsers/test_aot.py checks the install's extension)
    env = {**os.environ, "PCAPFLOW_AOT_BUILD": "0"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(REPO)], check=True, timeout=600, env=env)
    (whl,) = out.glob("pcapflow-*.whl")
    return zipfile.ZipFile(whl)


def test_single_import_root(wheel: zipfile.ZipFile) -> None:
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"pcapflow"}


def test_every_source_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    roots = {"pcapflow": "pcapflow", "parsers": "pcapflow/parsers",
             "pipelines": "pcapflow/pipelines"}
    for src, dst in roots.items():
        for init in (REPO / src).rglob("__init__.py"):
            rel = init.relative_to(REPO / src).as_posix()
            assert f"{dst}/{rel}" in names, f"{src}/{rel} is not packaged (pyproject packages)"
        for sql in (REPO / src).rglob("*.sql"):
            rel = sql.relative_to(REPO / src).as_posix()
            assert f"{dst}/{rel}" in names, f"{src}/{rel} is not packaged (package-data)"
    assert "pcapflow/py.typed" in names


def test_console_script(wheel: zipfile.ZipFile) -> None:
    eps = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    assert "pcapflow = pcapflow._entry:main" in wheel.read(eps).decode()


def test_no_stray_modules_in_the_tree() -> None:
    # parsers/ and pipelines/ must not be importable as top-level packages once installed
    import importlib.util

    for name in ("parsers", "pipelines"):
        spec = importlib.util.find_spec(name)
        assert spec is None or Path(spec.origin or "").resolve().is_relative_to(REPO), name
