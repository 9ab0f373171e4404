"""Malformed JSON: redaction never raises and lets no secret through.

Two bugs of ``redact_json_text`` (and of the batch path ``redact_json_texts``):
stray quotes made the scan misread which strings are keys, find no secret and
return the text unchanged; and a key with an invalid escape (``"\\x"``) or a
secret value nested 5000 deep raised, which would have aborted an ingest. Here:
the reported texts, Hypothesis over any text and over mutated documents with
secrets, and an ingest of a capture carrying such frames and bodies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.secrets_check import assert_no_secret_left, is_valid_json, loose_secrets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.redact import REDACTED, redact_json_text, redact_json_texts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

import craft
from targets import _frame

DEEP = 5000


# --- the reported texts -----------------------------------------------------------------
LEAKED = [  # (text, secret): each came back unchanged
    ('{"note":"say "hi", "apiKey":"SECRET1"}', "SECRET1"),
    ('{"a\\\n":1,"apiKey":"SECRET2"}', "SECRET2"),
    ('{"a":"x"apiKey":"SECRET3"}', "SECRET3"),  # the loose regex in one pass missed it
    ('{"q":"say "hi"", "signature":"SECRET4", "b":1}', "SECRET4"),
    ('{"id":1,"params":{"note":"a"b","apiKey":"SECRET5","signature":"SECRET6"}}', "SECRET6"),
    ('{"key":12SECRET7}', "SECRET7"),  # a value that only partly decodes
    ('{"key":nullSECRET8}', "SECRET8"),
    ('{"a":"b", "url":"/x?c=1&signature=SECRET9', "SECRET9"),  # truncated, form pair
    ('{"u":"a=x?sign=SECRET10"', "SECRET10"),  # a form value swallowing the next pair
    ('{"op":"auth","args":["SECRET11",1,"SECRET12"', "SECRET11"),  # truncated Bybit auth
    ('{"op":"auth","args":["SECRET11",1,"SECRET12"', "SECRET12"),
]

RAISED = [  # each raised JSONDecodeError or RecursionError
    '{"\\x":1,"key":2}',
    '{"\\x":1,"key":"SECRET13"}',
    '{"\\u12":1, "apiKey":"SECRET14"}',
    '{"signature": ' + "[" * DEEP + '"SECRET15"' + "]" * DEEP + "}",
    '{"signature": ' + "{\"a\":" * DEEP + '"SECRET16"' + "}" * DEEP + "}",
    '{"args": ' + "[" * DEEP + '"SECRET17"' + "]" * DEEP + ', "op": "auth"}',
    '{"x\\/": ' + "[" * DEEP + "]" * DEEP + ', "key": "SECRET18"}',
    '{"token": ' + "[" * DEEP,
]


@pytest.mark.parametrize(("text", "secret"), LEAKED)
def test_stray_quotes_do_not_hide_a_secret(text: str, secret: str) -> None:
    out = redact_json_text(text)
    assert secret not in out, out
    assert REDACTED in out


@pytest.mark.parametrize("text", RAISED)
def test_crafted_text_does_not_raise(text: str) -> None:
    out = redact_json_text(text)
    assert "SECRET" not in out
    assert REDACTED in out or '"key":2' not in text


def test_reported_examples_exactly() -> None:
    """The three texts of the report, through both paths."""
    texts = ['{"note":"say "hi", "apiKey":"SECRET1"}', '{"a\\\n":1,"apiKey":"SECRET2"}',
             '{"\\x":1,"key":2}']
    want = ['{"note":"say "hi", "apiKey":"REDACTED"}', '{"a\\\n":1,"apiKey":"REDACTED"}',
            '{"\\x":1,"key":"REDACTED"}']
    assert [redact_json_text(t) for t in texts] == want
    arr = pa.array(texts, type=pa.string())
    assert redact_json_texts(arr, np.ones(len(texts), dtype=bool)).to_pylist() == want


def test_batch_path_on_the_crafted_texts() -> None:
    texts = [t for t, _ in LEAKED] + RAISED
    got = redact_json_texts(pa.array(texts, type=pa.string()), np.ones(len(texts), dtype=bool))
    assert got.to_pylist() == [redact_json_text(t) for t in texts]
    assert not any("SECRET" in t for t in got.to_pylist())


def test_valid_json_is_still_read_exactly() -> None:
    """What goes loose is only what does not parse: valid JSON keeps its bytes."""
    text = '{"note":"say \\"hi\\"", "apiKey":"S", "n": 25000.00, "url":"/a?sign=b"}'
    assert redact_json_text(text) == text.replace('"S"', '"REDACTED"')
    flat = '{"url":"/a?x=1&sign=b","apiKey":"S"}'  # a valid flat text holding "="
    assert redact_json_text(flat) == flat.replace('"S"', '"REDACTED"')


# --- Hypothesis: any text ---------------------------------------------------------------
_SETTINGS = settings(max_examples=1000, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_JSONISH = st.text(alphabet='{}[]":,\\ \n-_0123456789aeikgnpstyorhxu/KS=&?\u212a\u0130é',
                   max_size=60)


@_SETTINGS
@given(st.one_of(st.text(), _JSONISH))
def test_no_exception_for_any_text(text: str) -> None:
    out = redact_json_text(text)
    assert isinstance(out, str)
    assert_no_secret_left(text, out) if not is_valid_json(text) else None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), _JSONISH), min_size=1, max_size=12))
def test_no_exception_for_any_texts_batch(texts: list[str]) -> None:
    # Arrow refuses lone surrogates; the capture decoder never makes them
    texts = [t.encode("utf-8", "replace").decode() for t in texts]
    got = redact_json_texts(pa.array(texts, type=pa.string()), np.ones(len(texts), dtype=bool))
    assert got.to_pylist() == [redact_json_text(t) for t in texts]


# --- Hypothesis: mutated documents with secrets ------------------------------------------
_SECRET_NAMES = st.sampled_from(["apiKey", "api_key", "signature", "sign", "passphrase", "token",
                                 "key", "listenKey", "client_secret", "Password", "API-KEY"])
_JUNK = st.sampled_from(['"', '"', '"', "\\", "\\x", "\\u12", "\n", ":", ",", "{", "}", "[",
                         "]", '":', '""', "x", " ", "=", "&sign=", "0"])


@st.composite
def _secret_document(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A JSON document with secrets (unique markers) among other fields, nested in
    ``params`` or not, compact or indented."""
    n = draw(st.integers(1, 3))
    secrets = [f"Zq{i}SECRETv{i}Zq" for i in range(n)]
    fields: list[tuple[str, object]] = [(draw(_SECRET_NAMES), s) for s in secrets]
    others = draw(st.lists(st.tuples(st.sampled_from(["note", "symbol", "id", "price", "msg"]),
                                     st.one_of(st.text(max_size=8), st.integers())), max_size=4))
    order = draw(st.permutations(fields + others))
    doc: dict[str, object] = {}
    for k, v in order:
        doc[k + ("" if k not in doc else "_")] = v
    if draw(st.booleans()):
        doc = {"id": 1, "method": "order.place", "params": doc}
    indent = draw(st.sampled_from([None, 2]))
    return json.dumps(doc, indent=indent, ensure_ascii=draw(st.booleans())), secrets


