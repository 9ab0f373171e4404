"""HTTP/1.1's registration: detection and resync by request/status line, its
session (which hands an upgraded connection to the protocol whose spec declares the
``Upgrade`` token: ``ProtocolSpec.upgraded``), and its table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..protocols.base import (
    EventSpec,
    MatchSpec,
    MidstreamFinder,
    ProtocolSpec,
    SessionContext,
    TableSpec,
)
from .events import HttpMessage
from .rows import HTTP_MESSAGES, message_row
from .syntax import START_LINE_AT

if TYPE_CHECKING:
    from .session import HttpSession

# --- RFC 9112 §3 request-line, §4 status-line -----------------------------------
METHODS = (
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
)
"""RFC 9110 §9.3 methods plus PATCH (RFC 5789)."""
MAX_METHOD = 20
"""Longest method token considered (registered methods are at most 17 letters)."""
MAX_REQUEST_LINE = 8192
"""Past this many bytes without CRLF a "request line" is not one (RFC 9112 §3 suggests 8000)."""
STATUS_CODE_END = 13  # "HTTP/1.x " + three digits + SP
_MESSAGE_START = re.compile(
    rb"(?:^|(?<=\n))(?:HTTP/1\.[01] [0-9]{3}[ \r]|(?:"
    + b"|".join(METHODS)
    + rb") [!-~]+ HTTP/1\.[01]\r?\n)"
)


def _is_request(data: bytes) -> bool:
    """``method SP target SP HTTP/1.x``; any upper-case method token (WebDAV's
    SEARCH, PROPFIND...) once the whole line is there, a known one before."""
    method, sp, _ = data[:MAX_METHOD + 1].partition(b" ")
    if not sp or not method.isalpha() or not method.isupper():
        return False
    eol = data.find(b"\n", 0, MAX_REQUEST_LINE)
    if eol < 0:
        return method in METHODS and len(data) < MAX_REQUEST_LINE
    line = data[:eol].rstrip(b"\r")
    return line.endswith((b" HTTP/1.0", b" HTTP/1.1"))


def _is_response(data: bytes) -> bool:
    if not data.startswith(b"HTTP/1."):
        return False
    status = data[8:STATUS_CODE_END]
    return len(data) < STATUS_CODE_END or (status[:1] == b" " and status[1:4].isdigit())


def probe(data: bytes) -> bool:
    # Either side: without a SYN the client/server guess may be backwards.
    return _is_request(data) or _is_response(data)


_RESPONSE_PREFIX = b"HTTP/1."


def _request_refused(data: bytes) -> bool:
    """``_is_request`` is False for ``data`` and every extension of it."""
    method, sp, _ = data[:MAX_METHOD + 1].partition(b" ")
    if not sp:  # the method token so far: must be upper-case letters, SP within reach
        return len(data) > MAX_METHOD or not (method.isalpha() and method.isupper())
    if not method.isalpha() or not method.isupper():
        return True
    eol = data.find(b"\n", 0, MAX_REQUEST_LINE)
    if eol < 0:
        return len(data) >= MAX_REQUEST_LINE
    return not data[:eol].rstrip(b"\r").endswith((b" HTTP/1.0", b" HTTP/1.1"))


def _response_refused(data: bytes) -> bool:
    """``_is_response`` is False for ``data`` and every extension of it."""
    k = min(len(data), len(_RESPONSE_PREFIX))
    if data[:k] != _RESPONSE_PREFIX[:k]:
        return True
    return len(data) >= STATUS_CODE_END and not _is_response(data)


def refuses(data: bytes) -> bool:
    """``probe`` says no for good (neither a request line nor a status line can
    begin these bytes, whatever follows)."""
    return _request_refused(data) and _response_refused(data)


def resync(data: bytes) -> int | None:
    m = _MESSAGE_START.search(data)
    return m.start() if m else None


def _head_at(direction: str) -> MidstreamFinder:
    """Mid-stream: a whole message head (start line, fields, blank line), stricter
    than ``resync``'s start line alone."""
    pattern = START_LINE_AT[direction]

    def find(data: bytes, final: bool) -> int | None:
        m = pattern.search(data)
        return m.start() if m else None
    return find


def _session(ctx: SessionContext) -> HttpSession:
    from .session import HttpSession  # (with the first HTTP connection: HTTP/2 with it)

    limits = ctx.limits
    return HttpSession(ctx.flow_id, max_body=limits.http_max_body,
                       max_header=limits.http_max_header,
                       ws_max_message=limits.ws_max_message,
                       ws_max_inflated=limits.ws_max_inflated, midstream=ctx.midstream,
                       limits=limits)


def _host(info: dict[str, object], e: HttpMessage) -> None:
    if e.kind == "request":
        # HTTP/2 carries the Host in the :authority pseudo-header (RFC 9113 §8.3.1)
        host = next((v for k, v in e.headers if k.lower() in ("host", ":authority")), None)
        if host:
            info.setdefault("http_host", host)


HTTP = ProtocolSpec(
    name="http",
    probe_out=probe,
    probe_in=probe,
    refuses=(refuses, refuses),
    resync=resync,
    midstream=(_head_at("out"), _head_at("in")),
    session=_session,
    events={HttpMessage: EventSpec(table="http_messages", row=message_row, flow_info=_host)},
    tables=(TableSpec(name="http_messages", schema=HTTP_MESSAGES,
                      doc="one row per HTTP/1.1 request or response"),),
    flow_columns=("http_host",),
    match=MatchSpec(sql="rest", gate="rest_todo", outputs=("rest_orders", "rest_acks")),
    limits=("http_max_body", "http_max_header", "ws_max_message", "ws_max_inflated"),
)
