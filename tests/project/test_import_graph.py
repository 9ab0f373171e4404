"""Imports follow the data: capture -> decode -> TCP -> protocols -> tables -> match
-> CLI/API (STYLE.md rule 18). A module never imports from a stage downstream of
it, at load time (imports under ``TYPE_CHECKING`` are for annotations only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"parsers": "pcapflow.parsers", "pipelines": "pcapflow.pipelines"}

# What each stage may not import (prefixes of module names).
FORBIDDEN = {
    "pcapflow.parsers": ("pcapflow.pipelines", "pcapflow.api", "pcapflow.cli", "duckdb"),
    "pcapflow.pipelines.tables": ("pcapflow.pipelines.ingest", "pcapflow.pipelines.match",
                                  "duckdb"),
    "pcapflow.pipelines.ingest": ("pcapflow.pipelines.match", "duckdb"),
    "pcapflow.pipelines.prefilter": ("pcapflow.pipelines.match", "pcapflow.pipelines.ingest",
                                     "duckdb"),
}


def _module_name(path: Path) -> str:
    top, *rest = path.relative_to(REPO).with_suffix("").parts
    parts = [ROOTS[top], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _load_time_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it is loaded (module level, not TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                break  # a lazy import inside a function runs later, if ever
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom):
                if n.level:
                    base = package.split(".")
                    base = base[: len(base) - n.level + 1]
                    mod = ".".join([*base, n.module] if n.module else base)
                else:
                    mod = n.module or ""
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in n.names)
    return out


def test_no_import_against_the_data_flow() -> None:
    bad = []
    for top in ROOTS:
        for path in sorted((REPO / top).rglob("*.py")):
            name = _module_name(path)
            for stage, forbidden in FORBIDDEN.items():
                if name == stage or name.startswith(stage + "."):
                    bad += [f"{name} imports {m}" for m in _load_time_imports(path)
                            if m.startswith(forbidden)]
    assert not bad


def test_the_application_layer_loads_without_duckdb() -> None:
    code = ("import sys, pcapflow.pipelines.ingest, pcapflow.parsers.protocols.registry;"
            "print('duckdb' in sys.modules, 'pcapflow.pipelines.match' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_application_layer_names_no_protocol() -> None:
    """The application layer and the row converters reach protocols only through the
    registry (``parsers.protocols``): no load-time import of a protocol's package (its
    key log, its sessions)."""
    from pcapflow.parsers.protocols.registry import REGISTRY

    packages = tuple(f"pcapflow.parsers.{s.name}" for s in REGISTRY)
    assert "pcapflow.parsers.tls" in packages
    bad = [f"{path.name} imports {m}"
           for path in (REPO / "pipelines" / "ingest" / "app_layer.py",
                        REPO / "pipelines" / "tables" / "rows.py")
           for m in _load_time_imports(path)
           if m in packages or m.startswith(tuple(p + "." for p in packages))]
    assert not bad