@st.composite
def _broken(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A secret document with junk inserted (away from the secrets), or cut short."""
    text, secrets = draw(_secret_document())
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 4)) == 0
        text = text[:i] if cut else text[:i] + draw(_JUNK) + text[i:]
    return text, secrets


@_SETTINGS
@given(_broken())
def test_no_secret_survives_mutation(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    out = redact_json_text(text)
    if is_valid_json(text):
        return  # the exact path: test_redact_equivalence
    assert_no_secret_left(text, out)
    # every secret the loose regex sees whole, as a value of a secret key, is gone
    seen = {v for _, v in loose_secrets(text)}
    for s in secrets:
        if s in seen:
            assert s not in out, (text, out)


@_SETTINGS
@given(_secret_document(), st.data())
def test_one_stray_quote_hides_nothing(case: tuple[str, list[str]], data: st.DataObject) -> None:
    """The reported bug's shape: a quote in the text, the secret pairs left intact
    (nothing inserted from a secret key's opening quote to the end of its value)."""
    text, secrets = case
    holes = [i for i in range(len(text) + 1)
             if not any(text.find(s) - 24 <= i <= text.find(s) + len(s) for s in secrets)]
    i = data.draw(st.sampled_from(holes))
    bad = text[:i] + data.draw(st.sampled_from(['"', '\\"', '"x', '\\x'])) + text[i:]
    out = redact_json_text(bad)
    if is_valid_json(bad):  # e.g. \" inside a string: the exact path decides
        return
    for s in secrets:
        assert s not in out, (bad, out)


# --- end to end -----------------------------------------------------------------------
def _ws_capture(frames: list[bytes], bodies: list[bytes]) -> bytes:
    """A plain-text HTTP/1.1 connection on port 80: POSTs with ``bodies``, then an
    upgrade to WebSocket and the client's masked text ``frames``."""
    port, seq, peer = 80, 1000, 5000
    pkts = [*craft.handshake(port, seq, peer)]
    out, back = b"", b""
    for body in bodies:
        out += (b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        back += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    out += (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    back += (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
             b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    pkts.append(craft.packet(out, seq=seq, ack=peer, port=port))
    pkts.append(craft.packet(back, out=False, seq=peer, ack=seq + len(out), port=port))
    seq += len(out)
    for frame in frames:  # one segment each (an IPv4 packet holds < 64 KiB)
        pkts.append(craft.packet(frame, seq=seq, ack=peer + len(back), port=port))
        seq += len(frame)
    pkts.append(craft.packet(out=False, seq=peer + len(back), ack=seq, port=port,
                             flags=craft.TCP_ACK))
    return craft.pcap(pkts)


def test_ingest_of_malformed_frames_keeps_no_secret(tmp_path: Path) -> None:
    from pcapflow.pipelines.ingest import ingest_capture
    from pcapflow.pipelines.ingest.app_layer import AppLayer

    texts = [t for t, _ in LEAKED] + RAISED
    secrets = {s for _, s in LEAKED} | {f"SECRET{i}" for i in range(13, 19)}
    ok = '{"id":1,"method":"order.place","params":{"apiKey":"SECRETOK","price":"1"}}'
    frames = [_frame(1, t.encode(), mask=b"\x01\x02\x03\x04") for t in [ok, *texts]]
    bodies = [t.encode() for t in texts[:6]]
    cap = tmp_path / "malformed.pcap"
    cap.write_bytes(_ws_capture(frames, bodies))
    ingest_capture(str(cap), tmp_path / "data", app_layer=AppLayer.factory([]))

    ws = pq.read_table(tmp_path / "data" / "ws_messages").column("payload").to_pylist()
    assert len(ws) == len(frames)  # every frame became a row: nothing aborted
    http = pq.read_table(tmp_path / "data" / "http_messages").column("body").to_pylist()
    assert sum(REDACTED in b for b in http) == len(bodies)
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    leaks = []
    for f in files:
        raw = f.read_bytes()
        leaks += [(f.name, "raw", s) for s in [*secrets, "SECRETOK"] if s.encode() in raw]
        if f.suffix == ".parquet":
            blob = json.dumps(pq.read_table(f).to_pylist(), default=str)
            leaks += [(f.name, "decoded", s) for s in [*secrets, "SECRETOK"] if s in blob]
    assert leaks == []
