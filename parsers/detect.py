"""Application protocol of a TCP connection, chosen by content, not by port.

How this works: ``detect`` looks at the first bytes of each direction (after TCP
reassembly; either may be empty, e.g. when a capture starts mid-connection and
one side never spoke). Each protocol has a *probe* per direction in the
``PROBES`` registry; the first protocol (in registry order) whose probe accepts
either direction wins. Probes are strict about the few bytes they read (a TLS
record header must have a known content type, version 3.x and a length within
the RFC limit, and a second header where the bytes reach it) so that binary
noise rarely matches.

``find_resync`` answers the other question a mid-stream capture asks: where in
these bytes does the next plausible message boundary of a known protocol start?
``detect_midstream`` uses the same rules (``MIDSTREAM``, per direction) to name the
protocol of a connection whose first captured bytes are inside a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .http2 import frames as h2frames
from .http_syntax import START_LINE_AT
from .websocket import find_frame_start

__all__ = ["MIDSTREAM", "PROBES", "RESYNC", "UNKNOWN", "detect", "detect_midstream",
           "find_resync"]

UNKNOWN = "unknown"

# --- TLS record layer (RFC 8446 §5.1, RFC 5246 §6.2) ------------------------
TLS_CONTENT_TYPES = frozenset({20, 21, 22, 23})
"""change_cipher_spec(20), alert(21), handshake(22), application_data(23)."""
TLS_RECORD_HEADER_LEN = 5  # ContentType, ProtocolVersion (2), uint16 length
TLS_MAX_RECORD_LENGTH = (1 << 14) + 2048
"""RFC 5246 §6.2.3: "The length ... MUST NOT exceed 2^14 + 2048" (TLS 1.3 allows less)."""

# --- HTTP/1.x (RFC 9112 §3 request-line, §4 status-line) ---------------------
HTTP_METHODS = (
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
)
"""RFC 9110 §9.3 methods plus PATCH (RFC 5789)."""
HTTP_MAX_METHOD = 20
"""Longest method token considered (registered methods are at most 17 letters)."""
HTTP_MAX_REQUEST_LINE = 8192
"""Past this many bytes without CRLF a "request line" is not one (RFC 9112 §3 suggests 8000)."""

# --- HTTP/2 (RFC 9113 §3.4) ---------------------------------------------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_MIN_PREFACE_BYTES = 8
"""Fewer bytes than this of the preface could be an HTTP/1 "PRI" request; not enough."""
H2_FRAME_SETTINGS = 0x4
H2_SETTING_SIZE = 6  # RFC 9113 §6.5.1: each setting is a 16-bit id and a 32-bit value

# --- FIX ----------------------------------------------------------------------
FIX_BEGIN = b"8=FIX"
FIX_HEADER_RE = re.compile(rb"8=FIX[!-~]{1,26}\x019=[0-9]{1,10}\x01")
"""BeginString then BodyLength, the two fields every FIX message starts with."""
FIX_MAX_BEGIN_FIELD = 32  # "8=" + BeginString + SOH; the longest real one is FIXT.1.1
FIX_MAX_BODY_LENGTH_FIELD = 12  # "9=" + up to 10 digits

# --- WebSocket base framing (RFC 6455 §5.2) ----------------------------------
WS_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
WS_MAX_CONTROL_PAYLOAD = 125
"""§5.5: "All control frames MUST have a payload length of 125 bytes or less"."""
WS_MAX_PROBE_FRAMES = 64
"""Cap on frames walked per probe: detection looks at a prefix, not the stream."""


# --- Probes -------------------------------------------------------------------
def _tls_record_end(data: bytes, i: int) -> int | None:
    """End of the TLS record whose plausible header is at ``data[i]``, else None."""
    if len(data) - i < TLS_RECORD_HEADER_LEN:
        return None
    if data[i] not in TLS_CONTENT_TYPES or data[i + 1] != 3 or data[i + 2] > 4:
        return None
    length = int.from_bytes(data[i + 3 : i + 5], "big")
    if length == 0 or length > TLS_MAX_RECORD_LENGTH:
        return None
    return i + TLS_RECORD_HEADER_LEN + length


def _is_sslv2_client_hello(data: bytes) -> bool:
    """SSLv2-compatible ClientHello (RFC 5246 Appendix E.2): msg_type 1, version 3.x."""
    return len(data) >= 5 and data[0] & 0x80 != 0 and data[2] == 1 and data[3] == 3


def _is_tls(data: bytes) -> bool:
    end = _tls_record_end(data, 0)
    if end is None:
        return _is_sslv2_client_hello(data)
    # Where the prefix reaches the next record's header, it must be one too.
    if len(data) >= end + TLS_RECORD_HEADER_LEN:
        return _tls_record_end(data, end) is not None
    return True


def _is_http_request(data: bytes) -> bool:
    """``method SP target SP HTTP/1.x``; any upper-case method token (WebDAV's
    SEARCH, PROPFIND...) once the whole line is there, a known one before."""
    method, sp, _ = data[:HTTP_MAX_METHOD + 1].partition(b" ")
    if not sp or not method.isalpha() or not method.isupper():
        return False
    eol = data.find(b"\n", 0, HTTP_MAX_REQUEST_LINE)
    if eol < 0:
        return method in HTTP_METHODS and len(data) < HTTP_MAX_REQUEST_LINE
    line = data[:eol].rstrip(b"\r")
    return line.endswith((b" HTTP/1.0", b" HTTP/1.1"))


def _is_http_response(data: bytes) -> bool:
    if not data.startswith(b"HTTP/1."):
        return False
    status = data[8:13]
    return len(data) < 13 or (status[:1] == b" " and status[1:4].isdigit())


def _is_http(data: bytes) -> bool:
    # Either side: without a SYN the client/server guess may be backwards.
    return _is_http_request(data) or _is_http_response(data)


def _is_h2_frames(data: bytes) -> bool:
    """Mid-connection HTTP/2: strict frame headers (``frames.plausible``) chained from
    the first byte, each where the previous one's length says: ``RESYNC_CHAIN`` of
    them, or two when the prefix ends before a third (a 16 KB DATA frame outlasts the
    bytes detection looks at)."""
    pos = frames = 0
    while pos + h2frames.FRAME_HEADER_LEN <= len(data):
        if not h2frames.plausible(data, pos, h2frames.DEFAULT_MAX_FRAME_SIZE):
            return False
        pos += h2frames.FRAME_HEADER_LEN + h2frames.parse_header(data, pos).length
        frames += 1
        if frames >= h2frames.RESYNC_CHAIN:
            return True
    return frames >= 2


def _is_h2_client(data: bytes) -> bool:
    n = min(len(data), len(H2_PREFACE))
    if n >= H2_MIN_PREFACE_BYTES and data[:n] == H2_PREFACE[:n]:
        return True
    return _is_h2_frames(data)


def _is_h2_server(data: bytes) -> bool:
    """RFC 9113 §3.4: the server preface is a SETTINGS frame on stream 0 (not an ACK)."""
    if len(data) < 9:
        return False
    length = int.from_bytes(data[0:3], "big")
    stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
    return (
        data[3] == H2_FRAME_SETTINGS
        and data[4] == 0
        and stream_id == 0
        and length % H2_SETTING_SIZE == 0
    ) or _is_h2_frames(data)


def _is_fix(data: bytes) -> bool:
    """``8=FIX...<SOH>9=digits<SOH>``, or as much of it as the prefix holds."""
    if not data.startswith(FIX_BEGIN):
        return False
    if FIX_HEADER_RE.match(data) is not None:
        return True
    soh = data.find(b"\x01", 0, FIX_MAX_BEGIN_FIELD)
    if soh < 0:
        return len(data) < FIX_MAX_BEGIN_FIELD  # BeginString not finished yet
    rest = data[soh + 1 :]  # must be an unfinished "9=digits"
    return len(rest) <= FIX_MAX_BODY_LENGTH_FIELD and b"\x01" not in rest and (
        b"9=".startswith(rest[:2]) and (len(rest) <= 2 or rest[2:].isdigit())
    )


def _ws_frame_end(data: bytes, i: int, masked: bool) -> int | None:
    """End of the WebSocket frame whose header is at ``data[i]`` (RFC 6455 §5.2)."""
    if len(data) - i < 2:
        return None
    b0, b1 = data[i], data[i + 1]
    opcode = b0 & 0x0F
    if b0 & 0x30 or opcode not in WS_OPCODES or bool(b1 & 0x80) != masked:
        return None  # RSV2/RSV3 set, reserved opcode, or wrong masking for the side
    length, pos = b1 & 0x7F, i + 2
    if opcode >= 0x8 and (not b0 & 0x80 or length > WS_MAX_CONTROL_PAYLOAD):
        return None
    if length >= 126:
        width = 2 if length == 126 else 8
        if len(data) < pos + width:
            return None
        length = int.from_bytes(data[pos : pos + width], "big")
        # §5.2: "the minimal number of bytes MUST be used to encode the length"
        if length < (126 if width == 2 else 1 << 16) or length >= 1 << 63:
            return None
        pos += width
    return pos + (4 if masked else 0) + length


def _is_ws_frames(data: bytes, masked: bool) -> bool:
    """A run of whole frames covering ``data`` exactly (a prefix is too weak a hint).

    The first frame must not be a continuation, and an empty data frame must be
    final: length-prefixed binary protocols (Kafka: ``00 00 01 bc``...) otherwise
    read as chains of empty continuation frames.
    """
    if not data or data[0] & 0x0F == 0:
        return False
    pos, frames = 0, 0
    while pos < len(data) and frames < WS_MAX_PROBE_FRAMES:
        end = _ws_frame_end(data, pos, masked)
        if end is None or end > len(data):
            return False
        empty = end - pos <= (6 if masked else 2)
        if empty and not data[pos] & 0x80:
            return False
        pos, frames = end, frames + 1
    return frames > 0 and (pos == len(data) or frames == WS_MAX_PROBE_FRAMES)


Probe = Callable[[bytes], bool]

PROBES: dict[str, tuple[Probe, Probe]] = {
    # name: (probe for the client's first bytes, probe for the server's)
    "http2": (_is_h2_client, _is_h2_server),
    "tls": (_is_tls, _is_tls),
    "fix": (_is_fix, _is_fix),
    "http": (_is_http, _is_http),
    "websocket": (
        lambda d: _is_ws_frames(d, masked=True),  # §5.3: client frames are masked
        lambda d: _is_ws_frames(d, masked=False),
    ),
}
"""Registry order is priority order: the HTTP/2 preface would also pass for HTTP/1."""


def detect(out_prefix: bytes, in_prefix: bytes) -> str:
    """Name of the protocol the first bytes of a connection speak, or ``"unknown"``.

    ``out_prefix``: the client's first stream bytes, ``in_prefix``: the server's;
    either may be empty. Returns one of ``PROBES``' names or ``UNKNOWN``.
    """
    for name, (probe_out, probe_in) in PROBES.items():
        if (out_prefix and probe_out(out_prefix)) or (in_prefix and probe_in(in_prefix)):
            return name
    return UNKNOWN


# --- Resynchronisation --------------------------------------------------------
_TLS_HEADER_RE = re.compile(rb"[\x14-\x17]\x03[\x00-\x04]")
_HTTP_START_RE = re.compile(
    rb"(?:^|(?<=\n))(?:HTTP/1\.[01] [0-9]{3}[ \r]|(?:"
    + b"|".join(HTTP_METHODS)
    + rb") [!-~]+ HTTP/1\.[01]\r?\n)"
)


def _resync_tls(data: bytes) -> int | None:
    """A record header followed, at its stated length, by a second one."""
    for m in _TLS_HEADER_RE.finditer(data):
        end = _tls_record_end(data, m.start())
        if end is not None and _tls_record_end(data, end) is not None:
            return m.start()
    return None


def _resync_fix(data: bytes) -> int | None:
    m = FIX_HEADER_RE.search(data)
    return m.start() if m else None


def _resync_http(data: bytes) -> int | None:
    m = _HTTP_START_RE.search(data)
    return m.start() if m else None


RESYNC: dict[str, Callable[[bytes], int | None]] = {
    "tls": _resync_tls,
    "fix": _resync_fix,
    "http": _resync_http,
    "http2": lambda data: h2frames.find_boundary(data, h2frames.DEFAULT_MAX_FRAME_SIZE),
}


def find_resync(protocol: str, data: bytes) -> int | None:
    """Offset in ``data`` of the next plausible message start of ``protocol``.

    For captures that start mid-connection. ``None`` when no boundary is found in
    ``data`` or the protocol has no resync rule (WebSocket).
    """
    finder = RESYNC.get(protocol)
    return finder(data) if finder is not None else None


# --- Mid-stream detection -----------------------------------------------------
WS_MIDSTREAM_MAX_PAYLOAD = 16 << 20
"""Largest frame payload a mid-stream WebSocket candidate may declare (the default
``ws_max_message``)."""

Finder = Callable[[bytes, bool], int | None]
"""``(data, final)`` -> offset of the next message start; ``final``: no more bytes come."""


def _no_more(finder: Callable[[bytes], int | None]) -> Finder:
    return lambda data, final: finder(data)


def _http_head_at(direction: str) -> Finder:
    def find(data: bytes, final: bool) -> int | None:
        m = START_LINE_AT[direction].search(data)
        return m.start() if m else None
    return find


def _ws_frames_at(masked: bool) -> Finder:
    """Frames masked as this side's should be, else as the other's: without a SYN the
    client is a guess (WebSocketSession then notes the roles reversed)."""
    def find(data: bytes, final: bool) -> int | None:
        found = [find_frame_start(data, m, WS_MIDSTREAM_MAX_PAYLOAD, strict=True,
                                  final=final)[0] for m in (masked, not masked)]
        return min((at for at in found if at is not None), default=None)
    return find


MIDSTREAM: dict[str, tuple[Finder, Finder]] = {
    # name: (finder in the client's bytes, finder in the server's), as PROBES
    "tls": (_no_more(_resync_tls), _no_more(_resync_tls)),
    "fix": (_no_more(_resync_fix), _no_more(_resync_fix)),
    "http": (_http_head_at("out"), _http_head_at("in")),
    "websocket": (_ws_frames_at(True), _ws_frames_at(False)),  # §5.3: client masks
}
"""Where each protocol's next message starts in bytes that begin inside one."""


def detect_midstream(out_prefix: bytes, in_prefix: bytes, *, final: bool = False) -> str:
    """The protocol of a connection captured from the middle of a message, or
    ``"unknown"``: the one whose next message boundary comes first in either
    direction (registry order breaks ties). For when ``detect`` found nothing;
    ``final``: the connection ended, these are all its bytes."""
    best, name = None, UNKNOWN
    for proto, finders in MIDSTREAM.items():
        for finder, data in zip(finders, (out_prefix, in_prefix), strict=True):
            at = finder(data, final) if data else None
            if at is not None and (best is None or at < best):
                best, name = at, proto
    return name
