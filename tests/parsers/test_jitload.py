"""Cached kernels loaded without Numba's compiler set-up (``parsers.jitload``): the
same tables as with it, and the set-up really skipped.

Each ingest runs in a process of its own (the set-up happens once per process):
one with Numba's own ``load_overload``, one with the lighter one, on samples whose
kernels cover every family (capture scan, decode, TCP analysis, runs, TLS records,
AEAD and inflate through libcrypto/zlib, WebSocket frames, HPACK, FIX, redaction,
the matcher's scan and the alerts' CUSUM).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.path_compare import assert_same_tables, read_tables
from helpers.paths import SAMPLES

NAMES = ["binance_wsapi_tls13", "binance_rest_h2", "fix44_plain", "okx_ws_tls12"]

_CHILD = r"""
import json, sys
import pcapflow.parsers.jitload as jitload
if sys.argv[1] == "refresh":
    jitload.install = lambda: False  # Numba's own load_overload, with its set-up
import pcapflow
a = json.loads(sys.argv[2])
pcapflow.ingest(a["caps"], keylog=a["keys"], data=a["data"])
from numba.core import entrypoints
print(json.dumps({"installed": jitload.installed(),
                  "registries": "numba.np.polynomial.polynomial_core" in sys.modules,
                  "arrayobj": "numba.np.arrayobj" in sys.modules,
                  "entry_points": entrypoints._already_initialized,
                  "runtime": jitload.RUNTIME}))
"""


def _ingest(mode: str, data: Path) -> dict[str, bool]:
    """(``arrayobj``: was ``numba.np.arrayobj`` imported, which the kernels' environments
    name but, holding no constants, no longer need: ``jitload._lazy_environments``)"""
    caps = [str(SAMPLES / f"{n}.pcap") for n in NAMES]
    keys = [str(k) for n in NAMES for k in SAMPLES.glob(f"{n}.keylog")]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            mode,
            json.dumps({"caps": caps, "keys": keys, "data": str(data)}),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])



def _child(code: str, args: list[str], env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter; its last line of output, as JSON."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])

def test_lighter_cache_loads_write_the_same_tables(tmp_path: Path) -> None:
    _ingest("light", tmp_path / "warm")  # fill the kernel cache for this source
    light = _ingest("light", tmp_path / "light")
    full = _ingest("refresh", tmp_path / "full")
    # the set-up was skipped, and no module imported for an empty environment
    # (and no extension entry points loaded for pcapflow's cached kernels; Numba's runtime
    # from jitload's cache file)
    assert light == {
        "installed": True,
        "registries": False,
        "arrayobj": False,
        "entry_points": False,
        "runtime": "cache",
    }
    assert full == {
        "installed": False,
        "registries": True,
        "arrayobj": True,
        "entry_points": True,
        "runtime": "",
    }
    want, got = read_tables(tmp_path / "full"), read_tables(tmp_path / "light")
    assert want["ws_messages"].num_rows and want["fix_messages"].num_rows
    assert want["latency"].num_rows and want["http_messages"].num_rows
    assert_same_tables(want, got)


_KERNEL = """
import numba
import numpy as np


@numba.njit(cache=True)
def doubled(n):
    out = np.empty(n, np.int64)  # inlines numba.np.arrayobj: an environment without constants
    for i in range(n):
        out[i] = 2 * i
    return out
"""

_USE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import pcapflow.parsers.jitload as jitload
assert jitload.install()
notices = []
jitload.on_first_compile(lambda: notices.append("compiling"))
import jitload_probe
got = jitload_probe.doubled(5).tolist()
print(json.dumps({"got": got, "hits": sum(jitload_probe.doubled.stats.cache_hits.values()),
                  "arrayobj": "numba.np.arrayobj" in sys.modules, "notices": notices}))
"""


def test_a_kernel_compiled_with_the_lighter_load_is_cached_and_loads(tmp_path: Path) -> None:
    """With ``install`` in place, a kernel compiled (a cache miss: the first run after
    installing) is saved to Numba's cache, and the next process loads it from there
    without importing the module its empty environments name."""
    import os

    (tmp_path / "jitload_probe.py").write_text(_KERNEL)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> dict:
        return _child(_USE, [str(tmp_path)], env)

    first, second = run(), run()
    assert first["got"] == second["got"] == [0, 2, 4, 6, 8]
    assert first["hits"] == 0 and second["hits"] == 1  # compiled and saved, then loaded
    assert second["arrayobj"] is False
    # the command line's notice (``on_first_compile``): before the compile only
    assert first["notices"] == ["compiling"] and second["notices"] == []


def test_the_first_compile_notice_is_said_once_and_only_by_its_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pcapflow.parsers import jitload

    from pcapflow import cli

    class Terminal:
        def __init__(self, is_terminal: bool) -> None:
            self.is_terminal, self.said = is_terminal, []

        def print(self, text: str, **_: object) -> None:
            self.said.append(text)

    monkeypatch.setattr(jitload, "_ON_COMPILE", [])
    piped = Terminal(False)
    monkeypatch.setattr(cli, "console", piped)
    cli.compiling_notice()
    assert jitload._ON_COMPILE == []  # piped: nothing to say
    term = Terminal(True)
    monkeypatch.setattr(cli, "console", term)
    cli.compiling_notice()
    jitload._ON_COMPILE.append((os.getpid() + 1, lambda: term.said.append("a forked worker")))
    jitload._first_compile()
    jitload._first_compile()  # (a second compile in the same command: said once)
    assert term.said == [f"[dim]{cli.COMPILING}[/dim]"]


