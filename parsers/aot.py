"""The kernels of a small plain-TCP ingest, compiled ahead of time at install (issue 20).

Why: a ~1 MB capture's ingest spent ~0.35 s of its ~0.8 s of CPU on Numba alone:
``import numba`` (~0.2 s: its typing and lowering registries, ``importlib.metadata``...)
and loading the ~7 cached kernels it calls (~0.14 s: the library rebuilt from the cached
bitcode, MCJIT, the environments). Those seven kernels are compiled once more, at
``pip install``, by Numba's ahead-of-time compiler (``numba.pycc``) into the extension
module ``pcapflow.parsers._kernels_aot``: the same Python source through the same
Numba front end, for a generic CPU of the platform, with Numba's runtime (NRT) and
helpers linked in. Importing it needs NumPy only; ``numba`` and ``llvmlite`` are
never imported by a small plain-TCP ingest.

How a call is routed (``jitload.Kernel.__call__``): a kernel listed in ``EXPORTS``
whose Numba dispatcher has not been made yet is called through the extension when
every argument has exactly the type the export was compiled for (``Export.accepts``:
an ndarray's dtype, dimensions, C-contiguity, alignment and writability, an integer's
range); anything else makes the Numba dispatcher as before (a compile or a cache load),
and from then on the kernel's module calls the dispatcher. The check matters: a
``pycc`` function unboxes its arguments without checking them (a wrong dtype is a
crash, not a ``TypeError``).

The extension is used only if it was built from the kernels' current sources: it
exports ``build_key``, a hash of ``SOURCES`` at build time, compared with the same hash
of the files beside this one at the first lookup (a kernel edited after an editable
install is then compiled by Numba, as before: re-run ``pip install -e .``, or
``python parsers/aot_build.py``, to rebuild). No extension (no C compiler at install,
a Numba without ``pycc``, a failed build), a stale one, or ``PCAPFLOW_AOT=0`` in the
environment: every kernel goes through Numba, with the same tables
(``tests/parsers/test_aot.py`` pins that both give the same outputs).

The build: ``setup.py``'s ``build_ext`` runs ``parsers/aot_build.py`` in a child
process; its failure is a warning, never a failed install.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPORTS", "MODULE", "SOURCES", "Export", "available", "lookup", "source_key"]

MODULE = "pcapflow.parsers._kernels_aot"
"""The extension module the build writes (beside this file)."""

EXPORTS: dict[tuple[str, str], tuple[str, str]] = {
    # (module under pcapflow.parsers, function): (arguments, Numba's return type)
    ("capture.pcap", "scan_pcap_records"): (
        "u1[::1], i8, i8, b1, i8, i8, i8, i8, i8[::1], i8[::1], i8[::1], i8[::1], i4[::1], "
        "i8[::1]",
        "UniTuple(i8, 5)",
    ),
    ("decode", "_decode_kernel"): (
        "u1[::1], i8[::1], i8[::1], i8[::1], i8[::1], u1[::1], u1[::1], u1[::1], u8[::1], "
        "u8[::1], u8[::1], u8[::1], i4[::1], i4[::1], i4[::1], i2[::1], i4[::1], i8[::1], "
        "i8[::1], i4[::1], i4[::1], i2[::1], b1[::1], i1[::1], i8[::1], i8[::1], i8[::1], "
        "i8[::1], i8[::1], i8[::1]",
        "none",
    ),
    ("tcp.analysis", "_kernel"): (
        "i8, u1[::1], u1[::1], u8[::1], u8[::1], u8[::1], u8[::1], i4[::1], i4[::1], "
        "i4[::1], u1[::1], i4[::1], i8[::1], i8[::1], i4[::1], i2[::1], i8[::1], i8[::1], "
        "i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[:, ::1], i8[:, ::1], "
        "i8[:, ::1], i8[::1], i8[::1], i8[::1], i1[::1], i8[::1], i4[::1], i8[::1], "
        "i8[::1], i8[::1], i1[::1], i8[::1], i8[::1], i8[::1]",
        "i8",
    ),
    ("tcp.analysis", "_release"): (
        "i8[::1], i8[::1], i8[::1], i8[:, ::1], i8[::1], i8[::1]",
        "none",
    ),
    ("tcp.segments", "bounded_prefix"): (
        "i1[::1], i8[::1], i8[::1], i8[::1], i4[::1], i8, i8, i8, u1[::1], i8[::1], i8, "
        "i8, b1[::1]",
        "i8",
    ),
    ("tcp.segments", "gather"): ("u1[::1], i8[::1], i8[::1]", "u1[::1]"),
    ("tcp.segments", "rtt_walk"): (
        "i1[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[:, ::1], i8[:, ::1], "
        "i8, i8, i8",
        "Tuple((i8[:, ::1], i8[:, ::1], i8[:, ::1], i8, i8))",
    ),
}
"""The kernels a plain-TCP ingest calls (a 1 MB capture: these seven, 718 calls), each
with the one signature its callers use: the arguments (Numba's notation: ``i8`` an
int64, ``u1[::1]`` a C-contiguous 1-d uint8 array, ``i8[:, ::1]`` a 2-d one; every
array writable) and the return type."""

SOURCES = (
    "capture/_scan.py",
    "capture/chunk.py",
    "capture/clock.py",
    "capture/pcap.py",
    "decode.py",
    "errors.py",
    "events.py",
    "prefetch.py",
    "tcp/analysis.py",
    "tcp/segments.py",
)
"""Every file under ``parsers/`` the build imports to compile ``EXPORTS``
(``aot_build.py`` checks the list): what ``build_key`` hashes."""

_DTYPES = {
    "b1": np.dtype(np.bool_),
    "i1": np.dtype(np.int8),
    "u1": np.dtype(np.uint8),
    "i2": np.dtype(np.int16),
    "i4": np.dtype(np.int32),
    "i8": np.dtype(np.int64),
    "u8": np.dtype(np.uint64),
}
_C_WRITABLE_ALIGNED = 0x1 | 0x100 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | _ALIGNED | _WRITEABLE
_I64 = (-(2**63), 2**63)


def export_name(module: str, name: str) -> str:
    """The symbol a kernel is exported under (``tcp.analysis``, ``_kernel``:
    ``tcp_analysis___kernel``)."""
    return f"{module.replace('.', '_')}__{name}"


def source_key(root: Path | None = None) -> int:
    """A 63-bit hash of ``SOURCES`` under ``root`` (default: this package's directory);
    -1 when a file cannot be read."""
    base = root if root is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for rel in SOURCES:
        try:
            data = (base / rel).read_bytes()
        except OSError:
            return -1
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return int.from_bytes(h.digest()[:8], "little") >> 1


def _parse_args(spec: str) -> list[tuple[str, np.dtype, int]]:
    """``"i8, u1[::1], i8[:, ::1]"``: [("int", int64, 0), ("array", uint8, 1), ...]."""
    out: list[tuple[str, np.dtype, int]] = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(spec):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    for part in (p.strip() for p in parts):
        code, _, dims = part.partition("[")
        dtype = _DTYPES[code]
        if dims:
            out.append(("array", dtype, dims.count(",") + 1))
        else:
            out.append(("bool" if code == "b1" else "int", dtype, 0))
    return out


class Export:
    """A kernel of the extension with the argument check of its one signature."""

    __slots__ = ("_kinds", "fn", "name")

    def __init__(self, fn: Callable[..., Any], args: str, name: str) -> None:
        self.fn = fn
        self.name = name
        self._kinds = tuple(_parse_args(args))

    def accepts(self, args: tuple[Any, ...]) -> bool:
        """Has every argument exactly the Numba type of the compiled signature (what
        Numba's ``typeof`` would give it)?"""
        kinds = self._kinds
        if len(args) != len(kinds):
            return False
        for a, (kind, dtype, ndim) in zip(args, kinds, strict=True):
            if kind == "array":
                if not (
                    isinstance(a, np.ndarray)
                    and a.ndim == ndim
                    and a.dtype == dtype
                    and a.flags.num & _C_WRITABLE_ALIGNED == _C_WRITABLE_ALIGNED
                ):
                    return False
            elif kind == "int":
                t = type(a)
                if t is int:
                    if not _I64[0] <= a < _I64[1]:
                        return False
                elif t is not np.int64:
                    return False
            elif type(a) is not bool and type(a) is not np.bool_:
                return False
        return True


_LOCK = threading.Lock()
_TABLE: dict[tuple[str, str], Export] | None = None


def _fresh_lock_in_child() -> None:
    """A forked child (``--jobs``, ``--workers``) starts with a free lock (a thread of the
    parent may have been loading the table at the fork)."""
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)
STATE = ""
"""Why the extension is or is not used in this process, after the first lookup: "used",
"off" (``PCAPFLOW_AOT=0``), "absent" (not built), "stale" (built from other sources)."""


def _load() -> dict[tuple[str, str], Export]:
    global STATE
    if os.environ.get("PCAPFLOW_AOT", "1") == "0":
        STATE = "off"
        return {}
    try:
        import importlib

        mod = importlib.import_module(MODULE)
    except ImportError:
        STATE = "absent"
        return {}
    key = getattr(mod, "build_key", None)
    try:
        built = key() if key is not None else None
    except Exception:
        built = None
    if built is None or built != source_key():
        STATE = "stale"
        return {}
    table = {}
    for (module, name), (args, _ret) in EXPORTS.items():
        fn = getattr(mod, export_name(module, name), None)
        if fn is not None:
            table[(module, name)] = Export(fn, args, name)
    STATE = "used"
    return table


def table() -> dict[tuple[str, str], Export]:
    """The extension's kernels by (module under ``pcapflow.parsers``, name); empty when
    it is not used (``STATE`` says why)."""
    global _TABLE
    t = _TABLE
    if t is None:
        with _LOCK:
            if _TABLE is None:
                _TABLE = _load()
            t = _TABLE
    return t


def lookup(py_func: Callable[..., Any]) -> Export | None:
    """The compiled export of a kernel's Python function, or None."""
    module = getattr(py_func, "__module__", "") or ""
    prefix = "pcapflow.parsers."
    if not module.startswith(prefix):
        return None
    return table().get((module[len(prefix):], py_func.__qualname__))


def available() -> bool:
    """Is the extension built, current, and used in this process?"""
    return bool(table())
