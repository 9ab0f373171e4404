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
``detect_midstream`` names the protocol of a connection whose first captured bytes
are inside a message, by each spec's ``midstream`` rule (per direction).
"""

from __future__ import annotations

from collections.abc import Callable

from .protocols.base import Probe, Refusal
from .protocols.registry import REGISTRY

__all__ = ["PROBES", "RESYNC", "UNKNOWN", "detect", "detect_midstream",
           "find_resync", "refused"]

UNKNOWN = "unknown"

PROBES: dict[str, tuple[Probe, Probe]] = {s.name: (s.probe_out, s.probe_in) for s in REGISTRY}
"""name -> (probe of the client's first bytes, probe of the server's), registry order."""

REFUSALS: tuple[tuple[Refusal, ...], tuple[Refusal, ...]] | None = (
    tuple(s.refuses[0] for s in REGISTRY if s.refuses is not None),
    tuple(s.refuses[1] for s in REGISTRY if s.refuses is not None),
) if all(s.refuses is not None for s in REGISTRY) else None
"""Per direction, every protocol's ``ProtocolSpec.refuses`` (None: some protocol
cannot tell, so no direction is ever refused by all)."""

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


def refused(direction: int, prefix: bytes) -> bool:
    """Has every protocol's probe said no for good to this direction's first bytes
    (``direction`` 0: the client's, 1: the server's)? Then no more bytes of that
    direction can make ``detect`` name a protocol (the other direction and
    ``ProtocolSpec.probe_late`` still may)."""
    if REFUSALS is None or not prefix:
        return False
    return all(refuses(prefix) for refuses in REFUSALS[direction])


def find_resync(protocol: str, data: bytes) -> int | None:
    """Offset in ``data`` of the next plausible message start of ``protocol``.

    For captures that start mid-connection. ``None`` when no boundary is found in
    ``data`` or the protocol has no resync rule (HTTP/2, WebSocket).
    """
    finder = RESYNC.get(protocol)
    return finder(data) if finder is not None else None


def detect_midstream(out_prefix: bytes, in_prefix: bytes, *, final: bool = False) -> str:
    """The protocol of a connection captured from the middle of a message, or
    ``"unknown"``: the one whose next message start (``ProtocolSpec.midstream``, per
    direction) comes first in either direction (registry order breaks ties). For when
    ``detect`` found nothing; ``final``: the connection ended, these are all its bytes."""
    best, name = None, UNKNOWN
    for spec in REGISTRY:
        if spec.midstream is None:
            continue
        for finder, data in zip(spec.midstream, (out_prefix, in_prefix), strict=True):
            at = finder(data, final) if data else None
            if at is not None and (best is None or at < best):
                best, name = at, spec.name
    return name
