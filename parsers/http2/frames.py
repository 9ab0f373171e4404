"""HTTP/2 frame layer (RFC 9113 §4, §6): the frame header, the frame types, padding.

The rule this module keeps: it only *reads* frames, it holds no state. ``FRAME_HEADER``
is the 9-octet header of §4.1 declared once; ``plausible`` says whether 9 octets could
be a frame header (used to resynchronise a capture that starts mid-connection, where
"the next frame boundary" is unknown); ``strip_padding`` removes §6.1 padding and the
§6.2 priority block from a DATA / HEADERS / PUSH_PROMISE payload.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

# ---- §3.4: HTTP/2 connection preface -----------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
""""the connection preface starts with the string PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"."""

# ---- §4.1: frame format --------------------------------------------------------------
FRAME_HEADER = struct.Struct(">HBBBI")
"""Length (24 bits, read as 16 + 8), Type (8), Flags (8), R (1) + Stream Identifier (31)."""
FRAME_HEADER_LEN = 9
STREAM_ID_MASK = 0x7FFFFFFF
MAX_FRAME_SIZE_LIMIT = (1 << 24) - 1
"""§6.5.2: SETTINGS_MAX_FRAME_SIZE is at most 2^24-1."""
DEFAULT_MAX_FRAME_SIZE = 1 << 14
"""§6.5.2: "The initial value is 2^14 (16,384) octets"."""


class FrameType(IntEnum):
    """§6 frame types (§11.2 registry)."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


# ---- frame flags (§6.x) -----------------------------------------------------------------
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

DEFINED_FLAGS: dict[int, int] = {
    FrameType.DATA: END_STREAM | PADDED,
    FrameType.HEADERS: END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
    FrameType.PRIORITY: 0,
    FrameType.RST_STREAM: 0,
    FrameType.SETTINGS: ACK,
    FrameType.PUSH_PROMISE: END_HEADERS | PADDED,
    FrameType.PING: ACK,
    FrameType.GOAWAY: 0,
    FrameType.WINDOW_UPDATE: 0,
    FrameType.CONTINUATION: END_HEADERS,
}
"""Flags each type defines; §4.1: "Unused flags ... MUST be ignored on receipt", so
they only count against a frame when resynchronising (``plausible``)."""

FIXED_LENGTH: dict[int, int] = {
    FrameType.PRIORITY: 5,  # §6.3
    FrameType.RST_STREAM: 4,  # §6.4
    FrameType.PING: 8,  # §6.7
    FrameType.WINDOW_UPDATE: 4,  # §6.9
}
"""Frame types whose payload length is fixed; another length is a FRAME_SIZE_ERROR."""

ON_STREAM_ZERO = frozenset({FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY})
"""Connection-level frames: "MUST NOT" be sent on a stream other than 0 (and the
stream-level ones MUST NOT be sent on stream 0); WINDOW_UPDATE may be either."""


# ---- §6.5.2: SETTINGS parameters --------------------------------------------------------
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTING = struct.Struct(">HI")
"""§6.5.1: Identifier (16), Value (32)."""

# ---- §7: error codes ------------------------------------------------------------------------
ERROR_CODES: dict[int, str] = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM", 0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}


def error_name(code: int) -> str:
    """``0x8`` -> ``"CANCEL"``; an unregistered code as hex."""
    return ERROR_CODES.get(code, f"0x{code:x}")


class FrameHeader(NamedTuple):
    """A decoded §4.1 frame header."""

    length: int
    type: int
    flags: int
    stream_id: int


def parse_header(data: bytes | bytearray | memoryview, pos: int = 0) -> FrameHeader:
    """The frame header at ``data[pos:pos+9]`` (the caller checked there are 9 octets)."""
    hi, lo, ftype, flags, sid = FRAME_HEADER.unpack_from(data, pos)
    return FrameHeader(hi << 8 | lo, ftype, flags, sid & STREAM_ID_MASK)


def plausible(data: bytes | bytearray | memoryview, pos: int, max_frame_size: int) -> bool:
    """Could the 9 octets at ``pos`` be a frame header? Strict, for resynchronisation:
    a known type, only its defined flags, the reserved bit clear, a length within the
    limit (and the fixed length where the type has one), not an empty frame that carries
    nothing, and a stream id that the type allows."""
    hi, lo, ftype, flags, raw_sid = FRAME_HEADER.unpack_from(data, pos)
    length = hi << 8 | lo
    if ftype > FrameType.CONTINUATION or raw_sid & 0x80000000 or length > max_frame_size:
        return False
    if flags & ~DEFINED_FLAGS[ftype]:
        return False
    fixed = FIXED_LENGTH.get(ftype)
    if fixed is not None and length != fixed:
        return False
    if ftype == FrameType.SETTINGS and (length % SETTING.size or (flags & ACK and length)):
        return False
    if ftype == FrameType.GOAWAY and length < 8:
        return False
    if length == 0 and (ftype in (FrameType.HEADERS, FrameType.CONTINUATION,
                                  FrameType.PUSH_PROMISE)
                        or (ftype == FrameType.DATA and not flags & END_STREAM)):
        return False  # legal but pointless; nine zero octets would pass for one
    if ftype in ON_STREAM_ZERO:
        return raw_sid == 0
    return ftype == FrameType.WINDOW_UPDATE or raw_sid != 0


RESYNC_CHAIN = 3
"""Plausible frames that must follow each other for an offset to count as a boundary
(two are not enough: a header block's octets can look like a frame header)."""


def find_boundary(data: bytes | bytearray | memoryview, max_frame_size: int,
                  start: int = 0) -> int | None:
    """The first offset >= ``start`` from which ``RESYNC_CHAIN`` plausible frames follow
    each other (each where the previous one's length says), or plausible frames run
    exactly to the end of ``data``; None when no such offset is known yet."""
    n = len(data)
    for pos in range(start, n - FRAME_HEADER_LEN + 1):
        at, chained = pos, 0
        while at + FRAME_HEADER_LEN <= n and plausible(data, at, max_frame_size):
            at += FRAME_HEADER_LEN + parse_header(data, at).length
            chained += 1
            if chained >= RESYNC_CHAIN or at == n:
                return pos
    return None


class PaddingError(ValueError):
    """§6.1: "If the length of the padding is the length of the frame payload or greater,
    the recipient MUST treat this as a connection error"."""


def strip_padding(payload: bytes, flags: int, priority: bool = False) -> bytes:
    """The fragment of a DATA / HEADERS / PUSH_PROMISE payload without Pad Length,
    padding and (HEADERS with PRIORITY, ``priority=True``) the 5-octet priority block."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise PaddingError("PADDED frame without a Pad Length octet")
        start = 1
        end -= payload[0]
    if priority:
        start += 5
    if end < start:
        raise PaddingError(f"padding or priority ({len(payload) - end + start} octets) "
                           f"exceeds the payload ({len(payload)})")
    return payload[start:end]
