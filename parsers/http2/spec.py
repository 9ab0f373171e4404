"""HTTP/2's registration: detected by the connection preface, the server's first
SETTINGS, or (mid-connection) a chain of plausible frame headers; its session
emits ``HttpMessage`` events (``version="HTTP/2"``, ``stream_id``) into HTTP's
``http_messages`` table, which the ``rest`` family pairs by stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..events import Event
from ..protocols.base import ProtocolSpec, SessionContext, UpgradeContext, UpgradeSpec
from . import frames

if TYPE_CHECKING:
    from .session import Http2Session

# --- RFC 9113 §3.4 --------------------------------------------------------------
MIN_PREFACE_BYTES = 8
"""Fewer bytes than this of the preface could be an HTTP/1 "PRI" request; not enough."""
SETTING_SIZE = 6  # §6.5.1: each setting is a 16-bit id and a 32-bit value


def _chain(data: bytes) -> tuple[int, bool]:
    """Strict frame headers (``frames.plausible``) chained from the first byte, each
    where the previous one's length says: how many (up to ``RESYNC_CHAIN``), and
    whether an implausible one broke the chain (then no byte that follows mends it)."""
    pos = count = 0
    while pos + frames.FRAME_HEADER_LEN <= len(data) and count < frames.RESYNC_CHAIN:
        if not frames.plausible(data, pos, frames.DEFAULT_MAX_FRAME_SIZE):
            return count, True
        pos += frames.FRAME_HEADER_LEN + frames.parse_header(data, pos).length
        count += 1
    return count, False


def _is_frames(data: bytes) -> bool:
    """Mid-connection HTTP/2: ``RESYNC_CHAIN`` chained frame headers, or two when the
    prefix ends before a third (a 16 KB DATA frame outlasts the bytes detection looks
    at)."""
    count, broken = _chain(data)
    return not broken and count >= 2


def _is_preface(data: bytes) -> bool:
    n = min(len(data), len(frames.PREFACE))
    return n >= MIN_PREFACE_BYTES and data[:n] == frames.PREFACE[:n]


def _is_settings(data: bytes) -> bool:
    """§3.4: the server preface is a SETTINGS frame on stream 0 (not an ACK)."""
    if len(data) < frames.FRAME_HEADER_LEN:
        return False
    length = int.from_bytes(data[0:3], "big")
    stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
    return (
        data[3] == frames.FrameType.SETTINGS
        and data[4] == 0
        and stream_id == 0
        and length % SETTING_SIZE == 0
    )


def probe_client(data: bytes) -> bool:
    return _is_preface(data) or _is_frames(data)


def probe_server(data: bytes) -> bool:
    return _is_settings(data) or _is_frames(data)


def refuses_client(data: bytes) -> bool:
    """``probe_client`` says no for good: the bytes there already differ from the
    preface, and the frame chain is broken."""
    n = min(len(data), len(frames.PREFACE))
    return data[:n] != frames.PREFACE[:n] and _chain(data)[1]


def refuses_server(data: bytes) -> bool:
    """``probe_server`` says no for good: the first frame header is there and is not
    a SETTINGS frame, and the frame chain is broken."""
    return (len(data) >= frames.FRAME_HEADER_LEN and not _is_settings(data)
            and _chain(data)[1])


def resync(data: bytes) -> int | None:
    return frames.find_boundary(data, frames.DEFAULT_MAX_FRAME_SIZE)


ALPN_ID = "h2"
"""§3.2: "The string "h2" identifies the protocol where HTTP/2 uses TLS"."""


def not_decrypted(info: Mapping[str, object]) -> str | None:
    """ALPN chose h2, or (TLS 1.3 hides the choice without keys) the client offered it:
    without the keys, multiplexed requests cannot be paired with their responses."""
    alpn = info.get("alpn")
    if alpn == ALPN_ID:
        chosen = "chose"
    elif alpn is None and ALPN_ID in str(info.get("alpn_offered") or "").split(","):
        chosen = "offered"
    else:
        return None
    return (f"ALPN {chosen} h2 and no key log decrypted it: HTTP/2 multiplexes "
            "requests on streams, so they cannot be paired with responses from TLS "
            "record timing; no latency from this connection (supply the key log)")


def _session(ctx: SessionContext) -> Http2Session:
    from .session import Http2Session  # (with the first HTTP/2 connection)

    return Http2Session(ctx.flow_id, max_body=ctx.limits.http_max_body,
                        max_header=ctx.limits.http_max_header)


def _upgraded(up: UpgradeContext) -> tuple[Http2Session, list[Event]]:
    """RFC 7540 §3.2 (kept by RFC 9113 §3.1 for existing deployments): after the 101
    the server speaks HTTP/2 (SETTINGS first) and the client sends the preface; the
    upgrade request is stream 1, whose response comes as HTTP/2."""
    from .session import Http2Session

    index = up.request.request_index if up.request is not None else None
    return Http2Session(up.flow_id, max_body=up.limits.http_max_body,
                        max_header=up.limits.http_max_header, out_offset=up.out_offset,
                        in_offset=up.in_offset, upgrade_request_index=index), []


HTTP2 = ProtocolSpec(
    name="http2",
    probe_out=probe_client,
    probe_in=probe_server,
    refuses=(refuses_client, refuses_server),
    resync=resync,
    session=_session,
    not_decrypted=not_decrypted,
    upgraded=UpgradeSpec(token="h2c", session=_upgraded, at_once=True),
    limits=("http_max_body", "http_max_header"),
)
