"""The fuzz targets: one ``run(data)`` per parser, with the invariants it must keep.

Each target takes any byte string. It may end in the documented way (e.g. a
``CaptureError`` for a file that is not a capture) and must otherwise return
normally; on the way it asserts what its module promises: column shapes and
bounds for the capture reader and decoder, contiguity and first-copy-wins for
reassembly, event types, anomaly codes in snake_case, sizes within the caps the
parser was given, times in order, and no key-log secret in any event's text.

``TARGETS`` maps a target name to ``Target(run, seeds, examples)``; ``examples``
is the CI count, sized so that the whole bounded pass stays near a minute and a
half of the suite's two workers (halved in session 14 to keep the suite within 15
minutes; ``PCAPFLOW_FUZZ_LONG`` multiplies it).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from fuzzlib import TAG_GAP, TAG_META, TAG_OUT, gap_length, pack, unpack

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def keylog_secrets(text: bytes) -> set[bytes]:
    """Lower-case hex secrets of key log text (the third field; the second, the
    client random, is public: it is in every ClientHello)."""
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and len(parts[2]) >= 32 and not line.startswith(b"#"):
            out.add(parts[2].lower())
    return out


def warm_kernels() -> None:
    """Compile (or load) the batch path's Numba kernels, with the argument types the
    pipeline passes, before a fuzz child limits its address space: with a cold cache
    (a fresh clone) LLVM needs more memory than the limit leaves."""
    import pyarrow as pa
    from pcapflow.parsers import native, redact
    from pcapflow.parsers.fix.session import _compile_scan
    from pcapflow.parsers.tcp import segments
    from pcapflow.parsers.tls.scan import tls_app_records
    from pcapflow.parsers.websocket.scan import ws_simple_frames

    u8 = np.zeros(16, np.uint8)
    i8 = np.zeros(1, np.int8)
    i64 = np.zeros(1, np.int64)
    tls_app_records(u8, 0, 100)
    ws_simple_frames(u8, True, True, 100)
    segments.simple_prefix(i8, i64, i64, i64, np.zeros(1, np.int32), 0, 0, 0, u8, i64)
    segments.gather(u8, i64, i64)
    empty = np.zeros((0, 3), np.int64)
    segments.rtt_walk(i8, i64, i64, i64, i64, i64, empty, empty, 0, 0, 1000)
    _compile_scan()
    redact._maybe_secret(pa.array(["k-ey", "x"]), np.ones(2, np.bool_))
    if native.AVAILABLE:
        z = native.NativeInflater()
        z.inflate(b"\xf2H\xcd\xc9\xc9\x07\x00", 100)
        native.ws_payloads(u8, i64, i64, i64, np.zeros(1, np.bool_), True, z.strm, False, 15, 10)
        native.open_records(0, native.TLS13, u8, i64[:0], i64[:0], u8[:12], 0, u8, i64)


def check_anomaly(a: object, layers: set[str]) -> None:
    from pcapflow.parsers.events import Anomaly

    assert isinstance(a, Anomaly), a
    assert SNAKE.match(a.code), f"anomaly code not snake_case: {a.code!r}"
    assert a.layer in layers, f"anomaly layer {a.layer!r} not in {layers}"
    assert isinstance(a.detail, str)


def check_times(e: object) -> None:
    t1, t2 = getattr(e, "ts_first", None), getattr(e, "ts_last", None)
    if t1 is not None and t2 is not None:
        assert t1 <= t2, f"{type(e).__name__}: ts_first {t1} > ts_last {t2}"


# --- capture formats ---------------------------------------------------------------
CAPTURE_CODES = {"unreadable", "truncated_header", "not_a_capture", "bad_header",
                 "bad_compression"}


def _chunk_bytes(data: bytes) -> int:
    # vary the chunk size with the input, so records straddle chunk ends everywhere
    return 64 << (data[-1] % 12) if data else 64


def _read_capture(data: bytes, each: Callable[[object], None] | None = None) -> object | None:
    from pcapflow.parsers.capture import MAX_CAPLEN, open_capture
    from pcapflow.parsers.errors import CaptureError

    try:
        reader = open_capture(io.BytesIO(data), chunk_bytes=_chunk_bytes(data))
    except CaptureError as err:
        assert err.code in CAPTURE_CODES, err.code
        assert str(err)  # one line naming what is wrong
        return None
    packets = 0
    with reader:
        for chunk in reader:
            n = len(chunk)
            for col in ("caplen", "wirelen", "ts_ns", "linktype", "interface", "index",
                        "file_offset"):
                assert getattr(chunk, col).shape == (n,), col
            assert (chunk.caplen >= 0).all() and (chunk.caplen <= MAX_CAPLEN).all()
            assert (chunk.offset >= 0).all()
            assert (chunk.offset + chunk.caplen <= chunk.data.shape[0]).all()
            assert (chunk.index == np.arange(packets, packets + n)).all()
            for a in chunk.anomalies:
                check_anomaly(a, {"capture"})
            packets += n
            if each is not None:
                each(chunk)
    assert reader.packets == packets
    assert reader.sha256 == hashlib.sha256(data).hexdigest(), "sha256 must cover the whole file"
    return reader


def run_capture(data: bytes) -> None:
    _read_capture(data)


def run_decode(data: bytes) -> None:
    """Capture -> link/IP/TCP decode -> flow tracking and TCP analysis."""
    from pcapflow.parsers.decode import OK, STATUS, decode_chunk
    from pcapflow.parsers.tcp.analysis import FlowTracker

    # tiny, so growing the table, retiring flows early and evicting are exercised
    tracker = FlowTracker(capacity=4, room_flows=8, max_flows=16)

    def each(chunk: object) -> None:
        dec = decode_chunk(chunk)  # type: ignore[arg-type]
        n = len(chunk)  # type: ignore[arg-type]
        assert dec.status.shape == (n,)
        assert set(np.unique(dec.status).tolist()) <= set(range(len(STATUS)))
        ok = dec.status == OK
        start = chunk.offset[ok]  # type: ignore[attr-defined]
        end = start + chunk.caplen[ok]  # type: ignore[attr-defined]
        po, pc = dec.payload_offset[ok], dec.payload_caplen[ok]
        has = pc > 0
        assert (po[has] >= start[has]).all() and (po[has] + pc[has] <= end[has]).all()
        assert (pc <= dec.payload_len[ok]).all() and (pc >= 0).all()
        pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)  # type: ignore[attr-defined]
        assert (pf.flow_id < tracker.n_flows).all()
        assert set(np.unique(pf.direction[pf.flow_id >= 0]).tolist()) <= {0, 1}

    _read_capture(data, each)
    cols = tracker.finish()  # every flow retired: one row per flow id, each id once
    ids = cols["flow_id"] if cols is not None else np.zeros(0, np.int64)
    assert np.array_equal(ids, np.arange(tracker.n_flows))
    assert cols is None or all(v.shape[0] == ids.size for v in cols.values())


# --- TCP reassembly -----------------------------------------------------------------
MODEL = 1 << 20  # stream bytes modelled exactly; beyond, only lengths are checked
# A bug found by fuzzing (parsers/tcp/reassembly.py, StreamReassembler.segment):
# past max_held it evicted one held island per segment, so with many holes the held
# bytes grew far past the cap (tests/regressions/reassembly/held_islands.bin). Fixed:
# the cap is now checked after every segment.
CHECK_HELD_CAP = True
OP_SIZE = 8


def _stream_bytes(offset: int, n: int, corrupt: bool) -> bytes:
    b = ((np.arange(offset, offset + n, dtype=np.int64) * 7 + 3) % 251).astype(np.uint8)
    return (b ^ 0x5A).tobytes() if corrupt else b.tobytes()


def run_reassembly(data: bytes) -> None:
    """Ops of 8 bytes: kind, signed 32-bit offset, 16-bit length, flags (see FUZZING.md)."""
    from pcapflow.parsers.tcp.reassembly import Conflict, Gap, Piece, StreamReassembler

    max_held = (1 << 14) if data[:1] and data[0] & 0x80 else (1 << 20)
    r = StreamReassembler(0, max_held=max_held)
    first = np.full(MODEL, -1, np.int16)  # value of the first copy of each byte
    state = {"next": 0, "avail": -(1 << 62)}

    def check(items: list, ts: int) -> None:
        for it in items:
            if isinstance(it, Piece):
                assert it.offset == state["next"], (it.offset, state["next"])
                assert it.ts_first <= it.ts_avail <= ts and it.ts_avail >= state["avail"]
                state["avail"] = it.ts_avail
                lo, hi = it.offset, min(it.offset + len(it.data), MODEL)
                if lo < hi:
                    want = first[lo:hi]
                    got = np.frombuffer(it.data[: hi - lo], np.uint8).astype(np.int16)
                    assert (want >= 0).all(), "delivered bytes nobody sent"
                    assert (got == want).all(), "first copy must win"
                state["next"] = it.offset + len(it.data)
            elif isinstance(it, Gap):
                assert it.offset == state["next"] and it.length > 0
                state["next"] = it.offset + it.length
            else:
                assert isinstance(it, Conflict) and it.length > 0

    base = 0
    for ts, i in enumerate(range(1, len(data) - OP_SIZE + 1, OP_SIZE), start=1):
        op = data[i : i + OP_SIZE]
        kind = op[0] % 8
        rel = int.from_bytes(op[1:5], "big", signed=True)
        n = int.from_bytes(op[5:7], "big")
        if kind == 7:
            check(r.finish(ts), ts)
            continue
        off = max(0, base + (rel << 16 if kind == 6 else rel))  # kind 6: jumps of up to 2^47
        if kind == 5:
            check(r.ack(off, ts), ts)
            continue
        payload = _stream_bytes(off, n, corrupt=bool(op[7] & 1))
        if off < MODEL and n:
            seg = first[off : min(off + n, MODEL)]
            new = seg < 0
            seg[new] = np.frombuffer(payload[: seg.shape[0]], np.uint8)[new]
        check(r.segment(off, payload, ts), ts)
        base = max(base, off + n) if op[7] & 2 else base
        if CHECK_HELD_CAP:
            assert r.held_bytes <= max_held + n, "held data must stay under max_held"
    check(r.finish(1 << 40), 1 << 40)
    assert r.held_bytes == 0


def _ops(*ops: tuple[int, int, int, int]) -> bytes:
    return b"".join(bytes([k]) + o.to_bytes(4, "big", signed=True) + n.to_bytes(2, "big")
                    + bytes([f]) for k, o, n, f in ops)


REASSEMBLY_SEEDS = [
    b"\x00" + _ops(*[(0, i * 1000, 1000, 2) for i in range(0, 30)]),  # in order
    b"\x00" + _ops(*[(0, i * 1000, 1000, 0) for i in reversed(range(0, 30))]),  # reversed
    b"\x80" + _ops((0, 0, 100, 0), (0, 5000, 20000, 0), (5, 6000, 0, 0), (0, 100, 4900, 0)),
    b"\x00" + _ops((0, 0, 500, 0), (0, 200, 500, 1), (0, 0, 900, 1), (7, 0, 0, 0)),
    b"\x00" + _ops((0, 0, 100, 2), (6, 0x7FFF, 1000, 0), (0, 100, 100, 2), (6, -5, 60000, 0)),
]


# --- session parsers ----------------------------------------------------------------
def _feed(session: object, data: bytes, on_event: Callable[[object], None]) -> str:
    """Feed container records to a session parser; returns the metadata record."""
    meta = b""
    ts = 0
    for tag, body in unpack(data):
        ts += 1000
        if tag == TAG_META:
            meta = body
            continue
        d = "out" if tag == TAG_OUT else "in"
        if tag == TAG_GAP:
            d = "out" if len(body) % 2 == 0 else "in"
            evs = session.gap(d, gap_length(body), ts)  # type: ignore[attr-defined]
        else:
            evs = session.feed(d, body, ts, ts + 500)  # type: ignore[attr-defined]
        for e in evs:
            on_event(e)
    for e in session.finish(ts + 1000):  # type: ignore[attr-defined]
        on_event(e)
    return meta.decode("latin-1")


def _feed_batched(session: object, data: bytes) -> list[object]:
    """``_feed`` through ``feed_many``: consecutive records of one direction form one
    ``Run`` (same bytes and times as ``_feed`` gives them); returns the events."""
    from pcapflow.parsers.events import Run

    out: list[object] = []
    pending: list[tuple[bytes, int, int]] = []
    pending_dir = "out"

    def flush() -> None:
        if pending:
            ends = np.cumsum([len(b) for b, _, _ in pending], dtype=np.int64)
            run = Run(b"".join(b for b, _, _ in pending), ends,
                      np.array([t for _, t, _ in pending], dtype=np.int64),
                      np.array([t for _, _, t in pending], dtype=np.int64))
            out.extend(session.feed_many(pending_dir, run))  # type: ignore[attr-defined]
            pending.clear()

    ts = 0
    for tag, body in unpack(data):
        ts += 1000
        if tag == TAG_META:
            continue
        d = "out" if tag == TAG_OUT else "in"
        if tag == TAG_GAP:
            flush()
            d = "out" if len(body) % 2 == 0 else "in"
            out.extend(session.gap(d, gap_length(body), ts))  # type: ignore[attr-defined]
            continue
        if d != pending_dir:
            flush()
            pending_dir = d
        if body:  # feed() of an empty piece is a no-op for every parser
            pending.append((body, ts, ts + 500))
    flush()
    out.extend(session.finish(ts + 1000))  # type: ignore[attr-defined]
    return out


def _normal_form(events: list[object]) -> tuple[dict[str, list[str]], list[str]]:
    """Events as table rows (batch events expanded by the row converters) plus the
    sorted reprs of everything else, with ``PlaintextRun`` split into its pieces."""
    from pcapflow.parsers.tls.events import Plaintext, PlaintextRun
    from pcapflow.pipelines.tables.rows import RowBuffers

    tables: dict[str, list[str]] = {}
    rows = RowBuffers(lambda t, tbl: tables.setdefault(t, []).extend(
        repr(r) for r in tbl.to_pylist()))
    other: list[str] = []
    for e in events:
        if isinstance(e, PlaintextRun):
            off = e.stream_offset
            for piece, t1, t2 in e.run.pieces():
                other.append(repr(("plain", e.direction, off, piece, t1, t2)))
                off += len(piece)
        elif isinstance(e, Plaintext):
            other.append(repr(("plain", e.direction, e.stream_offset, e.data, e.ts_first,
                               e.ts_last)))
        elif not rows.add(e):
            other.append(repr(e))
    rows.flush()
    return {t: sorted(v) for t, v in tables.items()}, sorted(other)


def check_batch_path(make: Callable[[], object], data: bytes) -> None:
    """The batch path (``feed_many``) gives exactly the events of ``feed`` per piece."""
    one: list[object] = []
    _feed(make(), data, one.append)
    batched = _feed_batched(make(), data)
    assert _normal_form(batched) == _normal_form(one), "feed_many differs from feed"


def _meta(data: bytes) -> bytes:
    return next((b for t, b in unpack(data) if t == TAG_META), b"")


def _no_secret_in_text(e: object, secrets: set[bytes]) -> None:
    """Key-log secrets (hex) never appear in an event's text fields."""
    if not secrets:
        return
    for f in fields(e):  # type: ignore[arg-type]
        v = getattr(e, f.name)
        if isinstance(v, str) and len(v) >= 32:
            low = v.lower().encode()
            assert not any(s in low for s in secrets), f"key material in {f.name}"


