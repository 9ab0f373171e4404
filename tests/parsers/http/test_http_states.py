"""HTTP/1.1's state table (``parsers.http.session._TRANSITIONS``), every pair.

Each direction of ``HttpSession`` moves only through ``_fire``, which looks the pair
``(state, input)`` up in the table, sets the next state and then runs the row's
action (h2's ``H2StreamStateMachine.process_input`` does the same). Here every one of
the ``len(State) * len(Input)`` pairs is fired on a session put in that state: a pair
in the table ends in its next state and does what its action says (emit the message
under way, hand held bytes to the protocol switched to, drop them, or parse them); a pair
not in the table is a ``protocol_error`` anomaly and stops the direction.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.http import session as http_session
from pcapflow.parsers.http.events import HttpMessage
from pcapflow.parsers.http.session import (
    _TRANSITIONS,
    HttpSession,
    Input,
    State,
    _Message,
)
from pcapflow.parsers.websocket.session import WebSocketSession

PAIRS = [(s, i) for s in State for i in Input]
VALID = [pytest.param(s, i, id=f"{s.name}-{i.name}") for s, i in PAIRS if (s, i) in _TRANSITIONS]
INVALID = [pytest.param(s, i, id=f"{s.name}-{i.name}") for s, i in PAIRS
           if (s, i) not in _TRANSITIONS]
HELD = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
"""Bytes the direction holds when the input comes (a whole request head)."""


def _session_in(state: State) -> HttpSession:
    """A session whose ``out`` direction stands in ``state`` with a GET under way and
    ``HELD`` in its buffer (and an upgraded session there, for the switches)."""
    s = HttpSession(7)
    side = s._sides["out"]
    side.state = state
    side.msg = _Message(kind="request", stream_offset=0, ts_first=1, header_ts_last=2,
                        method="GET", path="/", version="HTTP/1.1")
    side.buf.append(HELD, 3, 4)
    s.upgraded = WebSocketSession(7, extensions="")
    return s


def test_the_table_covers_every_state_and_input() -> None:
    assert len(VALID) + len(INVALID) == len(State) * len(Input)
    assert {s for s, _ in _TRANSITIONS} == set(State)  # STOP leaves every state
    assert {i for _, i in _TRANSITIONS} == set(Input)
    assert all(next_state in State for _, next_state in _TRANSITIONS.values())


@pytest.mark.parametrize(("state", "input_"), VALID)
def test_valid_pair_does_what_its_row_says(state: State, input_: Input) -> None:
    action, target = _TRANSITIONS[(state, input_)]
    s = _session_in(state)
    side = s._sides["out"]
    events: list = []
    s._fire("out", side, input_, events)
    assert side.state is target
    assert not [e for e in events if isinstance(e, Anomaly) and e.code == "protocol_error"]
    messages = [e for e in events if isinstance(e, HttpMessage)]
    if action is HttpSession._complete:  # the message under way, and nothing else
        assert [m.path for m in messages] == ["/"] and side.msg is None
        assert bytes(side.buf.data) == HELD
    elif action is HttpSession._resume:  # the held request is parsed now
        assert [m.path for m in messages] == ["/next"]
        assert not side.buf.data
    elif action in (HttpSession._to_upgraded, HttpSession._drop_held):
        assert not messages and not side.buf.data  # handed on, or dropped
    else:
        assert action is None
        assert not events and bytes(side.buf.data) == HELD  # bytes wait


@pytest.mark.parametrize(("state", "input_"), INVALID)
def test_pair_not_in_the_table_is_a_protocol_error(state: State, input_: Input) -> None:
    s = _session_in(state)
    side = s._sides["out"]
    events: list = []
    s._fire("out", side, input_, events)
    assert [(e.layer, e.code, e.direction) for e in events] == [("http", "protocol_error", "out")]
    assert events[0].detail == f"{input_.name.lower()} in state {state.name.lower()}"
    assert side.state is State.STOPPED and side.msg is None and not side.buf.data
    assert s.feed("out", b"GET / HTTP/1.1\r\n\r\n", 5, 5) == []  # stopped for good


def test_every_state_change_goes_through_the_table() -> None:
    """No ``.state = `` anywhere in the session but ``_fire``: the table is the machine,
    not a description beside it."""
    tree = ast.parse(inspect.getsource(http_session))
    assigners = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                targets = node.targets if isinstance(node, ast.Assign) else []
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Attribute) and sub.attr == "state":
                            assigners.add(fn.name)
    assert assigners == {"_fire"}
