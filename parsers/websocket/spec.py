"""WebSocket's registration: detection by frame headers, its table, and the
``flows`` column its upgrade fills.

A WebSocket connection normally starts as HTTP/1.1: ``HttpSession`` parses the
upgrade and hands the stream to ``WebSocketSession``; the session factory here is
for connections detected *as* WebSocket, i.e. captured after their upgrade: frames
are found by their headers, permessage-deflate is inferred from RSV1 (with the
history before the capture marked unknown) and a ``websocket_without_upgrade``
anomaly says so.
"""

from __future__ import annotations

from ..http.events import WebSocketHandshake
from ..protocols.base import (
    EventSpec,
    MatchSpec,
    MidstreamFinder,
    ProtocolSpec,
    SessionContext,
    TableSpec,
)
from .rows import WS_MESSAGES, message_batch, message_row
from .session import (
    FIN,
    MASK,
    MASKING_KEY_LENGTH,
    MAX_CONTROL_PAYLOAD,
    OPCODE_MASK,
    PAYLOAD_LEN_16,
    PAYLOAD_LEN_MASK,
    RSV2,
    RSV3,
    Opcode,
    WebSocketSession,
    WsMessage,
    WsMessageRun,
    find_frame_start,
)

MIDSTREAM_MAX_PAYLOAD = 16 << 20
"""Largest frame payload a mid-stream WebSocket candidate may declare (the default
``ws_max_message``)."""
MAX_PROBE_FRAMES = 64
"""Cap on frames walked per probe: detection looks at a prefix, not the stream."""
_OPCODES = frozenset(Opcode)


INVALID = -1
"""``_frame_end``: the header is not a frame's, whatever bytes follow."""


def _frame_end(data: bytes, i: int, masked: bool) -> int | None:
    """End of the WebSocket frame whose header is at ``data[i]`` (RFC 6455 §5.2);
    None when the header is not all there yet, ``INVALID`` when it is no frame's."""
    if len(data) - i < 2:
        return None
    b0, b1 = data[i], data[i + 1]
    opcode = b0 & OPCODE_MASK
    if b0 & (RSV2 | RSV3) or opcode not in _OPCODES or bool(b1 & MASK) != masked:
        return INVALID  # RSV2/RSV3 set, reserved opcode, or wrong masking for the side
    length, pos = b1 & PAYLOAD_LEN_MASK, i + 2
    if opcode >= Opcode.CLOSE and (not b0 & FIN or length > MAX_CONTROL_PAYLOAD):
        return INVALID
    if length >= PAYLOAD_LEN_16:
        width = 2 if length == PAYLOAD_LEN_16 else 8
        if len(data) < pos + width:
            return None
        length = int.from_bytes(data[pos : pos + width], "big")
        # §5.2: "the minimal number of bytes MUST be used to encode the length"
        if length < (PAYLOAD_LEN_16 if width == 2 else 1 << 16) or length >= 1 << 63:
            return INVALID
        pos += width
    return pos + (MASKING_KEY_LENGTH if masked else 0) + length


def _walk(data: bytes, masked: bool) -> bool | None:
    """A run of whole frames covering ``data`` exactly (a prefix is too weak a hint):
    True, or False when these bytes are not one, or None when no bytes that follow
    could make them one (refused for good).

    The first frame must not be a continuation, and an empty data frame must be
    final: length-prefixed binary protocols (Kafka: ``00 00 01 bc``...) otherwise
    read as chains of empty continuation frames.
    """
    if not data:
        return False
    if data[0] & OPCODE_MASK == Opcode.CONTINUATION:
        return None
    pos, frames = 0, 0
    empty_frame = 2 + (MASKING_KEY_LENGTH if masked else 0)
    while pos < len(data) and frames < MAX_PROBE_FRAMES:
        end = _frame_end(data, pos, masked)
        if end == INVALID:
            return None
        if end is None or end > len(data):
            return False
        if end - pos <= empty_frame and not data[pos] & FIN:
            return None
        pos, frames = end, frames + 1
    return frames > 0 and (pos == len(data) or frames == MAX_PROBE_FRAMES)


def _is_frames(data: bytes, masked: bool) -> bool:
    return _walk(data, masked) is True


def probe_client(data: bytes) -> bool:
    return _is_frames(data, masked=True)  # §5.3: client frames are masked


def probe_server(data: bytes) -> bool:
    return _is_frames(data, masked=False)


def refuses_client(data: bytes) -> bool:
    return _walk(data, masked=True) is None


def refuses_server(data: bytes) -> bool:
    return _walk(data, masked=False) is None


def _frames_at(masked: bool) -> MidstreamFinder:
    """Mid-stream: frames masked as this side's should be (§5.3: the client masks), else
    as the other's: without a SYN the client is a guess (``WebSocketSession`` then
    notes the roles reversed)."""
    def find(data: bytes, final: bool) -> int | None:
        found = [find_frame_start(data, m, MIDSTREAM_MAX_PAYLOAD, strict=True,
                                  final=final)[0] for m in (masked, not masked)]
        return min((at for at in found if at is not None), default=None)
    return find


def _session(ctx: SessionContext) -> WebSocketSession:
    """Frames without their upgrade: it was before the capture."""
    return WebSocketSession(ctx.flow_id, extensions=None, max_message=ctx.limits.ws_max_message,
                            max_inflated=ctx.limits.ws_max_inflated)


def _handshake(info: dict[str, object], e: WebSocketHandshake) -> None:
    info.setdefault("ws_path", e.path)
    if e.host:
        info.setdefault("http_host", e.host)


WEBSOCKET = ProtocolSpec(
    name="websocket",
    probe_out=probe_client,
    probe_in=probe_server,
    refuses=(refuses_client, refuses_server),
    midstream=(_frames_at(True), _frames_at(False)),
    session=_session,
    events={
        WsMessage: EventSpec(table="ws_messages", row=message_row),
        WsMessageRun: EventSpec(table="ws_messages", batch=message_batch),
        WebSocketHandshake: EventSpec(flow_info=_handshake),
    },
    tables=(TableSpec(name="ws_messages", schema=WS_MESSAGES,
                      doc="one row per WebSocket message (frames joined, inflated)"),),
    flow_columns=("ws_path",),
    upgrade=("http", "ws_path"),
    match=MatchSpec(sql="websocket", gate="ws_in", outputs=("ws_orders", "ws_acks")),
    limits=("ws_max_message", "ws_max_inflated"),
)
