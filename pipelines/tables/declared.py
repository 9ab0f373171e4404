"""Every table's columns as DuckDB types, for readers that need no Arrow schema.

How this works: ``schemas.TABLES`` is the truth, but building it imports every
protocol's parser (Numba, NumPy, pyarrow: ~0.5 s), which a read-only command
(``pcapflow query``) never otherwise needs. ``declared()`` returns, for each table
in ``TABLES`` order, its ``(column, DuckDB type)`` pairs: the types DuckDB gives
the empty Arrow table of that schema (``DESCRIBE``), so a table created from them
with ``CREATE TABLE`` has exactly the columns a registered Arrow table would. The
result is cached in a JSON file in this package's ``__pycache__`` (where Python
keeps its bytecode), named by a fingerprint of the package's source files (every
``.py``: path, size, mtime; a few ms of ``stat`` calls) and DuckDB's engine; any
edit or upgrade makes a new name, so a stale file is never read. When the directory
is not writable the schemas are built each time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
_memo: dict[str, list[tuple[str, str]]] | None = None


def _source_dirs() -> list[Path]:
    """The package's source directories (installed: one tree; editable: three)."""
    import pcapflow

    from ... import parsers, pipelines

    dirs = {Path(str(m.__file__)).resolve().parent for m in (pcapflow, parsers, pipelines)}
    return sorted(d for d in dirs if not any(p in d.parents for p in dirs))


def _engine_id() -> str:
    """DuckDB's engine: version, and path, size and mtime of its extension module (a
    reinstall changes them), without importing DuckDB's Python layer (~50 ms)."""
    try:
        import _duckdb as engine  # DuckDB >= 2
    except ImportError:  # pragma: no cover
        import duckdb as engine  # type: ignore[no-redef]
    st = os.stat(str(engine.__file__))
    return f"{engine.__version__}:{engine.__file__}:{st.st_size}:{st.st_mtime_ns}"


def fingerprint() -> str:
    """A hash of the package's sources (path, size, mtime) and DuckDB's engine."""
    h = hashlib.sha256(_engine_id().encode())
    for root in _source_dirs():
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, name))
                    h.update(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def build() -> dict[str, list[tuple[str, str]]]:
    """From ``schemas.TABLES``, through DuckDB (imports every parser)."""
    import duckdb
    import pyarrow as pa

    from .schemas import TABLES

    con = duckdb.connect()
    out: dict[str, list[tuple[str, str]]] = {}
    try:
        for table, schema in TABLES.items():
            con.register("_declared", pa.Table.from_pylist([], schema=schema))
            rows = con.execute("DESCRIBE SELECT * FROM _declared").fetchall()
            con.unregister("_declared")
            out[table] = [(str(r[0]), str(r[1])) for r in rows]
    finally:
        con.close()
    return out


def declared() -> dict[str, list[tuple[str, str]]]:
    """Each table's ``(column, DuckDB type)`` pairs, in ``TABLES`` order (cached)."""
    global _memo
    if _memo is not None:
        return _memo
    path = HERE / "__pycache__" / f"declared-{fingerprint()}.json"
    try:
        doc = json.loads(path.read_text())
        _memo = {t: [(c, ty) for c, ty in cols] for t, cols in doc.items()}
        return _memo
    except (OSError, ValueError, TypeError):
        pass
    _memo = build()
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_memo))
        os.replace(tmp, path)
    return _memo


def create_sql(name: str, columns: list[tuple[str, str]]) -> str:
    """``CREATE OR REPLACE TABLE name (...)`` with these columns."""
    cols = ", ".join('"' + c.replace('"', '""') + '" ' + ty for c, ty in columns)
    return f"CREATE OR REPLACE TABLE {name} ({cols})"
