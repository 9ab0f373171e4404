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

A cached kernel also brings the *environments* of the functions compiled into it
(``numba.core.environment``: a module's globals and the Python constants its code
reads at run time), and Numba rebuilds each by importing its module: for the array
allocation every kernel inlines, ``numba.np.arrayobj``, which imports Numba's
string and unicode implementations (~50 ms of CPU). An environment without
constants is never read by nopython code (its globals serve object mode only), so
``install`` also makes such an environment of a module not imported yet with its
module's name alone; one with constants, or of a module already imported, is
rebuilt as Numba does.
"""

from __future__ import annotations

import sys
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
    _lazy_environments()
    _INSTALLED = True
    return True


def _lazy_environments() -> None:
    """Rebuild a cached kernel's environments without importing modules that only an
    environment with no constants names (module docstring)."""
    try:
        from numba.core import environment
    except ImportError:
        return
    rebuild = getattr(environment, "_rebuild_env", None)
    lookup = getattr(environment, "lookup_environment", None)
    env_type = getattr(environment, "Environment", None)
    memo = getattr(env_type, "_memo", None)
    if rebuild is None or lookup is None or memo is None:
        return

    def _rebuild_env(modname: str, consts: Any, env_name: str) -> Any:
        if consts or modname in sys.modules:
            return rebuild(modname, consts, env_name)
        env = lookup(env_name)
        if env is None:
            env = env_type({"__name__": modname})  # type: ignore[misc]
            env.env_name = env_name
            memo[env_name] = env
        return env

    # Pickle names the function, by its module and qualified name, when Numba saves a
    # kernel (``Environment.__reduce__``) and finds it by that name when it loads one:
    # under Numba's own name, the cache files are the ones Numba writes itself.
    _rebuild_env.__module__ = rebuild.__module__
    _rebuild_env.__qualname__ = rebuild.__qualname__
    environment._rebuild_env = _rebuild_env
