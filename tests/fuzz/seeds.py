"""Seed inputs for the fuzz targets, taken from real captures.

How this works: capture seeds are the committed samples (``sample_pcaps/``), the
small third-party captures (``/work/shared/public-captures``, when present) and
compressed copies. Stream seeds are the TCP payload of those captures, extracted
by an independent dpkt reader (``tests/helpers/tcp_stream_util.py``), packed as fuzz
containers (``fuzzlib.pack``) with the key log as a metadata record. Plaintext
seeds (HTTP, WebSocket, FIX inside TLS) come from decrypting the samples with
their key logs. Building them takes a few seconds, so the result is cached in
the temp directory, keyed by the sources' sizes and times.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import sys
import tempfile
from functools import cache
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
REPO = TESTS.parent
SAMPLES = REPO / "sample_pcaps"
PUBLIC = Path(os.environ.get("PCAPFLOW_PUBLIC_CAPTURES", "/work/shared/public-captures"))
REGRESSIONS = TESTS / "regressions"

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from fuzzlib import TAG_IN, TAG_META, TAG_OUT, pack  # noqa: E402

SMALL_CAPTURE = 48 << 10  # public captures up to this size are capture seeds
STREAM_CAP = 96 << 10  # bytes of one connection kept in a stream seed
MAX_STREAM_SEEDS = 40  # per protocol


def sample_captures() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*.pcap*") if p.is_file())


def sample_keylog(capture: Path) -> Path | None:
    k = capture.with_suffix(".keylog")
    return k if k.exists() else None


def public_entries() -> list[dict]:
    """analysis.json rows of the third-party corpus ([] when it is absent)."""
    index = PUBLIC / "analysis.json"
    if not index.exists():
        return []
    return json.loads(index.read_text())


def _fingerprint() -> str:
    h = hashlib.sha256()
    srcs = [*sample_captures(), *(PUBLIC / e["path"] for e in public_entries()),
            HERE / "seeds.py"]
    for p in srcs:
        st = p.stat() if p.exists() else None
        h.update(f"{p}:{st and st.st_size}:{st and st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@cache
def all_seeds() -> dict[str, list[bytes]]:
    """Every target's seeds by name; cached on disk between runs."""
    cache_file = Path(tempfile.gettempdir()) / f"pcapflow-fuzz-seeds-{_fingerprint()}.pickle"
    if cache_file.exists():
        try:
            return pickle.loads(cache_file.read_bytes())
        except Exception:  # a half-written cache from a killed run: rebuild
            pass
    seeds = _build()
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(seeds))
    os.replace(tmp, cache_file)
    return seeds


def _build() -> dict[str, list[bytes]]:
    caps = [p.read_bytes() for p in sample_captures()]
    small_public = [
        (PUBLIC / e["path"]).read_bytes() for e in public_entries()
        if e["size"] <= SMALL_CAPTURE and (PUBLIC / e["path"]).exists()
    ]
    fix_plain = (SAMPLES / "fix44_plain.pcap").read_bytes()
    sll2 = (SAMPLES / "fix44_sll2.pcap").read_bytes()
    captures = [*caps, *small_public, gzip.compress(fix_plain, 1),
                zstandard.ZstdCompressor(level=1).compress(sll2)]
    tls, plain = _tls_and_plaintext()
    fix = _streams_of(SAMPLES / "fix44_plain.pcap") + _streams_of(SAMPLES / "fix44_sll2.pcap")
    for e in public_entries():
        if e["path"].startswith("fix/"):
            fix += _streams_of(PUBLIC / e["path"])
    http = [s for s in plain if s[1] == "http"]
    http += [(c, "http") for e in public_entries() if e["path"].startswith(("http/", "websocket/"))
             for c in _streams_of(PUBLIC / e["path"])]
    ws = [c for c, _ in http if b"101 Switching" in c or b"101 switching" in c]
    return {
        "capture": captures,
        "tls": tls[:MAX_STREAM_SEEDS],
        "http": [c for c, _ in http][:MAX_STREAM_SEEDS],
        "websocket": [_after_upgrade(c) for c in ws][:MAX_STREAM_SEEDS],
        "fix": fix[:MAX_STREAM_SEEDS],
        "keylog": [k.read_bytes() for k in SAMPLES.glob("*.keylog")]
        + [(PUBLIC / e["key"]).read_bytes()[:16384] for e in public_entries()
           if e.get("key") and (PUBLIC / e["key"]).is_file()][:20],
    }


