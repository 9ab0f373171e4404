"""The protocol registry is complete and consistent: every event type a session can
emit says what it becomes, every table, ``flows`` column, limit and SQL family a
spec names exists, and every session has the ``SessionParser`` shape.

A place that is not covered here is where the next protocol would be forgotten
(STYLE.md rule 17), so the checks walk the registry, never a list of names.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from importlib import resources

import pytest
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.limits import Limits
from pcapflow.parsers.protocols.base import Resumable, SessionContext, SessionParser
from pcapflow.parsers.protocols.columns import MESSAGE_KEY
from pcapflow.parsers.protocols.registry import BY_NAME, EVENTS, REGISTRY
from pcapflow.pipelines import match
from pcapflow.pipelines.tables.schemas import FLOWS, PROTOCOL_TABLES, TABLES

SPECS = [pytest.param(s, id=s.name) for s in REGISTRY]
CORE_LIMITS = {"max_open_connections", "reassembly_held_bytes", "reassembly_held_segments",
               "detect_bytes", "max_unacked", "resume_max_bytes", "resume_pending_s",
               "resume_order_ids_s", "resume_order_ids"}
"""Limits the engine itself reads (the application layer, reassembly, RTT)."""


def _event_classes() -> set[type]:
    """Every dataclass carrying ``flow_id`` defined in a protocol package's modules."""
    found: set[type] = set()
    for spec in REGISTRY:
        if spec.session is None:
            continue
        package = spec.session.__module__.rsplit(".", 1)[0]
        for name in ("events", "session"):
            try:
                module = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError:
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls)
                        and "flow_id" in {f.name for f in dataclasses.fields(cls)}):
                    found.add(cls)
    return found


def test_every_event_type_is_registered() -> None:
    """An event type nobody registered would be dropped without a word."""
    missing = {c.__qualname__ for c in _event_classes()} - {t.__qualname__ for t in EVENTS}
    assert not missing
    assert Anomaly not in EVENTS  # the application layer takes anomalies itself


def test_names_unique_and_detection_order() -> None:
    assert len(BY_NAME) == len(REGISTRY)
    names = [s.name for s in REGISTRY]
    # the HTTP/2 preface also passes for an HTTP/1 request; WebSocket frames are
    # the weakest hint of all
    assert names.index("http2") < names.index("http")
    assert names[-1] == "websocket"


@pytest.mark.parametrize("spec", SPECS)
def test_tables_and_rows(spec) -> None:
    for t in spec.tables:
        assert TABLES[t.name] is t.schema and PROTOCOL_TABLES[t.name] is t
        assert t.schema.names[: len(MESSAGE_KEY)] == [f.name for f in MESSAGE_KEY]
        assert all((f.metadata or {}).get(b"doc") for f in t.schema), t.name
    for etype, e in spec.events.items():
        assert not (e.row and e.batch), etype
        assert (e.table is not None) == bool(e.row or e.batch), etype
        if e.table is not None:  # its own table, or another protocol's (HTTP/2 messages
            assert e.table in PROTOCOL_TABLES, (etype, e.table)  # may go to http_messages)
        if e.flow_info is not None:
            assert spec.flow_columns or e.table, etype


@pytest.mark.parametrize("spec", SPECS)
def test_flow_columns_limits_and_sql(spec) -> None:
    assert set(spec.flow_columns) <= set(FLOWS.names)
    assert set(spec.limits) <= set(Limits.names())
    if spec.match is not None:
        sql = resources.files("pcapflow.pipelines") / "sql" / f"{spec.match.sql}.sql"
        assert sql.is_file()
        assert spec.match.sql in match.SQL_FILES
        assert match.GATES[spec.match.sql] == (spec.match.gate, spec.match.outputs)
    if spec.upgrade is not None:
        assert spec.upgrade[0] in BY_NAME and spec.upgrade[1] in spec.flow_columns


def test_every_limit_has_a_reader() -> None:
    claimed = {name for s in REGISTRY for name in s.limits}
    assert set(Limits.names()) == CORE_LIMITS | claimed


@pytest.mark.parametrize("spec", SPECS)
def test_sessions_have_the_session_parser_shape(spec) -> None:
    if spec.session is None:
        assert spec.events == {} or spec.name == "websocket"  # made by another session
        return
    session = spec.session(SessionContext(flow_id=7, limits=Limits()))
    for name in ("feed", "feed_many", "gap", "finish", "independent"):
        assert callable(getattr(session, name)), name
    assert session.finish(0) is not None
    assert isinstance(session.independent(), bool)
    # resumable is a capability the registry declares, not a stub that raises
    assert spec.resumable == (spec.resume is not None) == isinstance(session, Resumable)
    _: SessionParser = session  # and the type checker holds it to the protocol


@pytest.mark.parametrize("spec", SPECS)
def test_probes_accept_bytes(spec) -> None:
    for probe in (spec.probe_out, spec.probe_in):
        assert probe(b"") in (True, False)
        assert probe(bytes(range(256)) * 4) in (True, False)
    if spec.resync is not None:
        assert spec.resync(b"\x00" * 64) is None
