"""TLS's epoch table (``parsers.tls.session._TRANSITIONS``), every pair.

Each direction of ``TlsSession`` changes ``Epoch`` only through ``_switch``, which
looks ``(epoch, switch)`` up in the table, sets the next epoch and then runs the
row's action (h2's ``H2StreamStateMachine.process_input`` does the same). Here every
one of the ``len(Epoch) * len(Switch)`` pairs is fired on a session whose direction
stands in that epoch with pending TLS 1.2 keys and a TLS 1.3 application secret: a
pair in the table ends in its next epoch and does what its action says (activate
the pending keys; move to the application traffic secret; nothing); a pair not in
the table is a ``protocol_error`` anomaly and stops the direction's decryption.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.tls import session as tls_session
from pcapflow.parsers.tls.ciphers import Tls13Decryptor
from pcapflow.parsers.tls.record import HANDSHAKE, RawRecord
from pcapflow.parsers.tls.session import (
    _HANDSHAKE,
    _TRANSITIONS,
    Epoch,
    Handshake,
    Hello,
    Switch,
    TlsSession,
)
from pcapflow.parsers.tls.suites import suite_for

PAIRS = [(e, s) for e in Epoch for s in Switch]
VALID = [pytest.param(e, s, id=f"{e.name}-{s.name}") for e, s in PAIRS if (e, s) in _TRANSITIONS]
INVALID = [pytest.param(e, s, id=f"{e.name}-{s.name}") for e, s in PAIRS
           if (e, s) not in _TRANSITIONS]
AES_128_GCM_SHA256 = 0x1301
RECORD = RawRecord(content_type=HANDSHAKE, version=0x0303, header=b"", fragment=b"",
                   stream_offset=517, ts_first=9, ts_last=10)
"""The record whose content makes the switch."""
PENDING = object()  # stands for TLS 1.2 keys waiting for ChangeCipherSpec
CURRENT = object()  # ... and for the keys in use


def _session_in(epoch: Epoch):
    s = TlsSession(3)
    s._suite = suite_for(AES_128_GCM_SHA256)
    st = s._dirs["out"]
    st.epoch = epoch
    st.pending = PENDING  # type: ignore[assignment]
    st.decryptor = CURRENT  # type: ignore[assignment]
    st.app_secret = bytes(32)
    st.epoch_records = 9
    st.trial = True
    st.finished_ts = 5
    st.stopped_reason = None
    return s, st


def test_the_table_covers_every_epoch_and_switch() -> None:
    assert len(VALID) + len(INVALID) == len(Epoch) * len(Switch)
    assert {e for e, _ in _TRANSITIONS} == set(Epoch)
    assert {s for _, s in _TRANSITIONS} == set(Switch)


@pytest.mark.parametrize(("epoch", "switch"), VALID)
def test_valid_pair_does_what_its_row_says(epoch: Epoch, switch: Switch) -> None:
    action, target = _TRANSITIONS[(epoch, switch)]
    s, st = _session_in(epoch)
    s._switch("out", st, switch, RECORD)
    assert st.epoch is target
    assert s._drain() == []  # no anomaly
    assert st.encrypted == (target in (Epoch.CIPHER_CHANGED, Epoch.CHANGED_APPLICATION))
    assert st.in_app_epoch == (target in (Epoch.APPLICATION, Epoch.CHANGED_APPLICATION))
    if action is TlsSession._activate_pending:  # RFC 5246 §7.1
        assert st.decryptor is PENDING and st.pending is None
        assert st.epoch_records == 0 and st.finished_ts is None
    elif action is TlsSession._application_keys:  # RFC 8446 §7.1
        assert isinstance(st.decryptor, Tls13Decryptor) and st.pending is PENDING
        assert st.epoch_records == 0 and not st.trial
    else:
        assert action is None
        assert (st.decryptor, st.pending, st.epoch_records, st.trial) == (
            CURRENT, PENDING, 9, True)


def test_pending_keys_clear_a_stop_only_when_there_are_keys() -> None:
    """A ChangeCipherSpec brings new keys (renegotiation): decryption resumes; without
    pending keys, a direction that stopped stays stopped."""
    for pending, reason in ((PENDING, None), (None, "decrypt_failed")):
        s, st = _session_in(Epoch.CIPHER_CHANGED)
        st.pending, st.stopped_reason = pending, "decrypt_failed"  # type: ignore[assignment]
        s._switch("out", st, Switch.CHANGE_CIPHER_SPEC, RECORD)
        assert st.stopped_reason == reason


@pytest.mark.parametrize(("epoch", "switch"), INVALID)
def test_pair_not_in_the_table_is_a_protocol_error(epoch: Epoch, switch: Switch) -> None:
    s, st = _session_in(epoch)
    s._switch("out", st, switch, RECORD)
    events = s._drain()
    assert [(type(e), e.layer, e.code, e.direction, e.ts, e.stream_offset) for e in events] == [
        (Anomaly, "tls", "protocol_error", "out", 10, 517)]  # at the record, as feed_many
    assert events[0].detail.startswith(f"{switch.name.lower()} in epoch {epoch.name.lower()}")
    assert st.epoch is epoch
    assert st.decryptor is None and st.pending is None and st.stopped_reason == "protocol_error"


def test_every_epoch_change_goes_through_the_table() -> None:
    """No ``.epoch = `` in the session but in ``_switch``: the table is the machine."""
    tree = ast.parse(inspect.getsource(tls_session))
    assigners = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                for t in node.targets if isinstance(node, ast.Assign) else []:
                    if any(isinstance(sub, ast.Attribute) and sub.attr == "epoch"
                           for sub in ast.walk(t)):
                        assigners.add(fn.name)
    assert assigners == {"_switch"}


# --- the connection's handshake state (``_HANDSHAKE``) -----------------------------

HELLO_PAIRS = [(h, i) for h in Handshake for i in Hello]


@pytest.mark.parametrize(("state", "hello"), [
    pytest.param(h, i, id=f"{h.name}-{i.name}") for h, i in HELLO_PAIRS])
def test_every_handshake_pair_moves_by_its_row_or_is_a_protocol_error(
        state: Handshake, hello: Hello) -> None:
    """``len(Handshake) * len(Hello)`` pairs: a row sets its next state and says
    nothing; no row is one ``protocol_error`` anomaly at the record, the state kept."""
    s = TlsSession(3)
    s._handshake = state
    s._step(hello, RECORD)
    events = s._drain()
    if (state, hello) in _HANDSHAKE:
        assert events == []
        assert s._handshake is _HANDSHAKE[(state, hello)]
    else:
        assert [(type(e), e.code, e.direction, e.ts, e.stream_offset) for e in events] == [
            (Anomaly, "protocol_error", None, 10, 517)]
        assert events[0].detail == (f"{hello.name.lower()} in handshake state "
                                    f"{state.name.lower()}")
        assert s._handshake is state


def test_the_handshake_table_names_every_state_and_no_dead_end() -> None:
    """Every state is left and reached by some row; the rows a session can never take
    (FINISHED before a ServerHello or twice, keys found once a ClientHello was read)
    are exactly the missing ones."""
    assert {h for h, _ in _HANDSHAKE} == set(Handshake)
    assert set(_HANDSHAKE.values()) == set(Handshake)  # NONE: a ServerHelloDone alone
    missing = {p for p in HELLO_PAIRS if p not in _HANDSHAKE}
    assert missing == {
        (Handshake.NONE, Hello.FINISHED), (Handshake.CLIENT_HELLO, Hello.FINISHED),
        (Handshake.COMPLETE, Hello.FINISHED), (Handshake.CLIENT_HELLO, Hello.KEYS_FOUND),
        (Handshake.COMPLETE, Hello.KEYS_FOUND)}


def test_every_handshake_change_goes_through_the_table() -> None:
    """No ``._handshake = `` in the session but in ``__init__`` and ``_step``."""
    tree = ast.parse(inspect.getsource(tls_session))
    assigners = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                for t in node.targets if isinstance(node, ast.Assign) else []:
                    if any(isinstance(sub, ast.Attribute) and sub.attr == "_handshake"
                           for sub in ast.walk(t)):
                        assigners.add(fn.name)
    assert assigners == {"__init__", "_step"}


@pytest.mark.parametrize(("old", "state"), [
    ({"_complete": True, "_midstream": False, "_sh": 1}, Handshake.COMPLETE),
    ({"_complete": False, "_midstream": True, "_sh": None}, Handshake.FOUND),
    ({"_complete": False, "_midstream": False, "_sh": 1, "_server_hello_done": True},
     Handshake.SERVER_HELLO_DONE),
    ({"_complete": False, "_midstream": False, "_sh": 1, "_server_hello_done": False},
     Handshake.SERVER_HELLO),
    ({"_complete": False, "_midstream": False, "_sh": None, "_ch": 1},
     Handshake.CLIENT_HELLO),
    ({"_complete": False, "_midstream": False, "_sh": None, "_ch": None}, Handshake.NONE),
])
def test_a_session_kept_with_the_old_booleans_resumes_in_its_state(
        old: dict, state: Handshake) -> None:
    """Resume state written before the table (``_complete``, ``_midstream``,
    ``_server_hello_done``) is read into the state those booleans meant."""
    fresh = TlsSession(3).__getstate__()
    del fresh["_handshake"]
    s = TlsSession.__new__(TlsSession)
    s.__setstate__({**fresh, "_server_hello_done": False, **old})
    assert s._handshake is state
    assert not {"_complete", "_midstream", "_server_hello_done"} & set(vars(s))


def test_a_real_handshake_walks_the_table() -> None:
    """A TLS 1.3 sample with its key log: the session ends COMPLETE, having passed
    CLIENT_HELLO and SERVER_HELLO (recorded by a spy on ``_step``)."""
    from helpers.paths import SAMPLES
    from helpers.tcp_stream_util import read_tcp_streams
    from pcapflow.parsers.tls import KeyLog

    cap = SAMPLES / "binance_rest_tls13.pcap"
    keys = KeyLog.from_files([cap.with_suffix(".keylog")])
    stream = read_tcp_streams(str(cap))[0]
    seen: list[Handshake] = []
    step = TlsSession._step

    def spy(self: TlsSession, hello: Hello, rec: RawRecord) -> None:
        step(self, hello, rec)
        seen.append(self._handshake)

    s = TlsSession(0, keys)
    s._step = spy.__get__(s)  # type: ignore[method-assign]
    for direction, data, ts in stream.pieces:
        s.feed(direction, data, ts, ts)
    assert seen[:2] == [Handshake.CLIENT_HELLO, Handshake.SERVER_HELLO]
    assert s._handshake is Handshake.COMPLETE
