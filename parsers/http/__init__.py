"""HTTP/1.1 (RFC 9112): sans-IO session per connection, which hands a connection
upgraded with ``101 Switching Protocols`` to ``parsers.websocket``.

Modules: ``session`` (``HttpSession`` and its events), ``syntax`` (start and
field lines), ``body`` (content codings), ``rows`` (the ``http_messages``
table), ``spec`` (the registration).
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy

if TYPE_CHECKING:  # (imported at their first use: ``lazy_exports``)
    from .session import HttpMessage, HttpSession, WebSocketHandshake

__all__ = ["HttpMessage", "HttpSession", "WebSocketHandshake"]

__getattr__ = lazy(__name__, {
    "HttpMessage": ".session",
    "HttpSession": ".session",
    "WebSocketHandshake": ".session",
})