def run_tls(data: bytes) -> None:
    from pcapflow.parsers.events import Anomaly
    from pcapflow.parsers.tls import KeyLog, TlsSession
    from pcapflow.parsers.tls.events import Plaintext, TlsHandshakeInfo, TlsRecord

    keytext = _meta(data)
    secrets = keylog_secrets(keytext)
    sess = TlsSession(7, KeyLog.from_text(keytext))
    fed = sum(len(b) for t, b in unpack(data) if t in (0, 1))
    plain = [0]

    def on(e: object) -> None:
        check_times(e)
        if isinstance(e, Anomaly):
            check_anomaly(e, {"tls"})
        elif isinstance(e, Plaintext):
            assert isinstance(e.data, bytes) and e.data
            plain[0] += len(e.data)
        else:
            assert isinstance(e, TlsRecord | TlsHandshakeInfo), type(e)
        if isinstance(e, TlsRecord):
            assert e.length >= 5
            assert e.plaintext_length is None or 0 <= e.plaintext_length <= e.length
        _no_secret_in_text(e, secrets)

    _feed(sess, data, on)
    assert plain[0] <= fed, "more plaintext than ciphertext"
    check_batch_path(lambda: TlsSession(7, KeyLog.from_text(keytext)), data)


def _check_http(e: object, max_body: int, max_ws: int) -> None:
    from pcapflow.parsers.events import Anomaly
    from pcapflow.parsers.http import HttpMessage, WebSocketHandshake
    from pcapflow.parsers.websocket import WsMessage

    check_times(e)
    if isinstance(e, Anomaly):
        check_anomaly(e, {"http", "websocket", "http2"})  # h2c: Upgrade to HTTP/2
    elif isinstance(e, HttpMessage):
        assert len(e.body) <= max_body, "body over max_body"
        assert e.kind in ("request", "response")
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in e.headers)
        assert e.stream_offset >= 0 and e.body_length >= 0
    elif isinstance(e, WsMessage):
        assert len(e.payload) <= max_ws
    else:
        assert isinstance(e, WebSocketHandshake), type(e)


