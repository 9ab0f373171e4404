"""WebSocket (RFC 6455) with permessage-deflate (RFC 7692): sans-IO session per
connection (made by ``parsers.http`` after the upgrade).

Modules: ``session`` (``WebSocketSession``, frames, events), ``deflate`` (the
extension and the inflaters), ``scan`` (the batch path's compiled frame scan),
``rows`` (the ``ws_messages`` table), ``spec`` (the registration).
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy

if TYPE_CHECKING:  # (imported at their first use: ``lazy_exports``)
    from .session import OPCODE_NAMES, Opcode, WebSocketSession, WsMessage, WsMessageRun, unmask

__all__ = ["OPCODE_NAMES", "Opcode", "WebSocketSession", "WsMessage", "WsMessageRun", "unmask"]

__getattr__ = lazy(__name__, {
    "OPCODE_NAMES": ".session",
    "Opcode": ".session",
    "WebSocketSession": ".session",
    "WsMessage": ".session",
    "WsMessageRun": ".session",
    "unmask": ".session",
})
