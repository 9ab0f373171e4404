"""HTTP/1.1's protocol switch goes through the registry: the spec that accepts an
``Upgrade`` token declares it (``ProtocolSpec.upgraded``), and ``HttpSession`` names no
protocol it may switch to.
"""

from __future__ import annotations

import ast
import inspect

from pcapflow.parsers.events import Anomaly, Direction, Event, Run, feed_pieces
from pcapflow.parsers.http import session as http_session
from pcapflow.parsers.http.session import HttpSession, State
from pcapflow.parsers.protocols.base import UpgradeContext, UpgradeSpec
from pcapflow.parsers.protocols.registry import BY_NAME, REGISTRY, UPGRADES

REQ = (b"GET /chat HTTP/1.1\r\nHost: lab\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n")
RESP = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: X-Echo\r\nConnection: Upgrade\r\n\r\n"


class _Echo:
    """A protocol of one's own: each piece comes back as a gap of its length, so what
    it was fed shows in the events."""

    def __init__(self, up: UpgradeContext) -> None:
        self.up = up
        self.fed: list[tuple[Direction, bytes, int]] = []

    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int
             ) -> list[Event]:
        self.fed.append((direction, data, ts_first))
        return []

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        return feed_pieces(self, direction, run)

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        return []

    def finish(self, ts: int) -> list[Event]:
        return []

    def independent(self) -> bool:
        return True


def _echo(up: UpgradeContext) -> tuple[_Echo, list[Event]]:
    return _Echo(up), [Anomaly(ts=up.response.ts_last, flow_id=up.flow_id, direction="in",
                               layer="echo", code="switched", detail="", stream_offset=None)]


def test_the_registry_declares_each_token_once_with_its_protocol() -> None:
    assert dict(UPGRADES) == {"websocket": BY_NAME["websocket"].upgraded,
                              "h2c": BY_NAME["http2"].upgraded}
    assert [s.name for s in REGISTRY if s.upgraded is not None] == ["http2", "websocket"]
    assert UPGRADES["h2c"].at_once and not UPGRADES["websocket"].at_once


def test_a_declared_token_hands_the_connection_to_its_session() -> None:
    """A token no built-in protocol knows, declared by a spec: the 101 (token case
    ignored) makes that session, with the request, the 101 and the stream offsets; the
    switch's own events come out; every later byte goes to it, both ways."""
    s = HttpSession(5, upgrades={"x-echo": UpgradeSpec(token="x-echo", session=_echo)})
    s.feed("out", REQ + b"early", 1, 2)
    events = s.feed("in", RESP + b"hello", 3, 4)
    assert [(e.layer, e.code) for e in events if isinstance(e, Anomaly)] == [("echo", "switched")]
    echo = s.upgraded
    assert isinstance(echo, _Echo)
    up = echo.up
    assert (up.flow_id, up.out_offset, up.in_offset) == (5, len(REQ), len(RESP))
    assert up.request is not None and up.request.path == "/chat"
    assert up.request.header("host") == "lab" and up.response.header("upgrade") == "X-Echo"
    assert up.limits.http_max_body == s.max_body
    s.feed("out", b"more", 5, 6)
    assert echo.fed == [("in", b"hello", 3), ("out", b"early", 1), ("out", b"more", 5)]
    assert s.independent()  # as the protocol switched to says
    assert all(side.state is State.UPGRADED for side in s._sides.values())


def test_an_undeclared_token_is_a_tunnel_with_an_anomaly() -> None:
    """Without a spec for it, even ``websocket`` is not parsed: nothing is hard-wired."""
    s = HttpSession(5, upgrades={})
    s.feed("out", REQ.replace(b"x-echo", b"websocket"), 1, 2)
    events = s.feed("in", RESP.replace(b"X-Echo", b"websocket") + b"\x81\x00", 3, 4)
    assert [e.code for e in events if isinstance(e, Anomaly)] == ["unsupported_upgrade"]
    assert s.upgraded is None
    assert all(side.state is State.TUNNEL for side in s._sides.values())


def test_the_http_session_names_no_protocol_it_switches_to() -> None:
    """``parsers/http/session.py`` imports neither WebSocket's nor HTTP/2's session."""
    tree = ast.parse(inspect.getsource(http_session))
    imported = {node.module or "" for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.startswith(("websocket", "http2"))
                and not m.endswith(".frames")}
