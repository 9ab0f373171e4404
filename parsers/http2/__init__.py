"""HTTP/2 (RFC 9113) with HPACK (RFC 7541): a sans-IO session parser.

- ``frames``: the frame header, types, flags, padding, resynchronisation (stateless);
- ``hpack_decode``: the HPACK decoding context of one direction, with an unknown
  dynamic table for captures that begin mid-connection;
- ``session``: ``Http2Session``, one per connection, emitting ``HttpMessage`` events
  (``version="HTTP/2"``, ``stream_id``) and anomalies.
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy

if TYPE_CHECKING:  # (imported at their first use: ``lazy_exports``)
    from .frames import PREFACE
    from .hpack_decode import HpackDecoder, HpackError
    from .session import LAYER, VERSION, Http2Session

__all__ = ["LAYER", "PREFACE", "VERSION", "HpackDecoder", "HpackError", "Http2Session"]

__getattr__ = lazy(__name__, {
    "PREFACE": ".frames",
    "HpackDecoder": ".hpack_decode",
    "HpackError": ".hpack_decode",
    "LAYER": ".session",
    "VERSION": ".session",
    "Http2Session": ".session",
})
