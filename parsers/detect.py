"""Application protocol of a TCP connection, chosen by content, not by port.

How this works: ``detect`` looks at the first bytes of each direction (after TCP
reassembly; either may be empty, e.g. when a capture starts mid-connection and
one side never spoke). Each protocol declares a *probe* per direction in its
``ProtocolSpec``; the first protocol in registry order whose probe accepts
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

from collections.abc import Callable

from .http.syntax import START_LINE_AT
from .protocols.base import Probe
from .protocols.registry import REGISTRY
from .websocket.session import find_frame_start

__all__ = ["MIDSTREAM", "PROBES", "RESYNC", "UNKNOWN", "detect", "detect_midstream",
           "find_resync"]

UNKNOWN = "unknown"

PROBES: dict[str, tuple[Probe, Probe]] = {s.name: (s.probe_out, s.probe_in) for s in REGISTRY}
"""name -> (probe of the client's first bytes, probe of the server's), registry order."""

RESYNC: dict[str, Callable[[bytes], int | None]] = {
    s.name: s.resync for s in REGISTRY if s.resync is not None}


def detect(out_prefix: bytes, in_prefix: bytes) -> str:
    """Name of the protocol the first bytes of a connection speak, or ``"unknown"``.

    ``out_prefix``: the client's first stream bytes, ``in_prefix``: the server's;
    either may be empty. Returns one of ``PROBES``' names or ``UNKNOWN``.
    """
    for name, (probe_out, probe_in) in PROBES.items():
        if (out_prefix and probe_out(out_prefix)) or (in_prefix and probe_in(in_prefix)):
            return name
    return UNKNOWN


def find_resync(protocol: str, data: bytes) -> int | None:
    """Offset in ``data`` of the next plausible message start of ``protocol``.

    For captures that start mid-connection. ``None`` when no boundary is found in
    ``data`` or the protocol has no resync rule (HTTP/2, WebSocket).
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
    "tls": (_no_more(RESYNC["tls"]), _no_more(RESYNC["tls"])),
    "fix": (_no_more(RESYNC["fix"]), _no_more(RESYNC["fix"])),
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
