"""RFC 9113 §5.1 stream states, as a table, seen from the client ("local").

How this works. The capture shows both endpoints, so one table serves: "local" is the
client (direction ``out``: its frames are ``SEND_*``), "remote" the server (``in``:
``RECV_*``). A frame moves its stream by ``TRANSITIONS``: HEADERS and DATA first, then
END_STREAM when the frame carries it (``inputs``); PUSH_PROMISE moves the *promised*
stream. A pair with no row is a protocol error in the RFC's words ("MUST treat ... as a
connection error of type PROTOCOL_ERROR", or STREAM_CLOSED on a closed stream):
``Streams.fire`` returns it as a detail for an anomaly row, never raises, and the stream
stays where it was (the message parser goes on regardless).

The RFC's single "closed" state is split by how it was reached, because §5.1 lets
frames already in flight arrive after a RST_STREAM ("An endpoint MUST ignore frames that
it receives on closed streams after it has sent a RST_STREAM frame"): after a reset by
one side, the other side's frames are still accepted, not the resetting side's. Closed by
END_STREAM both ways, only RST_STREAM (and PRIORITY, WINDOW_UPDATE, which move nothing)
may follow "for a short period".

What the table is fed: only streams whose opening the capture showed (the client's
HEADERS, or a PUSH_PROMISE reserving them: ``OPENINGS``) on a connection read from its
preface. A
capture that began mid-connection or lost framing (``Streams.tracking`` off) cannot tell
an idle stream from one opened before it, so nothing is checked there.
"""

from __future__ import annotations

from enum import Enum, auto

from ..events import Direction


class StreamState(Enum):
    """§5.1 "Stream States" (local = the client)."""

    IDLE = auto()
    RESERVED_LOCAL = auto()  # the client promised it (clients cannot push: §8.4)
    RESERVED_REMOTE = auto()  # the server promised it in a PUSH_PROMISE
    OPEN = auto()
    HALF_CLOSED_LOCAL = auto()  # the client sent END_STREAM
    HALF_CLOSED_REMOTE = auto()  # the server sent END_STREAM
    CLOSED = auto()  # both sent END_STREAM
    RESET_LOCAL = auto()  # closed by the client's RST_STREAM (server frames in flight ok)
    RESET_REMOTE = auto()  # closed by the server's RST_STREAM (client frames in flight ok)


class StreamInput(Enum):
    """A frame (or its END_STREAM flag) on the stream, by who sent it."""

    SEND_HEADERS = auto()
    RECV_HEADERS = auto()
    SEND_PUSH_PROMISE = auto()  # on the promised stream
    RECV_PUSH_PROMISE = auto()
    SEND_DATA = auto()
    RECV_DATA = auto()
    SEND_END_STREAM = auto()
    RECV_END_STREAM = auto()
    SEND_RST_STREAM = auto()
    RECV_RST_STREAM = auto()


S, In = StreamState, StreamInput
_SEND = (In.SEND_HEADERS, In.SEND_DATA, In.SEND_END_STREAM)
_RECV = (In.RECV_HEADERS, In.RECV_DATA, In.RECV_END_STREAM)
_RESETS = {In.SEND_RST_STREAM: S.RESET_LOCAL, In.RECV_RST_STREAM: S.RESET_REMOTE}

TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    # idle: "Sending a HEADERS frame ... causes the stream to become "open""; a
    # PUSH_PROMISE reserves the promised stream (only servers push)
    (S.IDLE, In.SEND_HEADERS): S.OPEN,
    (S.IDLE, In.RECV_PUSH_PROMISE): S.RESERVED_REMOTE,
    # reserved: the promising side's HEADERS open its half; either side may reset
    (S.RESERVED_LOCAL, In.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.RESERVED_REMOTE, In.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    **{(s, rst): closed for s in (S.RESERVED_LOCAL, S.RESERVED_REMOTE)
       for rst, closed in _RESETS.items()},
    # open: both send (more HEADERS are 1xx responses or trailers); END_STREAM half-closes
    **{(S.OPEN, i): S.OPEN for i in (In.SEND_HEADERS, In.RECV_HEADERS, In.SEND_DATA,
                                     In.RECV_DATA)},
    (S.OPEN, In.SEND_END_STREAM): S.HALF_CLOSED_LOCAL,
    (S.OPEN, In.RECV_END_STREAM): S.HALF_CLOSED_REMOTE,
    # half-closed: only the other side still sends; its END_STREAM closes
    (S.HALF_CLOSED_LOCAL, In.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, In.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, In.RECV_END_STREAM): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, In.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, In.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, In.SEND_END_STREAM): S.CLOSED,
    **{(s, rst): closed for s in (S.OPEN, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE)
       for rst, closed in _RESETS.items()},
    # closed: RST_STREAM may still come (a race, or the answer to a late frame)
    **{(s, rst): s for s in (S.CLOSED, S.RESET_LOCAL, S.RESET_REMOTE) for rst in _RESETS},
    # after a reset, the other side's frames in flight are ignored, not errors
    **{(S.RESET_LOCAL, i): S.RESET_LOCAL for i in _RECV},
    **{(S.RESET_REMOTE, i): S.RESET_REMOTE for i in _SEND},
}
"""``(state, input) -> next state`` (§5.1, figure 2); a pair with no row is a protocol
error (``Streams.fire``)."""

SECTION = "RFC 9113 §5.1"
OPENINGS = (In.SEND_HEADERS, In.RECV_PUSH_PROMISE, In.SEND_PUSH_PROMISE)
"""The frames a stream is first checked from: the client's HEADERS, a PUSH_PROMISE. A
server's HEADERS on a stream not seen open says nothing (a capture of one direction,
or one that missed the request), so it is not checked as the idle stream's."""


def inputs(direction: Direction, frame: str, end_stream: bool) -> tuple[StreamInput, ...]:
    """The inputs of a ``frame`` ("HEADERS", "DATA", "PUSH_PROMISE", "RST_STREAM") sent
    in ``direction``: END_STREAM after the frame's own."""
    side = "SEND" if direction == "out" else "RECV"
    first = StreamInput[f"{side}_{frame}"]
    return (first, StreamInput[f"{side}_END_STREAM"]) if end_stream else (first,)


class Streams:
    """The state of each stream of one connection (bounded: ``limit`` entries, the
    oldest forgotten first; a forgotten or never-seen old stream is not checked)."""

    def __init__(self, *, tracking: bool = True, limit: int = 8192) -> None:
        self.tracking = tracking
        self.limit = limit
        self.state: dict[int, StreamState] = {}
        self._highest = [0, 0]  # highest stream id seen opening, per parity (server, client)

    def fire(self, sid: int, inputs_: tuple[StreamInput, ...]) -> str | None:
        """Move stream ``sid`` by each input; the detail of the first protocol error
        (then the rest is not fired), else None."""
        if not self.tracking or sid == 0:
            return None
        state = self.state.get(sid)
        if state is None:
            # only a stream the capture saw open is checked (module docstring)
            if inputs_[0] not in OPENINGS or sid <= self._highest[sid & 1]:
                return None
            self._highest[sid & 1] = sid
            state = S.IDLE
        for i in inputs_:
            nxt = TRANSITIONS.get((state, i))
            if nxt is None:
                self._set(sid, state)
                return (f"stream {sid}: {i.name.lower()} in state {state.name.lower()} "
                        f"({SECTION})")
            state = nxt
        self._set(sid, state)
        return None

    def _set(self, sid: int, state: StreamState) -> None:
        if state is S.IDLE:
            return  # (an error on the opening frame: the stream never opened)
        self.state[sid] = state
        if len(self.state) > self.limit:
            del self.state[next(iter(self.state))]
