"""FIX session parser: framing, CheckSum, BodyLength, resync, times, real captures.

Reference messages are encoded by ``simplefix`` (an independent implementation:
it computes BodyLength and CheckSum itself). Byte-vector tests run whole, one byte
at a time, and split at every offset (STYLE.md rule 13).

The reference messages live in ``helpers/fix_messages.py`` and the dpkt-based
in-order TCP extractor ``tcp_pieces`` in ``helpers/tcp_pieces.py`` (both shared
with other tests).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
import simplefix
from helpers.fix_messages import SOH, cancel_request, execution_report, logon, new_order_single
from helpers.paths import PUBLIC
from helpers.tcp_pieces import tcp_pieces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.fix import FixMessage, FixSession

ALL = [logon(), new_order_single(), execution_report(), cancel_request()]


def messages(events: list[object]) -> list[FixMessage]:
    return [e for e in events if isinstance(e, FixMessage)]


def anomalies(events: list[object]) -> list[Anomaly]:
    return [e for e in events if isinstance(e, Anomaly)]


def run(pieces: list[bytes], direction: str = "out") -> list[object]:
    """Feed ``pieces`` with times (i, i + 1000) for piece i; then finish."""
    s = FixSession(7)
    events: list[object] = []
    for i, piece in enumerate(pieces):
        events += s.feed(direction, piece, i, i + 1000)  # type: ignore[arg-type]
    return events + s.finish(10**9)


def without_times(m: FixMessage) -> tuple[object, ...]:
    return (m.stream_offset, m.msg_type, m.msg_seq_num, m.fields, m.checksum_ok, m.raw_length)


# --- Framing ------------------------------------------------------------------
def test_fields_and_named_attributes() -> None:
    events = run([b"".join(ALL)])
    assert not anomalies(events)
    lg, nos, er, cxl = messages(events)
    assert (lg.begin_string, lg.msg_type, lg.msg_seq_num, lg.target_comp_id) == (
        "FIXT.1.1", "A", 1, "Coinbase",
    )
    assert (96, "sig\x01with=soh") in lg.fields  # the data field kept its SOH
    assert (nos.begin_string, nos.cl_ord_id, nos.sender_comp_id) == ("FIX.4.2", "ord-1", "CLIENT1")
    assert nos.sending_time == "20240611-09:01:46.228"
    assert (er.order_id, er.exec_type, er.ord_status, er.text) == ("76", "0", "0", "accepté")
    assert [v for t, v in er.fields if t == 448] == ["P1", "P2"]  # group kept in order
    assert (cxl.orig_cl_ord_id, cxl.poss_dup, nos.poss_dup) == ("ord-1", True, False)
    for raw, m in zip(ALL, (lg, nos, er, cxl), strict=True):
        parsed = simplefix.FixParser()
        parsed.append_buffer(raw)
        ref = parsed.get_message()
        assert m.checksum_ok and m.raw_length == len(raw)
        assert m.body_length == int(ref.get(9))
        assert m.fields[-1] == (10, ref.get(10).decode())
        assert [t for t, _ in m.fields] == [int(t) for t, _ in ref.pairs]


def test_stream_offsets_and_piece_times() -> None:
    stream = b"".join(ALL)
    events = run([stream])
    starts = [0]
    for raw in ALL[:-1]:
        starts.append(starts[-1] + len(raw))
    assert [m.stream_offset for m in messages(events)] == starts
    assert all((m.ts_first, m.ts_last) == (0, 1000) for m in messages(events))


def _expected_times(cuts: list[int], start: int, end: int) -> tuple[int, int]:
    """Piece index holding byte ``start`` (ts_first) and byte ``end - 1`` (ts_last + 1000)."""
    first = sum(1 for c in cuts if c <= start)
    last = sum(1 for c in cuts if c <= end - 1)
    return first, last + 1000


@pytest.mark.parametrize("raw", ALL, ids=["logon", "nos", "er", "cancel"])
def test_byte_by_byte(raw: bytes) -> None:
    events = run([raw[i : i + 1] for i in range(len(raw))])
    (m,) = messages(events)
    assert not anomalies(events)
    assert (m.ts_first, m.ts_last) == (0, len(raw) - 1 + 1000)
    assert without_times(m) == without_times(messages(run([raw]))[0])


def test_split_at_every_offset() -> None:
    stream = b"".join(ALL)
    whole = [without_times(m) for m in messages(run([stream]))]
    for cut in range(1, len(stream)):
        events = run([stream[:cut], stream[cut:]])
        assert not anomalies(events), cut
        got = messages(events)
        assert [without_times(m) for m in got] == whole, cut
        for m in got:
            assert (m.ts_first, m.ts_last) == _expected_times(
                [cut], m.stream_offset, m.stream_offset + m.raw_length
            )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=40))
def test_any_segmentation_same_messages_and_times(cut_points: list[int]) -> None:
    stream = b"".join(ALL * 3)
    cuts = sorted({c % len(stream) for c in cut_points} - {0})
    bounds = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in pairwise(bounds)]
    events = run(pieces)
    assert not anomalies(events)
    got = messages(events)
    assert len(got) == 12
    for m in got:
        assert (m.ts_first, m.ts_last) == _expected_times(
            cuts, m.stream_offset, m.stream_offset + m.raw_length
        )


# --- Malformed input ----------------------------------------------------------
def _with_checksum(raw: bytes, value: int) -> bytes:
    return raw[:-4] + b"%03d\x01" % value


def test_bad_checksum_kept_with_flag() -> None:
    nos = new_order_single()
    good = int(nos[-4:-1])
    events = run([_with_checksum(nos, (good + 1) % 256) + cancel_request()])
    first, second = messages(events)
    assert not first.checksum_ok and first.cl_ord_id == "ord-1"
    assert second.checksum_ok
    (a,) = anomalies(events)
    assert (a.code, a.layer, a.stream_offset) == ("bad_checksum", "fix", 0)


def test_published_binance_example_checksum() -> None:
    """venues.md B5 (Binance docs): BodyLength 114 is right, CheckSum 016 is not.

    simplefix re-encoding the same fields gives 048, as we compute; the doc
    example was evidently edited after encoding. Kept, flagged, not dropped.
    """
    b5 = (
        "8=FIX.4.4|9=114|35=D|34=2|49=qNXO12fH|52=20240611-09:01:46.228|56=SPOT|"
        "11=1718096506197867067|38=5|40=2|44=10|54=1|55=LTCBNB|59=4|10=016|"
    ).replace("|", "\x01").encode()
    events = run([b5])
    (m,) = messages(events)
    assert (m.body_length, m.checksum_ok, m.cl_ord_id) == (114, False, "1718096506197867067")
    ref = simplefix.FixMessage()
    for tag, value in m.fields:
        if tag not in (8, 9, 10):
            ref.append_pair(tag, value)
    ref.append_pair(8, "FIX.4.4", header=True)
    assert ref.encode() == b5[:-4] + b"048\x01"
    assert [a.code for a in anomalies(events)] == ["bad_checksum"]


@pytest.mark.parametrize("delta", [-5, -1, 1, 7, 500])
def test_lying_body_length_salvaged(delta: int) -> None:
    nos = new_order_single()
    declared = int(nos.split(SOH)[1][2:])
    lying = nos.replace(b"\x019=%d\x01" % declared, b"\x019=%d\x01" % (declared + delta), 1)
    events = run([lying + execution_report() + cancel_request()])
    got = messages(events)
    assert [m.msg_type for m in got] == ["D", "8", "F"]
    assert got[0].body_length == declared + delta and not got[0].checksum_ok
    assert got[1].checksum_ok and got[2].checksum_ok
    codes = [a.code for a in anomalies(events)]
    assert codes == ["bad_body_length", "bad_checksum"]


def test_lying_body_length_split_every_offset() -> None:
    nos = new_order_single()
    lying = nos.replace(b"\x019=", b"\x019=1", 1)  # 10x too long
    stream = lying + execution_report()
    for cut in range(1, len(stream)):
        events = run([stream[:cut], stream[cut:]])
        assert [m.msg_type for m in messages(events)] == ["D", "8"], cut


def test_garbage_between_messages() -> None:
    garbage = b"\r\n\x00\xffnot fix at all 8=FOO\x01"
    events = run([new_order_single() + garbage + execution_report()])
    assert [m.msg_type for m in messages(events)] == ["D", "8"]
    (a,) = anomalies(events)
    assert a.code == "garbage_skipped"
    assert a.stream_offset == len(new_order_single())
    assert a.detail == f"skipped {len(garbage)} bytes"


def test_midstream_start() -> None:
    nos = new_order_single()
    tail = nos[17:]
    stream = tail + execution_report() + cancel_request()
    for pieces in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        events = run(pieces)
        assert [m.msg_type for m in messages(events)] == ["8", "F"]
        (a,) = anomalies(events)
        assert (a.code, a.stream_offset, a.ts) == ("midstream_resync", 0, 0)
        assert messages(events)[0].stream_offset == len(tail)


def test_gap_then_resync() -> None:
    nos, er, cxl = new_order_single(), execution_report(), cancel_request()
    s = FixSession(1)
    events = s.feed("in", nos + er[:30], 1, 2)
    events += s.gap("in", 50, 3)
    events += s.feed("in", er[80:] + cxl, 4, 5)
    events += s.finish(6)
    got = messages(events)
    assert [m.msg_type for m in got] == ["D", "F"]
    assert got[1].stream_offset == len(nos) + len(er)  # gap bytes still count
    assert [a.code for a in anomalies(events)] == ["stream_gap", "gap_resync"]
    assert anomalies(events)[1].stream_offset == len(nos) + 80


def test_truncated_at_finish() -> None:
    nos = new_order_single()
    events = run([nos + execution_report()[:40]])
    assert [m.msg_type for m in messages(events)] == ["D"]
    (a,) = anomalies(events)
    assert (a.code, a.stream_offset) == ("truncated_message", len(nos))


def test_odd_but_legal_values_and_bad_fields() -> None:
    """"=" inside a value, an empty value, Latin-1 bytes, and a non-numeric tag."""
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, "B", header=True)
    m.append_pair(148, "a=b==c")
    m.append_pair(58, b"caf\xe9")
    m.append_pair(1, "")
    m.append_pair(9999, "oops")
    raw = m.encode().replace(b"\x019999=", b"\x0199x9=")  # simplefix refuses bad tags
    raw = _with_checksum(raw, sum(raw[:-7]) % 256)
    events = run([raw])
    (msg,) = messages(events)
    assert msg.fields[3:6] == [(148, "a=b==c"), (58, "caf\xe9"), (1, "")]
    assert msg.checksum_ok and len(msg.fields) == 7  # 8, 9, 35, 148, 58, 1, 10
    (a,) = anomalies(events)
    assert (a.code, a.stream_offset) == ("bad_field", 0)


def test_bad_header_and_absurd_length() -> None:
    stream = b"8=FIX.4.4\x019=12x\x01" + b"8=FIX.4.4\x0135=D\x01" + new_order_single()
    events = run([stream])
    assert [m.msg_type for m in messages(events)] == ["D"]
    assert {a.code for a in anomalies(events)} == {"bad_header"}


def test_buffer_is_capped() -> None:
    cap = 4096
    s = FixSession(1, max_message=cap)
    events = s.feed("out", b"8=FIX.4.4\x019=99999999\x0135=D\x01", 0, 0)
    for i in range(50):
        events += s.feed("out", b"A" * 1000, i, i)
        assert len(s._streams["out"].buf) <= cap + 1000
    events += s.feed("out", new_order_single(), 99, 99)
    events += s.finish(100)
    assert [m.msg_type for m in messages(events)] == ["D"]
    assert anomalies(events)[0].code == "message_too_large"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_random_bytes_never_raise(data: bytes, step: int) -> None:
    s = FixSession(1, max_message=256)
    events: list[object] = []
    for i in range(0, len(data), step):
        events += s.feed("in", data[i : i + step], i, i)
    events += s.gap("in", 3, 1)
    events += s.feed("in", data, 2, 2)
    events += s.finish(3)
    assert all(isinstance(e, FixMessage | Anomaly) for e in events)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([*ALL, b"8=FIX", b"\x0110=", b"8=FIX.4.4\x019=5\x01", b"junk"]),
             max_size=8),
    st.integers(min_value=1, max_value=64),
)
def test_fix_like_noise_never_raises(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    events = run([data[i : i + step] for i in range(0, len(data), step)])
    offsets = [m.stream_offset for m in messages(events)]
    assert offsets == sorted(offsets)


# --- Public captures (tshark is the oracle) ----------------------------------
def _parse_capture(path: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    types: Counter[str] = Counter()
    begins: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for items in tcp_pieces(path).values():
        s = FixSession(0)
        events: list[object] = []
        for kind, value, ts in items:
            if kind == "data":
                events += s.feed("out", value, ts, ts)  # type: ignore[arg-type]
            else:
                events += s.gap("out", value, ts)  # type: ignore[arg-type]
        events += s.finish(0)
        for m in messages(events):
            types[m.msg_type or ""] += 1
            begins[m.begin_string] += 1
            assert m.checksum_ok
        codes.update(a.code for a in anomalies(events))
    return types, begins, codes


def _analysis(rel: str) -> dict:
    for entry in json.loads((PUBLIC / "analysis.json").read_text()):
        if entry["path"] == rel:
            return entry
    raise KeyError(rel)


def _tshark_msgtypes(path: Path, display_filter: str) -> Counter[str]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "fix.MsgType"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return Counter(v for line in out.splitlines() for v in line.split(",") if v)


def test_public_fix2_pcap() -> None:
    """FIXT.1.1, two full sessions. analysis.json counts every frame tshark dissects
    as FIX, retransmissions included (72 of 446); we see each message once."""
    path = PUBLIC / "fix/ndpi/fix2.pcap"
    if not path.exists():
        pytest.skip("public captures absent")
    types, begins, codes = _parse_capture(path)
    assert not codes
    tshark_counts = Counter(_analysis("fix/ndpi/fix2.pcap")["fix_msgtypes"])
    assert begins == Counter({"FIXT.1.1": 374})
    assert types == Counter(
        {"0": 88, "1": 88, "5": 22, "A": 44, "BC": 22, "BD": 22, "BE": 44, "BF": 22, "j": 22}
    )
    retransmitted = tshark_counts - types
    assert sum(retransmitted.values()) == 72 and not types - tshark_counts
    if shutil.which("tshark"):
        assert _tshark_msgtypes(path, "fix && !tcp.analysis.retransmission") == types


def test_public_fix_pcap_midstream() -> None:
    """FIX.4.1 starting mid-connection, interleaved with a proprietary binary feed
    (``8=O|9=..|35=P`` + binary). tshark dissects 596 frames as FIX but only 34
    carry a FIX BeginString; those 34 are exactly what we parse."""
    path = PUBLIC / "fix/ndpi/fix.pcap"
    if not path.exists():
        pytest.skip("public captures absent")
    types, begins, codes = _parse_capture(path)
    entry = _analysis("fix/ndpi/fix.pcap")
    assert types == Counter(entry["fix_msgtypes"])
    assert begins == Counter(entry["fix_begin"])
    assert codes["midstream_resync"] > 0  # streams start inside the feed
    assert set(codes) <= {"midstream_resync", "garbage_skipped", "bad_body_length",
                          "truncated_message"}
