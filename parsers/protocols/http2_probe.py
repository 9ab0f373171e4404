"""HTTP/2, detected but not decoded yet: its probes, and the anomaly that says so.

The HTTP/2 package (``parsers/http2``) replaces this spec in the registry.
"""

from __future__ import annotations

from .base import ProtocolSpec

# --- RFC 9113 §3.4 --------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MIN_PREFACE_BYTES = 8
"""Fewer bytes than this of the preface could be an HTTP/1 "PRI" request; not enough."""
FRAME_HEADER_LENGTH = 9  # §4.1: length(24) type(8) flags(8) R(1) stream id(31)
FRAME_SETTINGS = 0x4
SETTING_SIZE = 6  # §6.5.1: each setting is a 16-bit id and a 32-bit value


def probe_client(data: bytes) -> bool:
    n = min(len(data), len(PREFACE))
    return n >= MIN_PREFACE_BYTES and data[:n] == PREFACE[:n]


def probe_server(data: bytes) -> bool:
    """§3.4: the server preface is a SETTINGS frame on stream 0 (not an ACK)."""
    if len(data) < FRAME_HEADER_LENGTH:
        return False
    length = int.from_bytes(data[0:3], "big")
    stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
    return (
        data[3] == FRAME_SETTINGS
        and data[4] == 0
        and stream_id == 0
        and length % SETTING_SIZE == 0
    )


HTTP2 = ProtocolSpec(
    name="http2",
    probe_out=probe_client,
    probe_in=probe_server,
    undecoded="HTTP/2 is detected but not decoded",
)
