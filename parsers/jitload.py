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

Three more fixed costs of a process's first kernel are cut the same way (session 12):

- *Numba's runtime from a cache of its own.* Initialising NRT compiles its ~20 small
  LLVM functions (refcounts, allocation) in every process, ~17 ms of CPU. The first
  process now saves that library as Numba saves a kernel (object code and the bitcode
  fresh kernels link against) to ``nrt-<key>.nbc`` in the cache directory Numba would
  use for this file; the next ones load it (~4 ms). The key hashes Numba's and
  llvmlite's versions, the target (triple, CPU, features) and the runtime's LLVM IR
  itself; the file carries a SHA-256 of its payload: any mismatch, or any failure, and
  the runtime is compiled as Numba does.
- *No extension entry points for a cache hit.* Before a dispatcher's first call Numba
  loads every installed ``numba_extensions`` entry point, which scans the metadata of
  every installed distribution (~6 ms). For pcapflow's own kernels this now happens
  only when a kernel is compiled (a cache miss), before the compile; a cached kernel
  types plain NumPy arrays and scalars, which no extension changes. Other dispatchers
  in the process (a user's) keep Numba's hook.
- *No LLVM-lock events while a kernel loads.* Every llvmlite call (~230 per kernel)
  takes a lock whose callbacks broadcast Numba's ``numba:llvm_lock`` events, which
  only time compiles; a cache load now takes that lock once for the whole load with
  the callbacks off (other threads' LLVM calls wait as they would for each call).

And one more cut in session 19:

- *A kernel's dispatcher made at its first use* (``kernel``, the decorator every
  pcapflow kernel uses in place of ``numba.njit``). Making a dispatcher with
  ``cache=True`` inspects the function's signature and sets up its cache (the cache
  directory made and tested with a temporary file): ~0.3 ms of CPU each, for the 56
  kernels in the modules a plain-TCP ingest imports, which calls 7 of them. A kernel
  that another one calls or inlines is made when Numba types the caller (a compile:
  on a cache hit the caller's machine code already holds it), through
  ``_numba_type_`` and the attributes ``Kernel`` hands on to its dispatcher.

And in session 22, *no Numba at all for a small plain-TCP ingest*: the seven kernels it
calls are also compiled ahead of time at install (``parsers.aot``), and ``Kernel`` calls
that build while the arguments have the types it was compiled for. For that no module a
plain-TCP ingest imports may import Numba: ``install`` runs when a first dispatcher is
made (no longer at import), intrinsics are made when Numba first types a kernel using
them (``LazyIntrinsic``, ``intrinsic``), and a module whose kernels name ``numba`` gets
Numba itself then (``NUMBA``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

__all__ = ["Kernel", "LazyIntrinsic", "install", "installed", "kernel"]

F = TypeVar("F", bound=Callable[..., Any])

_INSTALLED = False
RUNTIME = ""
"""How this process got Numba's runtime library: "" (not yet, or Numba's own way),
"cache" (read from ``nrt-<key>.nbc``) or "compiled" (and saved there)."""


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
        cres = None
        with _quiet_llvm_lock():
            rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                cres = self._load_overload(sig, target_context)
            # (None: not cached, or the guard swallowed an I/O error: compile instead)
        if cres is None:  # a compile follows: with the extensions, as Numba would
            _init_entry_points()
            _first_compile()
        return cres

    cache.load_overload = load_overload
    _lazy_environments()
    _cached_runtime()
    _defer_entry_points()
    _INSTALLED = True
    return True


_ON_COMPILE: list[tuple[int, Callable[[], None]]] = []
"""(pid, callback) of ``on_first_compile``: called before this process's first compile."""


def on_first_compile(callback: Callable[[], None]) -> None:
    """Have ``callback`` called once, in this process only (not in workers it forks),
    before the first kernel it must compile instead of loading it from Numba's cache:
    the first run after installing, or after a kernel's source changed. The command
    line says then why a first run pauses (about a minute of CPU for TLS, HTTP,
    WebSocket and FIX: README, "Speed")."""
    _ON_COMPILE.append((os.getpid(), callback))


def _first_compile() -> None:
    pid = os.getpid()
    calls = [c for p, c in _ON_COMPILE if p == pid]
    _ON_COMPILE.clear()
    for c in calls:
        with contextlib.suppress(Exception):  # (a notice: never a reason to fail)
            c()


OWN = "pcapflow."
"""Modules whose dispatchers load extension entry points only to compile."""


def _init_entry_points() -> None:
    with contextlib.suppress(ImportError, AttributeError):
        from numba.core import entrypoints

        entrypoints.init_all()


def _defer_entry_points() -> None:
    """pcapflow's dispatchers skip ``entrypoints.init_all`` until a cache miss (module
    docstring); every other dispatcher keeps Numba's hook."""
    try:
        from numba.core.dispatcher import Dispatcher
    except ImportError:
        return
    hook = getattr(Dispatcher, "_compilation_chain_init_hook", None)
    if hook is None or getattr(hook, "_pcapflow", False):
        return

    def _compilation_chain_init_hook(self: Any) -> None:
        if not getattr(self.py_func, "__module__", "").startswith(OWN):
            hook(self)

    _compilation_chain_init_hook._pcapflow = True  # type: ignore[attr-defined]
    Dispatcher._compilation_chain_init_hook = _compilation_chain_init_hook  # type: ignore


@contextlib.contextmanager
def _quiet_llvm_lock() -> Iterator[None]:
    """llvmlite's lock held once, its callbacks (Numba's timing events) off, for the
    duration (module docstring). Anything unexpected: left as it is."""
    try:
        import llvmlite.binding.ffi as ffi
        from numba.core.compiler_lock import global_compiler_lock

        lock = ffi.lib._lock
        inner, callbacks = lock._lock, lock._cblist
    except (ImportError, AttributeError):
        yield
        return
    # Numba's order: its compiler lock (a compile holds it already), then llvmlite's
    with global_compiler_lock, inner:
        lock._cblist = []
        try:
            yield
        finally:
            lock._cblist = callbacks


def _nrt_cache_anchor() -> None:
    """Names this file to Numba's cache locators (``_runtime_cache_dir``)."""


def _runtime_cache_dir() -> str | None:
    """Where Numba would cache a kernel of this file (``NUMBA_CACHE_DIR``, else the
    ``__pycache__`` beside it, else the user-wide directory); None: nowhere writable."""
    try:
        from numba.core import caching

        kinds = (
            caching.UserProvidedCacheLocator,
            caching.InTreeCacheLocator,
            caching.UserWideCacheLocator,
        )
    except (ImportError, AttributeError):
        return None
    for kind in kinds:
        with contextlib.suppress(Exception):
            loc = kind.from_function(_nrt_cache_anchor, __file__)
            if loc is not None:
                return str(loc.get_cache_path())
    return None


def _cached_runtime() -> None:
    """``nrtdynmod.compile_nrt_functions`` through a cache file (module docstring)."""
    try:
        import llvmlite
        import numba
        from numba.core.runtime import nrtdynmod
    except ImportError:
        return
    compile_nrt = getattr(nrtdynmod, "compile_nrt_functions", None)
    create = getattr(nrtdynmod, "create_nrt_module", None)
    if compile_nrt is None or create is None or getattr(compile_nrt, "_pcapflow", False):
        return

    def compile_nrt_functions(ctx: Any) -> Any:
        try:
            ir_mod, library = create(ctx)
            codegen = ctx.codegen()
            key = hashlib.sha256(
                repr(
                    (numba.__version__, llvmlite.__version__, codegen.magic_tuple(), str(ir_mod))
                ).encode()
            ).hexdigest()
            where = _runtime_cache_dir()
        except Exception:  # anything unexpected: Numba's own way
            return compile_nrt(ctx)
        path = os.path.join(where, f"nrt-{key[:24]}.nbc") if where else None
        global RUNTIME
        state = _read_runtime(path, key) if path else None
        if state is not None:
            with contextlib.suppress(Exception):
                lib = codegen.unserialize_library(state)
                RUNTIME = "cache"
                return lib
        try:
            library.enable_object_caching()
            library.add_ir_module(ir_mod)
            library.finalize()
        except Exception:
            return compile_nrt(ctx)
        if path:
            _write_runtime(path, key, library)
        RUNTIME = "compiled"
        return library

    compile_nrt_functions._pcapflow = True  # type: ignore[attr-defined]
    nrtdynmod.compile_nrt_functions = compile_nrt_functions


def _read_runtime(path: str, key: str) -> Any:
    """The serialised runtime library saved under ``key``, or None."""
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError:
        return None
    head, digest, payload = blob[:64], blob[64:96], blob[96:]
    if head != key.encode() or hashlib.sha256(payload).digest() != digest:
        return None
    try:
        state = pickle.loads(payload)
    except Exception:
        return None
    ok = (
        isinstance(state, tuple)
        and len(state) == 3
        and state[1] == "object"
        and isinstance(state[2], tuple)
        and len(state[2]) == 2
        and all(isinstance(b, bytes) for b in state[2])
    )
    return state if ok else None


def _write_runtime(path: str, key: str, library: Any) -> None:
    """Save ``library`` (compiled with object caching) under ``key``; atomic: another
    process reads the old file or the whole new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        payload = pickle.dumps(library.serialize_using_object_code(), protocol=4)
        with open(tmp, "wb") as fh:
            fh.write(key.encode() + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
    except Exception:  # not saved: the next process compiles it again
        with contextlib.suppress(OSError):
            os.unlink(tmp)


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


class _Numba:
    def __getattr__(self, name: str) -> Any:
        import numba

        return getattr(numba, name)

    def __repr__(self) -> str:
        return "<numba, imported when a kernel of this module is first made>"


NUMBA: Any = _Numba()
"""``numba = jitload.NUMBA`` in a module whose kernels name ``numba`` (for
``numba.literal_unroll``, which Numba recognises by identity): the module then imports
no Numba, and its ``numba`` is bound to Numba itself when its first kernel's dispatcher
is made, before Numba reads the kernel's globals."""

_MAKING = threading.Lock()
_OWN = frozenset({"py_func", "options", "_dispatcher", "_aot"})


def _fresh_lock_in_child() -> None:
    """A forked child (``--jobs``' pool, ``--workers``' shards) starts with a free lock:
    a thread of the parent may have been making a dispatcher at the fork."""
    global _MAKING
    _MAKING = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


def kernel(**options: Any) -> Callable[[F], F]:
    """``numba.njit(**options)``, the dispatcher made at the kernel's first use
    (module docstring): a ``Kernel`` standing in for it until then."""

    def wrap(fn: F) -> F:
        return cast(F, Kernel(fn, options))

    return wrap


class Kernel:
    """A Numba kernel whose dispatcher is made when it is first called, or first asked
    for anything a dispatcher has (Numba typing a caller asks for ``_numba_type_``,
    inlining asks for ``targetoptions``). Once made, the defining module's name is
    bound to the dispatcher itself, so calls from there no longer pass through here."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = fn
        self.options = options
        self._dispatcher: Any = None
        self._aot: Any = None  # None: not looked up yet; False: no compiled export
        functools.update_wrapper(self, fn)

    @property
    def dispatcher(self) -> Any:
        """The Numba dispatcher (made now if it is not yet)."""
        d = self._dispatcher
        return d if d is not None else self._make()

    def _make(self) -> Any:
        with _MAKING:
            if self._dispatcher is None:
                import numba

                install()
                module = sys.modules.get(self.py_func.__module__)
                if module is not None and module.__dict__.get("numba") is NUMBA:
                    setattr(module, "numba", numba)  # (``NUMBA``)  # noqa: B010
                d = numba.njit(**self.options)(self.py_func)
                self._dispatcher = d
                name = self.py_func.__name__
                if module is not None and module.__dict__.get(name) is self:
                    setattr(module, name, d)
            return self._dispatcher

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        d = self._dispatcher
        if d is not None:
            return d(*args, **kwargs)
        # Before any dispatcher: the kernel compiled at install, when these arguments
        # have the types it was compiled for (``parsers.aot``)
        aot = self._aot
        if aot is None:
            from . import aot as _aot

            aot = self._aot = _aot.lookup(self.py_func) or False
        if aot and not kwargs and aot.accepts(args):
            return aot.fn(*args)
        return self._make()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # (only names this object lacks; none of Python's own protocol names, nor its
        # own before ``__init__`` set them)
        if (name.startswith("__") and name.endswith("__")) or name in _OWN:
            raise AttributeError(name)
        return getattr(self.dispatcher, name)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return _kernel_named, (self.py_func.__module__, self.py_func.__qualname__)

    def __repr__(self) -> str:
        return f"<kernel {self.py_func.__module__}.{self.py_func.__qualname__}>"


def _kernel_named(module: str, qualname: str) -> Any:
    """A kernel by its module and name (unpickling a ``Kernel``)."""
    import importlib

    return getattr(importlib.import_module(module), qualname)


class LazyIntrinsic:
    """A Numba intrinsic (or any value Numba types in a kernel's globals, such as one of
    Numba's own intrinsics) made when Numba first types a kernel that uses it, not when
    its module is imported: a module of kernels then imports no Numba, and an ingest
    whose kernels all come from the build made at install (``parsers.aot``) never
    loads it. Numba asks a global it types for ``_numba_type_`` (as it does of
    ``Kernel``); that makes the value and gives its type. Called from Python (a kernel
    run as plain Python), it calls ``python``, when given."""

    def __init__(self, make: Callable[[], Any], python: Callable[..., Any] | None = None,
                 name: str = "") -> None:
        self._make_value = make
        self._python = python
        self._value: Any = None
        self._name = name or getattr(make, "__name__", "intrinsic")

    @property
    def value(self) -> Any:
        """The Numba value (made now, with Numba imported, if it is not yet)."""
        if self._value is None:
            with _MAKING:
                if self._value is None:
                    self._value = self._make_value()
        return self._value

    @property
    def _numba_type_(self) -> Any:
        from numba.core.registry import cpu_target

        value = self.value
        ctx = cpu_target.typing_context
        ctx.refresh()  # (an intrinsic made just now registers its typing then)
        return ctx.resolve_value_type(value)

    def __call__(self, *args: Any) -> Any:
        if self._python is None:
            raise NotImplementedError(f"{self._name} is usable in compiled kernels only")
        return self._python(*args)

    def __repr__(self) -> str:
        return f"<lazy intrinsic {self._name}>"


def intrinsic(defn: Callable[..., Any], python: Callable[..., Any] | None = None) -> Any:
    """``numba.extending.intrinsic(defn)``, made at its first use in a compile
    (``LazyIntrinsic``); ``defn`` imports what it needs of Numba and llvmlite itself."""

    def make() -> Any:
        from numba.extending import intrinsic as numba_intrinsic

        return numba_intrinsic(defn)

    return LazyIntrinsic(make, python, defn.__name__.lstrip("_"))