def run_http(data: bytes) -> None:
    from pcapflow.parsers.http import HttpSession
    from pcapflow.parsers.websocket import WebSocketSession

    max_body = 1 << 16
    sess = HttpSession(3, max_body=max_body, max_header=1 << 14)
    max_ws = WebSocketSession(0).max_inflated  # the session HttpSession makes on a 101
    _feed(sess, data, lambda e: _check_http(e, max_body, max_ws))
    if sess.upgraded is not None:  # a 101 to a protocol the registry declares
        from pcapflow.parsers.http2 import Http2Session

        assert isinstance(sess.upgraded, WebSocketSession | Http2Session)
    check_batch_path(lambda: HttpSession(3, max_body=max_body, max_header=1 << 14), data)


def run_websocket(data: bytes) -> None:
    from pcapflow.parsers.events import Anomaly
    from pcapflow.parsers.websocket import WebSocketSession, WsMessage

    ext = _meta(data).decode("latin-1") or None
    cap = 1 << 16
    sess = WebSocketSession(5, extensions=ext, max_message=cap, max_inflated=cap)

    def on(e: object) -> None:
        check_times(e)
        if isinstance(e, Anomaly):
            check_anomaly(e, {"websocket"})
            return
        assert isinstance(e, WsMessage), type(e)
        assert len(e.payload) <= cap, "payload over max_inflated"
        assert e.opcode in ("text", "binary", "close", "ping", "pong", "continuation"), e.opcode
        assert e.frames >= 1 and e.wire_length >= 2

    _feed(sess, data, on)
    check_batch_path(
        lambda: WebSocketSession(5, extensions=ext, max_message=cap, max_inflated=cap), data)


