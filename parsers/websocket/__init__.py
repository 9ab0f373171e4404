"""WebSocket (RFC 6455) with permessage-deflate (RFC 7692): sans-IO session per
connection (made by ``parsers.http`` after the upgrade).

Modules: ``session`` (``WebSocketSession``, frames, events), ``deflate`` (the
extension and the inflaters), ``scan`` (the batch path's compiled frame scan),
``rows`` (the ``ws_messages`` table), ``spec`` (the registration).
"""

from .session import OPCODE_NAMES, Opcode, WebSocketSession, WsMessage, WsMessageRun, unmask

__all__ = ["OPCODE_NAMES", "Opcode", "WebSocketSession", "WsMessage", "WsMessageRun", "unmask"]