def _pieces(path: Path) -> list[list[tuple[int, bytes]]]:
    from helpers.tcp_stream_util import read_tcp_streams

    out = []
    try:
        streams = read_tcp_streams(str(path))
    except Exception:  # dpkt cannot read a few of the odd public files: not a seed then
        return []
    for s in streams:
        recs, total = [], 0
        for d, data, _ts in s.pieces:
            if d not in ("out", "in") or not data:
                continue
            recs.append((TAG_OUT if d == "out" else TAG_IN, data))
            total += len(data)
            if total > STREAM_CAP:
                break
        if recs:
            out.append(recs)
    return out


def _streams_of(path: Path) -> list[bytes]:
    return [pack(r) for r in _pieces(path)]


def _tls_and_plaintext() -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """TLS stream seeds (with key log) and the decrypted plaintext of the samples."""
    from pcapflow.parsers.detect import detect
    from pcapflow.parsers.tls import KeyLog, TlsSession
    from pcapflow.parsers.tls.events import Plaintext

    tls: list[tuple[bool, bytes]] = []
    plain: list[tuple[bytes, str]] = []
    sources = [(p, sample_keylog(p)) for p in sample_captures()]
    sources += [(PUBLIC / e["path"], PUBLIC / e["key"]) for e in public_entries()
                if e["path"].startswith("tls/") and e.get("key") and e["size"] <= SMALL_CAPTURE
                and (PUBLIC / e["key"]).is_file()]
    for cap, key in sources:
        keytext = key.read_bytes() if key is not None else b""
        for recs in _pieces(cap):
            out0 = b"".join(d for t, d in recs if t == TAG_OUT)[:4096]
            in0 = b"".join(d for t, d in recs if t == TAG_IN)[:4096]
            if detect(out0, in0) != "tls":
                continue
            tls.append((cap.parent != SAMPLES, pack([(TAG_META, keytext), *recs])))
            sess = TlsSession(1, KeyLog.from_text(keytext))
            texts: list[tuple[int, bytes]] = []
            for i, (t, d) in enumerate(recs):
                for e in sess.feed("out" if t == TAG_OUT else "in", d, i, i):
                    if isinstance(e, Plaintext):
                        texts.append((TAG_OUT if e.direction == "out" else TAG_IN, e.data))
            if texts:
                p0 = b"".join(d for t, d in texts if t == TAG_OUT)[:4096]
                p1 = b"".join(d for t, d in texts if t == TAG_IN)[:4096]
                plain.append((pack(texts), detect(p0, p1)))
    tls.sort(key=lambda t: (t[0], len(t[1])))  # the samples first, then the smallest
    return [t[1] for t in tls], plain


def _after_upgrade(container: bytes) -> bytes:
    """The WebSocket part of an upgraded HTTP stream, extensions as metadata."""
    from fuzzlib import unpack

    recs = list(unpack(container))
    streams = {TAG_OUT: b"".join(d for t, d in recs if t == TAG_OUT),
               TAG_IN: b"".join(d for t, d in recs if t == TAG_IN)}
    ext = b""
    cut = {}
    for tag, s in streams.items():
        end = s.find(b"\r\n\r\n")
        cut[tag] = end + 4 if end >= 0 else len(s)
        if tag == TAG_IN:
            for line in s[: cut[tag]].split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-extensions:"):
                    ext = line.split(b":", 1)[1].strip()
    out: list[tuple[int, bytes]] = [(TAG_META, ext)]
    pos = {TAG_OUT: 0, TAG_IN: 0}
    for tag, d in recs:
        if tag not in pos:
            continue
        start, end = pos[tag], pos[tag] + len(d)
        pos[tag] = end
        keep = d[max(0, cut[tag] - start):] if end > cut[tag] else b""
        if keep:
            out.append((tag, keep))
    return pack(out)
