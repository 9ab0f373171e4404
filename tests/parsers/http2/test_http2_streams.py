"""RFC 9113 §5.1 stream states (``parsers.http2.stream``): every (state, input) pair of
the table, and the session turning a protocol error into an anomaly row, never an
exception, on frames encoded by hand from §4.1 / §6.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.http import HttpMessage
from pcapflow.parsers.http2 import PREFACE, Http2Session
from pcapflow.parsers.http2 import stream as h2stream
from pcapflow.parsers.http2.stream import (
    OPENINGS,
    TRANSITIONS,
    StreamInput,
    Streams,
    StreamState,
    inputs,
)

PAIRS = [(s, i) for s in StreamState for i in StreamInput]
DATA, HEADERS, RST, SETTINGS, PUSH = 0, 1, 3, 4, 5
ES, EH = 0x1, 0x4
GET = bytes.fromhex("828684410f7777772e6578616d706c652e636f6d")  # RFC 7541 C.3.1
STATUS_200 = b"\x88"  # indexed :status 200


def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    """§4.1: Length (24), Type (8), Flags (8), R (1), Stream Identifier (31), payload."""
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + (
        payload)


@pytest.mark.parametrize(("state", "given"), [
    pytest.param(s, i, id=f"{s.name}-{i.name}") for s, i in PAIRS])
def test_every_pair_moves_by_its_row_or_is_a_protocol_error(
        state: StreamState, given: StreamInput) -> None:
    """A tracked stream in ``state`` takes ``given``: its row's next state and no
    problem, or (no row) a problem naming the pair and the section, the state kept."""
    streams = Streams()
    streams.state[7] = state
    problem = streams.fire(7, (given,))
    if (state, given) in TRANSITIONS:
        assert problem is None
        assert streams.state[7] is TRANSITIONS[(state, given)]
    else:
        assert problem == (f"stream 7: {given.name.lower()} in state {state.name.lower()} "
                           "(RFC 9113 §5.1)")
        assert streams.state[7] is state


def test_the_table_is_the_rfc_figure() -> None:
    """Figure 2 of §5.1 read edge by edge (local = the client), plus the closed split
    by who reset (frames in flight from the other side are accepted)."""
    S, In = StreamState, StreamInput
    assert TRANSITIONS[(S.IDLE, In.SEND_HEADERS)] is S.OPEN
    assert TRANSITIONS[(S.IDLE, In.RECV_PUSH_PROMISE)] is S.RESERVED_REMOTE
    assert (S.IDLE, In.SEND_PUSH_PROMISE) not in TRANSITIONS  # §8.4: clients never push
    assert (S.IDLE, In.SEND_DATA) not in TRANSITIONS  # DATA on idle: PROTOCOL_ERROR
    assert TRANSITIONS[(S.RESERVED_REMOTE, In.RECV_HEADERS)] is S.HALF_CLOSED_LOCAL
    assert TRANSITIONS[(S.RESERVED_LOCAL, In.SEND_HEADERS)] is S.HALF_CLOSED_REMOTE
    assert TRANSITIONS[(S.OPEN, In.SEND_END_STREAM)] is S.HALF_CLOSED_LOCAL
    assert TRANSITIONS[(S.OPEN, In.RECV_END_STREAM)] is S.HALF_CLOSED_REMOTE
    assert TRANSITIONS[(S.HALF_CLOSED_LOCAL, In.RECV_END_STREAM)] is S.CLOSED
    assert TRANSITIONS[(S.HALF_CLOSED_REMOTE, In.SEND_END_STREAM)] is S.CLOSED
    assert (S.HALF_CLOSED_LOCAL, In.SEND_DATA) not in TRANSITIONS  # STREAM_CLOSED
    assert (S.CLOSED, In.RECV_DATA) not in TRANSITIONS
    for s in (S.RESERVED_LOCAL, S.RESERVED_REMOTE, S.OPEN, S.HALF_CLOSED_LOCAL,
              S.HALF_CLOSED_REMOTE):
        assert TRANSITIONS[(s, In.SEND_RST_STREAM)] is S.RESET_LOCAL
        assert TRANSITIONS[(s, In.RECV_RST_STREAM)] is S.RESET_REMOTE
    assert TRANSITIONS[(S.RESET_LOCAL, In.RECV_DATA)] is S.RESET_LOCAL
    assert (S.RESET_LOCAL, In.SEND_DATA) not in TRANSITIONS
    assert {s for s, _ in TRANSITIONS} == set(StreamState)  # every state has a way on
    # reached: all but idle, and reserved (local), which only a pushing client reaches
    assert set(TRANSITIONS.values()) == set(StreamState) - {S.IDLE, S.RESERVED_LOCAL}


def test_only_streams_seen_opening_are_checked() -> None:
    """A stream first seen with anything but an opening (a capture that missed its
    HEADERS), an old id, stream 0, or a connection not read from its start: unchecked."""
    streams = Streams()
    assert streams.fire(1, inputs("in", "HEADERS", False)) is None  # response, no request
    assert streams.fire(3, inputs("out", "DATA", True)) is None
    assert streams.state == {}
    assert streams.fire(5, inputs("out", "HEADERS", True)) is None
    assert streams.state == {5: StreamState.HALF_CLOSED_LOCAL}
    assert streams.fire(3, inputs("out", "HEADERS", False)) is None  # below 5: unchecked
    assert 3 not in streams.state
    assert streams.fire(0, inputs("out", "DATA", False)) is None
    off = Streams(tracking=False)
    assert off.fire(1, inputs("out", "HEADERS", True)) is None
    assert off.fire(1, inputs("out", "DATA", False)) is None and off.state == {}
    assert set(OPENINGS) == {StreamInput.SEND_HEADERS, StreamInput.RECV_PUSH_PROMISE,
                             StreamInput.SEND_PUSH_PROMISE}


def test_an_error_on_the_opening_frame_leaves_the_stream_unopened() -> None:
    streams = Streams()
    problem = streams.fire(2, inputs("out", "PUSH_PROMISE", False))
    assert problem == "stream 2: send_push_promise in state idle (RFC 9113 §5.1)"
    assert 2 not in streams.state


def test_the_table_is_bounded() -> None:
    streams = Streams(limit=4)
    for sid in range(1, 20, 2):
        streams.fire(sid, inputs("out", "HEADERS", True))
    assert list(streams.state) == [13, 15, 17, 19]


def test_inputs_of_a_frame() -> None:
    assert inputs("out", "HEADERS", True) == (StreamInput.SEND_HEADERS,
                                              StreamInput.SEND_END_STREAM)
    assert inputs("in", "DATA", False) == (StreamInput.RECV_DATA,)
    assert inputs("in", "RST_STREAM", False) == (StreamInput.RECV_RST_STREAM,)


# --- the session ------------------------------------------------------------------------

def _session(client: bytes, server: bytes) -> tuple[Http2Session, list[object]]:
    s = Http2Session(1)
    events = s.feed("out", PREFACE + _frame(SETTINGS, 0, 0, b"") + client, 0, 1)
    events += s.feed("in", _frame(SETTINGS, 0, 0, b"") + server, 2, 3)
    return s, events + s.finish(4)


def _state_errors(events: list[object]) -> list[tuple[str, str]]:
    return [(e.direction, e.detail) for e in events
            if isinstance(e, Anomaly) and e.code == "stream_state_error"]


def test_a_whole_exchange_closes_its_stream_without_a_word() -> None:
    s, events = _session(_frame(HEADERS, EH | ES, 1, GET),
                         _frame(HEADERS, EH, 1, STATUS_200) + _frame(DATA, ES, 1, b"ok"))
    assert not [e for e in events if isinstance(e, Anomaly)]
    assert s._streams.state == {1: StreamState.CLOSED}
    assert [m.kind for m in events if isinstance(m, HttpMessage)] == ["request", "response"]


def test_client_data_after_its_end_stream_is_an_anomaly_and_parsing_goes_on() -> None:
    """§5.1 half-closed (local): "An endpoint MUST NOT send frames other than
    WINDOW_UPDATE, PRIORITY, and RST_STREAM in this state"."""
    s, events = _session(
        _frame(HEADERS, EH | ES, 1, GET) + _frame(DATA, ES, 1, b"late")
        + _frame(HEADERS, EH | ES, 3, GET),
        _frame(HEADERS, EH | ES, 1, STATUS_200) + _frame(HEADERS, EH | ES, 3, STATUS_200))
    assert _state_errors(events) == [
        ("out", "stream 1: send_data in state half_closed_local (RFC 9113 §5.1)")]
    kinds = [(m.kind, m.stream_id) for m in events if isinstance(m, HttpMessage)]
    assert ("request", 3) in kinds and ("response", 3) in kinds
    assert s._streams.state[3] is StreamState.CLOSED


