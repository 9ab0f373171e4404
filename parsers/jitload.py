"""Loading cached Numba kernels without Numba's compiler set-up.

How this works. Every kernel is compiled once and kept in Numba's on-disk cache
(``cache=True``); a process then loads each one it calls from that cache. Before the
first such load Numba "refreshes" its CPU target: it imports and registers the
implementations of everything it can compile (NumPy's array functions, typed
containers, random generators, jitclass, datetime...), about a quarter of a second
of CPU in every process, although loading machine code from the cache needs none of
it: only the Numba runtime (NRT: the allocator behind arrays a kernel returns),
which ``install`` initialises itself. Compiling (a cache miss: the first run after
installing, or a new argument type) refreshes the target on its own
(``numba.core.compiler``), so nothing is lost when a kernel must be compiled after
all. The tables are the same either way (``tests/parsers/test_jitload.py``).

``install`` replaces ``numba.core.caching.Cache.load_overload`` once per process;
when Numba's internals are not what it expects, it leaves Numba alone (then each
process pays the refresh, as before).
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "installed"]

_INSTALLED = False


def installed() -> bool:
    """Is the lighter cache load in place in this process?"""
    return _INSTALLED


def install() -> bool:
    """Make cached kernel loads skip Numba's compiler set-up (module docstring)."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        from numba.core import caching
        from numba.core.runtime import rtsys
    except ImportError:
        return False
    cache = getattr(caching, "Cache", None)
    guard = getattr(cache, "_guard_against_spurious_io_errors", None)
    load = getattr(cache, "_load_overload", None)
    if cache is None or guard is None or load is None or not hasattr(rtsys, "initialize"):
        return False

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        """``Cache.load_overload`` without ``target_context.refresh()``: the runtime
        the loaded code allocates with is all it needs."""
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        return None  # the guard swallowed an I/O error: compile instead

    cache.load_overload = load_overload
    _INSTALLED = True
    return True