_USE_RUNTIME = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import pcapflow.parsers.jitload as jitload
assert jitload.install()
import jitload_probe
from numba.core import entrypoints
fn = getattr(jitload_probe, sys.argv[2])
got = fn(5).tolist()
print(json.dumps({"got": got, "hits": sum(fn.stats.cache_hits.values()),
                  "runtime": jitload.RUNTIME, "entry_points": entrypoints._already_initialized}))
"""

_TRIPLED = """

@numba.njit(cache=True)
def tripled(n):
    out = np.zeros(n, np.int64)
    for i in range(n):
        out[i] = 3 * i
    return out
"""


def test_numbas_runtime_from_a_cache_file(tmp_path: Path) -> None:
    """Numba's runtime library (NRT) is compiled and saved by the first process, read
    from that file by the next ones, and a kernel compiled in a process whose runtime
    came from the file (a cache miss) gives the same results; a damaged file is
    ignored (compiled and written again). A dispatcher that is not pcapflow's still
    loads Numba's extension entry points before its first call."""
    import os

    (tmp_path / "jitload_probe.py").write_text(_KERNEL)
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}

    def run(name: str) -> dict:
        return _child(_USE_RUNTIME, [str(tmp_path), name], env)

    first = run("doubled")
    assert first == {"got": [0, 2, 4, 6, 8], "hits": 0, "runtime": "compiled", "entry_points": True}
    saved = list(cache.rglob("nrt-*.nbc"))
    assert len(saved) == 1
    assert run("doubled") == {
        "got": [0, 2, 4, 6, 8],
        "hits": 1,
        "runtime": "cache",
        "entry_points": True,
    }
    # a new kernel (the file changed: both compiled) linked against the runtime read back
    with (tmp_path / "jitload_probe.py").open("a") as fh:
        fh.write(_TRIPLED)
    assert run("tripled") == {
        "got": [0, 3, 6, 9, 12],
        "hits": 0,
        "runtime": "cache",
        "entry_points": True,
    }
    assert run("doubled")["got"] == [0, 2, 4, 6, 8]
    blob = bytearray(saved[0].read_bytes())
    blob[-10] ^= 0xFF  # damaged: its digest no longer matches
    saved[0].write_bytes(bytes(blob))
    assert run("tripled") == {
        "got": [0, 3, 6, 9, 12],
        "hits": 1,
        "runtime": "compiled",
        "entry_points": True,
    }
    assert run("tripled")["runtime"] == "cache"  # written again whole


_LAZY = """
import numpy as np

from pcapflow.parsers.jitload import kernel


@kernel(cache=True, inline="always")
def _step(x):
    return x + 1


@kernel(cache=True)
def _half(x):
    return x // 2


@kernel(cache=True)
def walk(a):
    out = np.empty(a.size, np.int64)
    for i in range(a.size):
        out[i] = _half(_step(a[i]))  # one inlined, one called
    return out


@kernel(cache=True)
def unused(n):
    return n
"""

_USE_LAZY = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import jitload_probe
from pcapflow.parsers.jitload import Kernel
kernels = {k: v for k, v in vars(jitload_probe).items() if isinstance(v, Kernel)}
got = jitload_probe.walk(np.arange(6, dtype=np.int64)).tolist()
print(json.dumps({"got": got, "before": sorted(kernels),
                  "hits": sum(jitload_probe.walk.stats.cache_hits.values()),
                  "walk": type(jitload_probe.walk).__name__,
                  "callees": [kernels["_step"]._dispatcher is not None,
                              kernels["_half"]._dispatcher is not None],
                  "unused": kernels["unused"]._dispatcher is not None}))
"""


def test_kernels_made_at_first_use(tmp_path: Path) -> None:
    """``jitload.kernel``: no dispatcher until a kernel is called; a compile types and
    inlines the kernels its kernel calls (``Kernel`` stands in for their dispatchers),
    the next process loads it from the cache without making theirs, and the module's
    name is bound to the dispatcher once made."""
    import os

    (tmp_path / "jitload_probe.py").write_text(_LAZY)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = _child(_USE_LAZY, [str(tmp_path)], env)
    second = _child(_USE_LAZY, [str(tmp_path)], env)
    want = [(i + 1) // 2 for i in range(6)]
    assert first["got"] == second["got"] == want
    assert first["before"] == second["before"] == ["_half", "_step", "unused", "walk"]
    assert first["walk"] == second["walk"] == "CPUDispatcher"
    assert (first["hits"], second["hits"]) == (0, 1)
    assert first["callees"] == [True, True]  # (the compile typed and inlined them)
    assert second["callees"] == [False, False]  # (their code is in walk's)
    assert first["unused"] is second["unused"] is False


def test_a_forked_child_makes_dispatchers_with_a_free_lock() -> None:
    """A thread making a dispatcher while the process forks (``--jobs``, ``--workers``)
    leaves the child a lock of its own, not one held forever."""
    import os

    from pcapflow.parsers import jitload

    with jitload._MAKING:
        pid = os.fork()
        if pid == 0:  # (the child: its lock must be free)
            os._exit(0 if jitload._MAKING.acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