def test_frames_in_flight_after_a_reset_are_not_errors() -> None:
    """The client cancels; the server's DATA already sent still arrives (§5.1 closed)."""
    _s, events = _session(
        _frame(HEADERS, EH | ES, 1, GET) + _frame(RST, 0, 1, (8).to_bytes(4, "big")),
        _frame(HEADERS, EH, 1, STATUS_200) + _frame(DATA, ES, 1, b"late"))
    assert _state_errors(events) == []


def test_a_pushed_stream_is_reserved_then_half_closed() -> None:
    promise = _frame(PUSH, EH, 1, (2).to_bytes(4, "big") + GET)
    s, events = _session(_frame(HEADERS, EH | ES, 1, GET),
                         promise + _frame(HEADERS, EH | ES, 1, STATUS_200)
                         + _frame(HEADERS, EH, 2, STATUS_200))
    assert _state_errors(events) == []
    assert s._streams.state == {1: StreamState.CLOSED, 2: StreamState.HALF_CLOSED_LOCAL}
    # the pushed response ends: closed
    events = s.feed("in", _frame(DATA, ES, 2, b"x"), 5, 6)
    assert _state_errors(events) == [] and s._streams.state[2] is StreamState.CLOSED


def test_a_client_push_promise_is_an_anomaly() -> None:
    _s, events = _session(_frame(HEADERS, EH, 1, GET)
                          + _frame(PUSH, EH, 1, (3).to_bytes(4, "big") + GET), b"")
    assert _state_errors(events) == [
        ("out", "stream 3: send_push_promise in state idle (RFC 9113 §5.1)")]


