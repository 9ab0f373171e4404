"""The state one ``Http2Session`` keeps: per direction (``Side``), per header block
being collected (``Block``) and per message being read on a stream (``Message``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from ..piecebuf import PieceBuffer
from .frames import DEFAULT_MAX_FRAME_SIZE
from .hpack_decode import HpackDecoder


class State(Enum):
    """Where one direction's parser stands."""

    START = auto()  # before the preface (out) or the first SETTINGS frame (in)
    FRAMES = auto()  # at a frame boundary
    RESYNC = auto()  # looking for a frame boundary (mid-connection start, after a gap)


@dataclass(slots=True, kw_only=True)
class Message:
    """A message being read on one stream in one direction."""

    kind: str
    stream_id: int
    stream_offset: int
    ts_first: int
    header_ts_last: int
    request_index: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    kept: int = 0
    wire: int = 0
    truncated: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def pseudo(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


@dataclass(slots=True)
class Block:
    """A header block being collected: HEADERS / PUSH_PROMISE, then CONTINUATION."""

    stream_id: int
    flags: int  # of the opening frame (END_STREAM lives there)
    stream_offset: int
    ts_first: int
    promised: int | None
    fragments: list[bytes]
    size: int


@dataclass(slots=True)
class Side:
    buf: PieceBuffer
    decoder: HpackDecoder
    state: State = State.START
    # SETTINGS_MAX_FRAME_SIZE the *peer* announced: the limit on frames sent this way
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    block: Block | None = None
    skip: int = 0  # octets of a frame cut by a capture gap still to drop
    skip_ends: int | None = None  # the stream whose END_STREAM is on the frame skipped
    msgs: dict[int, Message] = field(default_factory=dict)  # stream id -> message
