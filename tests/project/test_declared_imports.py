"""Every third-party module the repository imports is declared in pyproject.toml.

A package installed by hand on one machine makes the suite pass there and fail on a
fresh one (issue 13: ``simplefix`` was imported by the tests and declared nowhere).
This reads every ``.py`` file and every notebook's code cells, keeps the top-level
names of all imports (wherever they stand, inside functions and ``try`` blocks too),
drops the standard library and the repository's own modules, and requires each
remaining module's distribution to be declared *directly*: a module that only arrives
as a dependency of a dependency can vanish with that dependency's next release.

Where: code that ships (``pcapflow/``, ``parsers/``, ``pipelines/``) may import only
what ``[project].dependencies`` brings, and what a feature extra (every extra but
``dev``, e.g. ``verify`` for ``pcapflow verify``) brings: such a feature says which extra
to install when its import fails; tests, the sample generator, benchmarks and notebooks
may also use the ``dev`` extra (and ``setup.py`` what ``[build-system].requires`` brings).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from helpers.paths import REPO

SHIPPED = ("pcapflow", "parsers", "pipelines")
SKIP_DIRS = {".git", ".ci", "build", "dist", ".venv", "venv", "node_modules", "__pycache__"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;(]", req.strip(), maxsplit=1)[0])


def _declared() -> tuple[set[str], set[str]]:
    toml = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = toml["project"]
    core = {_requirement_name(r) for r in project.get("dependencies", [])}
    # (what ``pip install`` builds with: ``setup.py`` runs there)
    build = {_requirement_name(r) for r in toml.get("build-system", {}).get("requires", [])}
    optional = project.get("optional-dependencies", {})
    extras = {_requirement_name(r) for reqs in optional.values() for r in reqs}
    features = {_requirement_name(r) for name, reqs in optional.items() if name != "dev"
                for r in reqs}
    return core | features, core | extras | build


def _imports(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources() -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for path in sorted(REPO.rglob("*.py")):
        if not set(path.relative_to(REPO).parts) & SKIP_DIRS:
            out.append((path, path.read_text(errors="replace")))
    for path in sorted(REPO.rglob("*.ipynb")):
        if set(path.relative_to(REPO).parts) & SKIP_DIRS:
            continue
        for cell in json.loads(path.read_text()).get("cells", []):
            if cell.get("cell_type") == "code":
                lines = "".join(cell.get("source", [])).splitlines()
                code = "\n".join(x for x in lines if not x.lstrip().startswith(("%", "!")))
                out.append((path, code))
    return out


def _local_names() -> set[str]:
    names = {p.name for p in REPO.iterdir() if p.is_dir()}
    for path in REPO.rglob("*.py"):
        if not set(path.relative_to(REPO).parts) & SKIP_DIRS:
            names.add(path.stem)
            if path.name == "__init__.py":
                names.add(path.parent.name)
    return names


EXTRA_MODULES = {"_duckdb": "duckdb"}
"""Top-level modules a distribution ships beside its package without listing them in
its metadata (``packages_distributions`` misses them): DuckDB >= 2's engine module."""


def undeclared(sources: list[tuple[Path, str]] | None = None) -> list[str]:
    core, everything = _declared()
    local = _local_names()
    dists = metadata.packages_distributions()
    problems: list[str] = []
    seen: set[tuple[str, bool]] = set()
    for path, source in _sources() if sources is None else sources:
        rel = path.relative_to(REPO)
        shipped = rel.parts[0] in SHIPPED
        allowed = core if shipped else everything
        for module in sorted(_imports(source)):
            if (module in sys.stdlib_module_names or module == "__future__" or module in local
                    or (module, shipped) in seen):
                continue
            seen.add((module, shipped))
            # a module is declared by its own name too (typer 0.12 ships it as typer-slim)
            names = {_norm(d) for d in dists.get(module, [])} | {_norm(module)}
            if module in EXTRA_MODULES:
                names.add(_norm(EXTRA_MODULES[module]))
            if names & allowed:
                continue
            where = "[project].dependencies" if shipped else "pyproject.toml"
            problems.append(f"{module} (imported in {rel}; distribution "
                            f"{' or '.join(sorted(names))}) is not declared in {where}")
    return problems


def test_every_imported_module_is_declared() -> None:
    assert undeclared() == []


def test_the_check_finds_undeclared_imports() -> None:
    """The check itself works: a made-up module anywhere, and a dev-only module in
    shipped code, are reported; the same dev-only module in a test is not."""
    probes = [(REPO / "tests" / "probe.py", "import surely_not_a_declared_module_xyz\n"),
              (REPO / "parsers" / "probe.py", "def f():\n    import pytest\n"),
              (REPO / "tests" / "probe2.py", "import pytest\n")]
    found = undeclared(probes)
    assert [p.split(" ")[0] for p in found] == ["surely_not_a_declared_module_xyz", "pytest"]
    assert "parsers/probe.py" in found[1] and "[project].dependencies" in found[1]