def _frame(op: int, payload: bytes, *, fin: bool = True, rsv1: bool = False,
           mask: bytes | None = None, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 1 << 16:
        head = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        head += mask
    return head + payload


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


WS_SEEDS = [
    pack([(TAG_META, b"permessage-deflate"),
          (0, _frame(1, _deflate(b'{"op":"ping"}'), rsv1=True, mask=b"abcd")),
          (1, _frame(1, _deflate(b"\0" * 5_000_000), rsv1=True)),  # an inflate bomb
          (1, _frame(2, b"", length=(1 << 63) - 1)),  # a 64-bit length
          (0, _frame(9, b"x" * 10, mask=b"\1\2\3\4"))]),
    pack([(TAG_META, b"permessage-deflate; server_no_context_takeover"),
          (1, _frame(1, _deflate(b"hello "), fin=False, rsv1=True)),
          (1, _frame(0, _deflate(b"world"), fin=True)),
          (1, _frame(8, b"\x03\xe8bye"))]),
]

FIX_SEEDS = [
    pack([(0, b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01"),  # BodyLength lies (too short)
          (1, b"8=FIX.4.4\x019=99999\x0135=0\x0110=000\x01"),  # ...and too long
          (0, b"8=FIX.4.4\x019=12\x0135=D\x0195=4\x0196=ab\x01\x0110=000\x01"),
          (0, b"8=FIX.4.4\x019=\x01"), (3, b"100"), (1, b"9=5\x0135=0\x0110=000\x01")]),
]

HTTP_SEEDS = [
    pack([(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
          (1, b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"ffffffffffffffff\r\n"),
          (1, b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc")]),
]


def run_fix(data: bytes) -> None:
    from pcapflow.parsers.events import Anomaly
    from pcapflow.parsers.fix import FixMessage, FixSession

    cap = 1 << 14
    sess = FixSession(9, max_message=cap)

    def on(e: object) -> None:
        check_times(e)
        if isinstance(e, Anomaly):
            check_anomaly(e, {"fix"})
            return
        assert isinstance(e, FixMessage), type(e)
        assert 0 < e.raw_length <= cap, "message over max_message"
        assert all(isinstance(t, int) and isinstance(v, str) for t, v in e.fields)

    _feed(sess, data, on)
    check_batch_path(lambda: FixSession(9, max_message=cap), data)


# --- small pure functions -----------------------------------------------------------
def run_keylog(data: bytes) -> None:
    from pcapflow.parsers.tls import KeyLog

    log = KeyLog.from_text(data)
    lines = data.splitlines()
    assert log.lines + log.bad_lines + log.comment_lines <= len(lines)
    assert len(log) <= log.lines
    text = repr(log)
    for secret in keylog_secrets(data):
        assert secret.decode("latin-1") not in text.lower(), "repr shows a secret"


def run_inflate(data: bytes) -> None:
    """permessage-deflate inflater and HTTP content codings, with output caps."""
    from pcapflow.parsers.http.body import decode_content
    from pcapflow.parsers.websocket.deflate import MessageInflater, PerMessageDeflateParams

    recs = list(unpack(data))
    header = next((b for t, b in recs if t == TAG_META), b"").decode("latin-1")
    params = PerMessageDeflateParams.from_header(header or None)
    bits, no_takeover = params.for_direction("in") if params else (15, False)
    inf = MessageInflater(bits, no_takeover)
    cap = 1 << 16
    for t, b in recs:
        if t == TAG_META:
            continue
        out, status = inf.inflate(b, cap)
        assert len(out) <= cap and status in ("ok", "failed", "bomb")
        coding = ("gzip", "deflate", "br", "gzip, br", "x-gzip", "identity, gzip")[t % 6]
        body, st, _detail = decode_content(b, coding, cap)
        assert len(body) <= max(cap, len(b)), "decoded body over the cap"
        assert st in ("ok", "truncated", "failed", "unsupported")


INFLATE_SEEDS = [
    pack([(TAG_META, b"permessage-deflate; client_max_window_bits=9"),
          (1, _deflate(b"a" * 100_000)), (0, zlib.compress(b"b" * 10_000_000, 9)),
          (1, _deflate(b"{}") + b"\x03\x00" * 50)]),
]


def run_detect_redact(data: bytes) -> None:
    from pcapflow.parsers import redact
    from pcapflow.parsers.detect import detect, find_resync

    recs = list(unpack(data))
    out = b"".join(b for t, b in recs if t == 0)[:4096]
    inn = b"".join(b for t, b in recs if t == 1)[:4096]
    assert detect(out, inn) in ("tls", "http", "http2", "fix", "websocket", "unknown")
    for proto in ("tls", "http", "fix", "websocket", "http2"):
        at = find_resync(proto, out)
        assert at is None or 0 <= at < max(len(out), 1)
    text = (out + inn).decode("utf-8", "replace")
    once = redact.redact_json_text(text)
    assert isinstance(once, str)
    redact.redact_query(text)
    redact.redact_form(text)
    heads = [tuple(line.split(":", 1)) for line in text.splitlines() if ":" in line]
    assert len(redact.redact_headers(heads)) == len(heads)  # type: ignore[arg-type]


# --- the whole ingest ---------------------------------------------------------------
def run_ingest(data: bytes) -> None:
    """Whole ``ingest_capture`` (app layer, all sample key logs) into a fresh dataset."""
    from pcapflow.parsers.errors import CaptureError
    from pcapflow.pipelines import store
    from pcapflow.pipelines.ingest import ingest_capture
    from pcapflow.pipelines.ingest.app_layer import AppLayer
    from seeds import SAMPLES

    root = Path(tempfile.mkdtemp(prefix="pcapflow-fuzz-"))
    try:
        cap = root / "input.pcap"
        cap.write_bytes(data)
        app = AppLayer.factory([str(k) for k in sorted(SAMPLES.glob("*.keylog"))])
        try:
            res = ingest_capture(str(cap), root / "data", app_layer=app, chunk_bytes=1 << 16)
        except CaptureError as err:
            assert err.code in CAPTURE_CODES
            assert not any((root / "data").glob("*/capture_id=*")), "failed ingest left rows"
            return
        assert res.sha256 == hashlib.sha256(data).hexdigest()
        assert not any((root / "data" / store.STAGING).iterdir()), "staging left behind"
        import pyarrow.parquet as pq

        t = pq.read_table(root / "data" / "captures")
        assert t.num_rows == 1 and t.column("packets")[0].as_py() == res.packets
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- registry -----------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    examples: int
    """Examples in the bounded CI pass (times ``fuzzlib.long_factor()``)."""


def _seeds(name: str, extra: list[bytes] | None = None) -> Callable[[], list[bytes]]:
    def get() -> list[bytes]:
        from seeds import all_seeds

        return [*(extra or []), *all_seeds()[name]]
    return get


TARGETS: dict[str, Target] = {
    "capture": Target(run_capture, _seeds("capture"), 1000),
    "decode": Target(run_decode, _seeds("capture"), 750),
    "reassembly": Target(run_reassembly, lambda: REASSEMBLY_SEEDS, 1000),
    "tls": Target(run_tls, _seeds("tls"), 600),
    "http": Target(run_http, _seeds("http", HTTP_SEEDS), 1000),
    "websocket": Target(run_websocket, _seeds("websocket", WS_SEEDS), 1250),
    "inflate": Target(run_inflate, lambda: INFLATE_SEEDS, 500),
    "fix": Target(run_fix, _seeds("fix", FIX_SEEDS), 1250),
    "keylog": Target(run_keylog, _seeds("keylog"), 1000),
    "detect_redact": Target(run_detect_redact, _seeds("http", HTTP_SEEDS), 1000),
    "ingest": Target(run_ingest, _seeds("capture"), 100),
}
