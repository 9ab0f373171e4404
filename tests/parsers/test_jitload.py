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
print(json.dumps({"installed": jitload.installed(),
                  "registries": "numba.np.polynomial.polynomial_core" in sys.modules,
                  "arrayobj": "numba.np.arrayobj" in sys.modules}))
"""


def _ingest(mode: str, data: Path) -> dict[str, bool]:
    """(``arrayobj``: was ``numba.np.arrayobj`` imported, which the kernels' environments
    name but, holding no constants, no longer need: ``jitload._lazy_environments``)"""
    caps = [str(SAMPLES / f"{n}.pcap") for n in NAMES]
    keys = [str(k) for n in NAMES for k in SAMPLES.glob(f"{n}.keylog")]
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, json.dumps(
        {"caps": caps, "keys": keys, "data": str(data)})], capture_output=True, text=True,
        check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lighter_cache_loads_write_the_same_tables(tmp_path: Path) -> None:
    _ingest("light", tmp_path / "warm")  # fill the kernel cache for this source
    light = _ingest("light", tmp_path / "light")
    full = _ingest("refresh", tmp_path / "full")
    # the set-up was skipped, and no module imported for an empty environment
    assert light == {"installed": True, "registries": False, "arrayobj": False}
    assert full == {"installed": False, "registries": True, "arrayobj": True}
    want, got = read_tables(tmp_path / "full"), read_tables(tmp_path / "light")
    assert want["ws_messages"].num_rows and want["fix_messages"].num_rows
    assert want["latency"].num_rows and want["http_messages"].num_rows
    assert_same_tables(want, got)


_KERNEL = '''
import numba
import numpy as np


@numba.njit(cache=True)
def doubled(n):
    out = np.empty(n, np.int64)  # inlines numba.np.arrayobj: an environment without constants
    for i in range(n):
        out[i] = 2 * i
    return out
'''

_USE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import pcapflow.parsers.jitload as jitload
assert jitload.install()
import jitload_probe
got = jitload_probe.doubled(5).tolist()
print(json.dumps({"got": got, "hits": sum(jitload_probe.doubled.stats.cache_hits.values()),
                  "arrayobj": "numba.np.arrayobj" in sys.modules}))
"""


def test_a_kernel_compiled_with_the_lighter_load_is_cached_and_loads(tmp_path: Path) -> None:
    """With ``install`` in place, a kernel compiled (a cache miss: the first run after
    installing) is saved to Numba's cache, and the next process loads it from there
    without importing the module its empty environments name."""
    import os

    (tmp_path / "jitload_probe.py").write_text(_KERNEL)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", _USE, str(tmp_path)], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["got"] == second["got"] == [0, 2, 4, 6, 8]
    assert first["hits"] == 0 and second["hits"] == 1  # compiled and saved, then loaded
    assert second["arrayobj"] is False
