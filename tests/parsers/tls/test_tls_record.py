"""Record framing, times, resync and anomalies; TlsSession split invariance.

Synthetic byte vectors need nothing; session tests over real encrypted
conversations use two small public captures and skip when the corpus is absent.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[2]))
from helpers.paths import PUBLIC as ROOT
from helpers.tcp_stream_util import read_tcp_streams
from pcapflow.parsers.errors import DecodeError
from pcapflow.parsers.events import Anomaly, Run
from pcapflow.parsers.tls import KeyLog, Plaintext, TlsHandshakeInfo, TlsRecord, TlsSession
from pcapflow.parsers.tls.handshake import MAX_HANDSHAKE_MESSAGE, HandshakeReassembler
from pcapflow.parsers.tls.record import RawRecord, ReaderIssue, RecordReader

TLS13 = ("tls/ssldump/tls1.3_aes256gcm.pcap", "tls/ssldump/sslkeylog.txt")  # has KeyUpdate
TLS12_CBC = (
    "tls/snet/tls_ECDHE-RSA-AES128-SHA256.pcap",
    "tls/snet/keylog_ECDHE-RSA-AES128-SHA256.txt",
)
needs_corpus = pytest.mark.skipif(not ROOT.exists(), reason="public capture corpus not present")


def rec(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


STREAM = (
    rec(22, b"\x01" + b"\x00" * 40, 0x0301)
    + rec(20, b"\x01")
    + rec(23, b"x" * 300)
    + rec(21, b"\x01\x00")
)
BOUNDS = [(0, 46), (46, 52), (52, 357), (357, 364)]


def records(items: list[RawRecord | ReaderIssue]) -> list[RawRecord]:
    return [r for r in items if isinstance(r, RawRecord)]


# -- RecordReader --------------------------------------------------------------------
def test_whole_stream() -> None:
    out = records(RecordReader().feed(STREAM, 10, 11))
    assert [(r.stream_offset, r.stream_offset + 5 + len(r.fragment)) for r in out] == BOUNDS
    assert [r.content_type for r in out] == [22, 20, 23, 21]
    assert all((r.ts_first, r.ts_last) == (10, 11) for r in out)


@pytest.mark.parametrize("k", range(1, len(STREAM)))
def test_split_at_every_offset_times(k: int) -> None:
    reader = RecordReader()
    out = records(reader.feed(STREAM[:k], 1, 2) + reader.feed(STREAM[k:], 3, 4))
    assert [(r.stream_offset, r.stream_offset + 5 + len(r.fragment)) for r in out] == BOUNDS
    for r, (start, end) in zip(out, BOUNDS, strict=True):
        assert r.ts_first == (1 if start < k else 3)  # piece holding the first byte
        assert r.ts_last == (2 if end <= k else 4)  # piece holding the last byte
    assert reader.buffered == 0


def test_byte_by_byte_equals_whole() -> None:
    reader = RecordReader()
    out: list[RawRecord | ReaderIssue] = []
    for i in range(len(STREAM)):
        out += reader.feed(STREAM[i : i + 1], 100 + i, 200 + i)
    got = records(out)
    assert [r.fragment for r in got] == [
        r.fragment for r in records(RecordReader().feed(STREAM, 0, 0))
    ]
    assert [(r.ts_first, r.ts_last) for r in got] == [(100 + s, 200 + e - 1) for s, e in BOUNDS]


def test_unread_is_what_a_batch_path_frames_and_advance_consumes() -> None:
    """``unread`` shows the bytes not yet framed with their stream offsets (after a
    compaction too); ``advance`` past whole records makes the reader go on after them."""
    reader = RecordReader()
    first = records(reader.feed(STREAM[:46], 1, 2))  # the ClientHello: the reader syncs
    assert [r.stream_offset for r in first] == [0]
    buf, pos, base = reader.unread()
    assert (bytes(buf[pos:]), base + pos) == (b"", 46)
    rest = STREAM[46:] + STREAM[52:357]  # two more application-data records after the CCS
    reader.append_run(Run(data=rest, ends=np.array([len(rest)]), ts_first=np.array([3]),
                          ts_last=np.array([4])))
    buf, pos, base = reader.unread()
    assert bytes(buf[pos:]) == rest and base + pos == 46
    reader.advance(pos + 6, 1)  # a batch path framed the CCS record itself
    reader.compact()
    buf, pos, base = reader.unread()
    assert bytes(buf[pos:]) == rest[6:] and base + pos == 52
    item, _ = reader.step()
    assert isinstance(item, RawRecord) and (item.content_type, item.stream_offset) == (23, 52)


def test_a_view_of_the_buffer_left_alive_does_not_stop_the_reader() -> None:
    """A NumPy array or memoryview of the reader's buffer that outlives its read (held
    by a traceback, or by another thread's sample of a frame: seen once on a Dask worker
    under load, ``BufferError`` at the compaction) must not stop framing: the reader
    goes on in a copy and frames the same records."""
    want = records(RecordReader().feed(STREAM, 1, 1))
    reader = RecordReader()
    got = records(reader.feed(STREAM[:50], 1, 1))
    views = [memoryview(reader.unread().buf), np.frombuffer(reader.unread().buf, np.uint8)]
    got += records(reader.feed(STREAM[50:300], 1, 1))  # appends, then compacts
    views.append(memoryview(reader.unread().buf))
    reader.append_run(Run(data=STREAM[300:], ends=np.array([len(STREAM) - 300]),
                          ts_first=np.array([1]), ts_last=np.array([1])))
    views.append(memoryview(reader.unread().buf))
    while (step := reader.step()) != (None, False):
        got += records([step[0]] if step[0] is not None else [])
    reader.compact()
    assert [(r.content_type, r.stream_offset, r.fragment) for r in got] == \
        [(r.content_type, r.stream_offset, r.fragment) for r in want]
    assert reader.buffered == 0 and len(views) == 4
    reader.gap(10, 2)  # drops the partial record: a new buffer, whatever views remain
    assert reader.next_offset == len(STREAM) + 10


def test_midstream_start_resyncs() -> None:
    reader = RecordReader()
    out = reader.feed(b"garbage that is not tls" + STREAM[46:], 5, 5)
    issue = out[0]
    assert (
        isinstance(issue, ReaderIssue) and issue.code == "midstream_resync" and not issue.lost_sync
    )
    assert [r.content_type for r in records(out)] == [20, 23, 21]


def test_not_tls_and_stop() -> None:
    reader = RecordReader()
    out = reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4000, 1, 1)
    assert [i.code for i in out if isinstance(i, ReaderIssue)] == ["not_tls"]
    assert reader.feed(STREAM, 2, 2) == [] and reader.buffered == 0


def test_record_too_long_stops() -> None:
    reader = RecordReader(max_record=2**14 + 2048)
    out = reader.feed(STREAM + struct.pack("!BHH", 23, 0x0303, 2**14 + 2049) + b"\0" * 100, 1, 1)
    assert [i.code for i in out if isinstance(i, ReaderIssue)] == ["record_too_long"]
    assert len(records(out)) == 4
    assert reader.feed(STREAM, 2, 2) == []


def test_bad_header_mid_stream_then_resync() -> None:
    reader = RecordReader()
    out = reader.feed(STREAM[:52] + b"\x99junk" + STREAM[52:], 1, 1)
    codes = [i.code for i in out if isinstance(i, ReaderIssue)]
    assert codes == ["bad_record_header", "midstream_resync"]
    assert [r.content_type for r in records(out)] == [22, 20, 23, 21]


def test_gap_drops_partial_record_and_resyncs() -> None:
    reader = RecordReader()
    out = reader.feed(STREAM[:100], 1, 1)
    out += reader.gap(257, 2)  # the rest of the 300-byte record is lost
    out += reader.feed(STREAM[357:] + STREAM, 3, 3)
    issues = [i for i in out if isinstance(i, ReaderIssue)]
    assert [i.code for i in issues] == ["gap", "midstream_resync"]
    assert issues[0].lost_sync
    got = records(out)
    assert [r.stream_offset for r in got] == [0, 46, 357, 364, 410, 416, 721]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(1, 400), max_size=20))
def test_random_bytes_never_raise_reader(data: bytes, cuts: list[int]) -> None:
    reader = RecordReader()
    pos = 0
    for n in [*cuts, len(data)]:
        reader.feed(data[pos : pos + n], pos, pos)
        pos += n
    reader.finish(pos)


# -- TlsSession over real conversations ---------------------------------------------
def load(case: tuple[str, str]) -> tuple[list[tuple[str, bytes, int]], KeyLog]:
    stream = read_tcp_streams(str(ROOT / case[0]))[0]
    return stream.pieces, KeyLog.from_files([ROOT / case[1]])


def run(
    pieces: list[tuple[str, bytes, int]], keylog: KeyLog | None, split: int = 0
) -> list[object]:
    """Feed pieces (ts_first = ts, ts_last = ts + 1); ``split`` > 0 cuts every piece there."""
    session = TlsSession(7, keylog)
    events: list[object] = []
    for direction, data, ts in pieces:
        parts = [data[:split], data[split:]] if 0 < split < len(data) else [data]
        if split == -1:
            parts = [data[i : i + 1] for i in range(len(data))]
        for part in parts:
            events += session.feed(direction, part, ts, ts + 1)  # type: ignore[arg-type]
    return events + session.finish(pieces[-1][2] + 2)


@needs_corpus
@pytest.mark.parametrize("case", [TLS13, TLS12_CBC], ids=["tls13-keyupdate", "tls12-cbc"])
def test_session_split_invariance(case: tuple[str, str]) -> None:
    pieces, keylog = load(case)
    whole = run(pieces, keylog)
    assert any(isinstance(e, Plaintext) for e in whole)
    assert not any(isinstance(e, Anomaly) for e in whole)
    assert run(pieces, keylog, split=-1) == whole
    for k in range(1, max(len(p[1]) for p in pieces), 7):
        assert run(pieces, keylog, split=k) == whole


@needs_corpus
def test_session_events_and_plaintext_offsets() -> None:
    pieces, keylog = load(TLS13)
    events = run(pieces, keylog)
    recs = [e for e in events if isinstance(e, TlsRecord)]
    assert sum(r.length for r in recs if r.direction == "out") == sum(
        len(p[1]) for p in pieces if p[0] == "out"
    )
    for d in ("out", "in"):
        texts = [e for e in events if isinstance(e, Plaintext) and e.direction == d]
        offsets = [t.stream_offset for t in texts]
        assert offsets == [sum(len(t.data) for t in texts[:i]) for i in range(len(texts))]
        # each Plaintext carries the times of a decrypted application-data record
        app = [r for r in recs if r.direction == d and r.inner_content_type == 23]
        assert [(t.ts_first, t.ts_last, len(t.data)) for t in texts] == [
            (r.ts_first, r.ts_last, r.plaintext_length) for r in app
        ]
    assert all(
        r.length - r.plaintext_length == 5 + 16 + 1 for r in recs if r.decrypted
    )  # AES-GCM + type
    info = [e for e in events if isinstance(e, TlsHandshakeInfo)][-1]
    assert info.complete and info.version == "1.3" and info.cipher == "TLS_AES_256_GCM_SHA384"


@needs_corpus
def test_no_secret_in_any_event() -> None:
    pieces, keylog = load(TLS13)
    text = repr(run(pieces, keylog)) + repr(keylog)
    secrets = [
        line.split()[2]
        for line in (ROOT / TLS13[1]).read_text().splitlines()
        if line.count(" ") == 2
    ]
    assert secrets and not any(s.lower() in text.lower() for s in secrets)


@needs_corpus
def test_missing_keys_reported_once() -> None:
    pieces, _ = load(TLS13)
    events = run(pieces, KeyLog.from_text("# empty\n"))
    assert [e.code for e in events if isinstance(e, Anomaly)] == ["missing_keys"]
    assert not any(isinstance(e, TlsRecord) and e.decrypted for e in events)
    assert not any(isinstance(e, Anomaly) for e in run(pieces, None))  # no key log: no complaint


@needs_corpus
def test_decrypt_failed_stops_direction_but_keeps_timing() -> None:
    pieces, keylog = load(TLS12_CBC)
    good = run(pieces, keylog)
    last_in = max(i for i, p in enumerate(pieces) if p[0] == "in")
    direction, data, ts = pieces[last_in]
    tampered = [
        *pieces[:last_in],
        (direction, data[:-1] + bytes([data[-1] ^ 1]), ts),
        *pieces[last_in + 1 :],
    ]
    bad = run(tampered, keylog)
    assert [e.code for e in bad if isinstance(e, Anomaly)] == ["decrypt_failed"]
    good_recs = [(r.stream_offset, r.ts_first, r.ts_last) for r in good if isinstance(r, TlsRecord)]
    assert [
        (r.stream_offset, r.ts_first, r.ts_last) for r in bad if isinstance(r, TlsRecord)
    ] == good_recs


@needs_corpus
def test_gap_stops_decryption_of_that_direction_only() -> None:
    pieces, keylog = load(TLS13)
    in_idx = [i for i, p in enumerate(pieces) if p[0] == "in"]
    cut = in_idx[len(in_idx) // 2]
    session = TlsSession(1, keylog)
    events: list[object] = []
    for i, (direction, data, ts) in enumerate(pieces):
        if i == cut:
            events += session.gap("in", len(data), ts)
            continue
        events += session.feed(direction, data, ts, ts)  # type: ignore[arg-type]
    codes = [e.code for e in events if isinstance(e, Anomaly)]
    assert codes[0] == "gap" and set(codes) <= {"gap", "midstream_resync"}
    later_in = [
        e
        for e in events[events.index(next(e for e in events if isinstance(e, Anomaly))) :]
        if isinstance(e, TlsRecord) and e.direction == "in"
    ]
    assert later_in and not any(r.decrypted for r in later_in)
    assert any(
        isinstance(e, TlsRecord) and e.direction == "out" and e.decrypted for e in events[-10:]
    )


@needs_corpus
def test_capture_started_mid_connection() -> None:
    pieces, keylog = load(TLS13)
    full = [e for e in run(pieces, keylog) if isinstance(e, TlsRecord)]
    skip = 3  # drop the first pieces (hellos included) and start inside a record
    direction, data, ts = pieces[skip]
    cut = [(direction, data[10:], ts), *pieces[skip + 1 :]]
    events = run(cut, keylog)
    assert any(isinstance(e, Anomaly) and e.code == "midstream_resync" for e in events)
    recs = [e for e in events if isinstance(e, TlsRecord)]
    assert {(r.direction, r.length) for r in recs} <= {(r.direction, r.length) for r in full}
    # with the key log, the TLS 1.3 key search finds the secrets without the hellos
    # (tests/parsers/tls/test_tls_keysearch.py); without it nothing is decrypted
    codes = {e.code for e in events if isinstance(e, Anomaly)}
    assert "handshake_not_captured" in codes
    assert recs and any(r.decrypted for r in recs)
    blind = [e for e in run(cut, None) if isinstance(e, TlsRecord)]
    assert blind and not any(r.decrypted for r in blind)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(["out", "in"]), st.binary(max_size=600)), max_size=12),
    st.booleans(),
)
def test_random_pieces_never_raise(pieces: list[tuple[str, bytes]], prefix: bool) -> None:
    session = TlsSession(1, KeyLog.from_text(""))
    if prefix:  # a valid-looking start makes the garbage reach deeper states
        session.feed(
            "out", rec(22, b"\x01\x00\x00\x26" + b"\x03\x03" + b"r" * 32 + b"\0\0\0\0"), 0, 0
        )
    for i, (direction, data) in enumerate(pieces):
        for ev in session.feed(direction, data, i, i):  # type: ignore[arg-type]
            assert isinstance(ev, TlsRecord | Anomaly | TlsHandshakeInfo | Plaintext)
        if i % 5 == 4:
            session.gap(direction, 10, i)  # type: ignore[arg-type]
    session.finish(99)


@needs_corpus
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_real_stream_never_raises(data: st.DataObject) -> None:
    pieces, keylog = load(TLS12_CBC)
    i = data.draw(st.integers(0, len(pieces) - 1))
    direction, payload, ts = pieces[i]
    j = data.draw(st.integers(0, len(payload) - 1))
    mutated = payload[:j] + bytes([data.draw(st.integers(0, 255))]) + payload[j + 1 :]
    run([*pieces[:i], (direction, mutated, ts), *pieces[i + 1 :]], keylog)


def test_handshake_reassembly_skips_huge_unparsed_bodies() -> None:
    """A 400 KB Certificate is skipped unbuffered; messages around it still parse."""

    def msg(msg_type: int, body: bytes) -> bytes:
        return bytes([msg_type]) + len(body).to_bytes(3, "big") + body

    cert = msg(11, b"c" * (MAX_HANDSHAKE_MESSAGE + 150_000))
    stream = msg(8, b"\0\0") + cert + msg(20, b"f" * 32)
    reasm = HandshakeReassembler()
    out = []
    for i in range(0, len(stream), 16_384):
        out += reasm.feed(stream[i : i + 16_384])
        assert len(reasm.buf) <= 16_384 + 4
    assert out == [(8, b"\0\0"), (11, b""), (20, b"f" * 32)]
    with pytest.raises(DecodeError) as err:  # a parsed type that large is refused
        HandshakeReassembler().feed(
            msg(1, b"")[:1] + (MAX_HANDSHAKE_MESSAGE + 1).to_bytes(3, "big")
        )
    assert err.value.code == "handshake_too_long"