def test_mid_connection_nothing_is_checked() -> None:
    """No preface: the capture began inside the connection, streams are unknown."""
    s = Http2Session(1)
    events = s.feed("out", _frame(HEADERS, EH | ES, 1, GET) + _frame(DATA, ES, 1, b"x")
                    + _frame(HEADERS, EH | ES, 3, GET), 0, 1)
    assert s.mid_stream and not s._streams.tracking
    assert _state_errors(events) == []


def test_h2c_upgrade_starts_stream_one_half_closed_local() -> None:
    """RFC 7540 §3.2: the HTTP/1.1 upgrade request is stream 1, half-closed (local)."""
    s = Http2Session(1, upgrade_request_index=0)
    assert s._streams.state == {1: StreamState.HALF_CLOSED_LOCAL}


def test_random_frames_never_raise() -> None:
    """Every frame type and flag combination on a few streams, in both directions: the
    session may complain, never raise."""
    import itertools

    s = Http2Session(1)
    s.feed("out", PREFACE, 0, 0)
    s.feed("in", _frame(SETTINGS, 0, 0, b""), 0, 0)
    for k, (ftype, flags, sid, d) in enumerate(itertools.product(
            (DATA, HEADERS, RST, PUSH), (0, ES | EH), (1, 2, 3), ("out", "in"))):
        payload = {RST: b"\0\0\0\x08", PUSH: (4 + 2 * k).to_bytes(4, "big") + GET,
                   HEADERS: GET}.get(ftype, b"d")
        for e in s.feed(d, _frame(ftype, flags, sid, payload), k, k):  # type: ignore[arg-type]
            assert isinstance(e, Anomaly | HttpMessage)
    s.finish(10**6)


def test_every_stream_change_goes_through_the_table() -> None:
    """Only ``Streams._set`` writes a stream's state (from ``fire``'s table lookups)."""
    tree = ast.parse(inspect.getsource(h2stream))
    writers = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                for t in node.targets if isinstance(node, ast.Assign) else []:
                    if isinstance(t, ast.Subscript) and "state" in ast.unparse(t.value):
                        writers.add(fn.name)
    assert writers == {"_set"}
