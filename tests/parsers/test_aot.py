"""The kernels compiled at install (``parsers.aot``): the same outputs as Numba's, a
plain-TCP ingest without Numba, and only exactly typed arguments taken there.

The pinning test records every call a few sample ingests make to the exported kernels
(arguments copied before the call) and runs each again through the extension and
through the Numba dispatcher, on fresh copies: return values and every argument
array afterwards (the kernels write their outputs into them) must be equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import REPO, SAMPLES
from pcapflow.parsers import aot

NAMES = ["fix44_plain", "lossy_rest_tls13", "binance_rest_h2"]

_RECORD = r"""
import copy, json, sys
import numpy as np
from pcapflow.parsers import aot, jitload

calls = []
call = jitload.Kernel.__call__


def recording(self, *args, **kwargs):
    if aot.lookup(self.py_func) is not None:
        calls.append((self, copy.deepcopy(args)))
    return call(self, *args, **kwargs)


jitload.Kernel.__call__ = recording
import pcapflow

a = json.loads(sys.argv[1])
pcapflow.ingest(a["caps"], keylog=a["keys"], data=a["data"], workers=1)
numba_free = "numba" not in sys.modules
jitload.Kernel.__call__ = call


def same(x, y):
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
                and x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y))
    if isinstance(x, tuple) or isinstance(y, tuple):
        return (isinstance(x, tuple) and isinstance(y, tuple) and len(x) == len(y)
                and all(same(p, q) for p, q in zip(x, y)))
    return type(x) is type(y) and x == y


per = {}
for k, args in calls:
    export = aot.lookup(k.py_func)
    a1, a2 = copy.deepcopy(args), copy.deepcopy(args)
    assert export.accepts(a1)
    got = export.fn(*a1)
    want = k.dispatcher(*a2)
    row = per.setdefault(k.py_func.__qualname__, [0, True])
    row[0] += 1
    row[1] = row[1] and same(got, want) and all(same(p, q) for p, q in zip(a1, a2))
print(json.dumps({"state": aot.STATE, "numba_free": numba_free, "per": per}))
"""


def _child(code: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plain_tcp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmarks' synthetic trading host (``make_capture.py``), 2,500 packets of
    plain TCP: retransmissions, reordering, losses, payload no protocol claims (the
    application layer's bulk runs), as the 1 MB capture of ``startup.py``."""
    out = tmp_path_factory.mktemp("aot") / "plain.pcap"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_capture.py"),
                    "--packets", "2500", "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def test_the_extension_is_built_and_current() -> None:
    """The install built it from these sources (CI's fresh installs included): a
    failed build would leave every kernel to Numba, silently slower."""
    assert aot.available(), aot.STATE
    assert set(aot.table()) == set(aot.EXPORTS)


def test_compiled_kernels_give_numbas_outputs(tmp_path: Path, plain_tcp: Path) -> None:
    caps = [str(plain_tcp)] + [str(SAMPLES / f"{n}.pcap") for n in NAMES]
    keys = [str(k) for n in NAMES for k in SAMPLES.glob(f"{n}.keylog")]
    got = _child(_RECORD, [json.dumps({"caps": caps, "keys": keys,
                                       "data": str(tmp_path / "d")})])
    assert got["state"] == "used"
    per = got["per"]
    # every exported kernel was called (so compared), each time with equal outputs
    assert {name for _module, name in aot.EXPORTS} - set(per) == set(), per
    assert all(ok for _n, ok in per.values()), per


_PLAIN = r"""
import json, sys
import pcapflow
from pcapflow.parsers import aot
pcapflow.ingest([sys.argv[1]], data=sys.argv[2], workers=1)
print(json.dumps({"state": aot.STATE, "numba": "numba" in sys.modules,
                  "llvmlite": "llvmlite" in sys.modules}))
"""


def test_a_plain_tcp_ingest_imports_no_numba(tmp_path: Path, plain_tcp: Path) -> None:
    """The point of the extension: nothing a plain-TCP ingest imports or calls loads
    Numba (a module importing it at its top, or a kernel not in ``EXPORTS``, would);
    with ``PCAPFLOW_AOT=0`` Numba does the same work, and the tables are the same."""
    from helpers.path_compare import assert_same_tables, read_tables

    cap = str(plain_tcp)
    got = _child(_PLAIN, [cap, str(tmp_path / "aot")])
    assert got == {"state": "used", "numba": False, "llvmlite": False}
    env = {**os.environ, "PCAPFLOW_AOT": "0"}
    off = _child(_PLAIN, [cap, str(tmp_path / "jit")], env)
    assert off == {"state": "off", "numba": True, "llvmlite": True}
    want, have = read_tables(tmp_path / "jit"), read_tables(tmp_path / "aot")
    assert want["tcp_events"].num_rows and want["tcp_rtt"].num_rows
    assert_same_tables(want, have)


def test_only_exactly_typed_arguments_go_to_the_extension() -> None:
    """A ``pycc`` function does not check its arguments (a wrong dtype reads memory
    as another type): ``accepts`` must refuse anything Numba would type otherwise
    (``Kernel`` then hands the call to Numba)."""
    gather = aot.table()[("tcp.segments", "gather")]
    buf = np.arange(32, dtype=np.uint8)
    starts, lengths = np.array([1, 10], np.int64), np.array([3, 4], np.int64)
    assert gather.accepts((buf, starts, lengths))
    assert gather.fn(buf, starts, lengths).tolist() == [1, 2, 3, 10, 11, 12, 13]
    frozen = buf.copy()
    frozen.flags.writeable = False
    for args in [
        (buf, starts.astype(np.uint64), lengths),  # another dtype
        (buf, starts.astype(">i8"), lengths),  # another byte order
        (frozen, starts, lengths),  # read-only: another Numba type
        (np.arange(64, dtype=np.uint8)[::2], starts, lengths),  # not contiguous
        (buf.reshape(4, 8), starts, lengths),  # 2-d
        (list(buf), starts, lengths),
        (buf, starts),
    ]:
        assert not gather.accepts(args)
    prefix = aot.table()[("tcp.segments", "bounded_prefix")]
    i8 = np.zeros(4, np.int64)
    good = (np.zeros(4, np.int8), i8, i8, i8, np.zeros(4, np.int32), 0, 1, 2,
            np.zeros(4, np.uint8), i8, 3, np.int64(4), np.zeros(4, np.bool_))
    assert prefix.accepts(good)
    for scalar in (np.int32(1), True, 2**63, -(2**63) - 1, 1.0, None):
        assert not prefix.accepts((*good[:5], scalar, *good[6:]))
    scan = aot.table()[("capture.pcap", "scan_pcap_records")]
    assert scan._kinds[3][0] == "bool"


def test_the_build_key_follows_the_sources(tmp_path: Path) -> None:
    """An edit of a kernel's file after the build makes the extension stale (its
    kernels are then Numba's): the key hashes every source the build read."""
    root = Path(aot.__file__).resolve().parent
    for rel in aot.SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((root / rel).read_bytes())
    key = aot.source_key(tmp_path)
    assert key == aot.source_key() >= 0
    (tmp_path / "tcp/segments.py").write_text((root / "tcp/segments.py").read_text() + "\n")
    assert aot.source_key(tmp_path) != key
    (tmp_path / "decode.py").unlink()
    assert aot.source_key(tmp_path) == -1
