"""``redact_json_text`` gives exactly what it gave before on valid JSON, and on any
other text never raises and lets no secret through.

The reference below is the implementation as it stood before the scan of text
without backslashes (``_flat_secret_spans``) and the trie pre-check came in: one
regex search per JSON string, ``_normalise`` per key, the pre-check first. On
valid JSON (``json.loads`` reads it) the current function must return the same
string. On any other text the reference could leak (stray quotes made it misread
which strings are keys and return the text unchanged) or raise (a key ``"\\x"``, a
value nested 5000 deep), so there the current function must instead (a) not raise
and (b) keep no value of a secret-named key, as the loose pair regexes see them
*at any position* (``loose_secrets``). The tests run both on generated JSON-ish
text (valid documents with secret and other keys at any depth, duplicate keys,
escaped keys, odd whitespace, non-ASCII, truncated and mutated documents, random
text) and on every text payload of the sample captures.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pytest
from helpers.secrets_check import assert_no_secret_left, is_valid_json
from helpers.secrets_check import normalise_key as _ref_normalise
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pcapflow.parsers import redact
from pcapflow.parsers.redact import (
    POSITIONAL_AUTH_OPS,
    REDACTED,
    SENSITIVE_FIELDS,
    redact_json_text,
)

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


# --- the reference: the implementation before the fast scan, verbatim ---------------
_REF_PRECHECK = tuple(sorted(SENSITIVE_FIELDS)) + tuple(POSITIONAL_AUTH_OPS)
_REF_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_REF_COLON_RE = re.compile(r"\s*:\s*")
_REF_DECODER = json.JSONDecoder()
_REF_FALLBACK_JSON_PAIR_RE = re.compile(
    r'"([^"\\]{1,64})"(\s*:\s*)("[^"\\]*(?:\\.[^"\\]*)*(?:"|$)|[^,}\]\s]+)'
)
_REF_FALLBACK_FORM_PAIR_RE = re.compile(r"(^|[?&\s;,])([A-Za-z0-9_.%\-]{1,64})=([^&\s;,\"]*)")
_REF_PRECHECK_RE = re.compile(
    "|".join(re.escape(n) for n in sorted(_REF_PRECHECK, key=len, reverse=True))
)


def _ref_may_hold_secret(text: str) -> bool:
    return _REF_PRECHECK_RE.search(_ref_normalise(text)) is not None


def ref_redact_json_text(text: str) -> str:
    if not _ref_may_hold_secret(text):
        return text
    if text.lstrip()[:1] in ("{", "["):
        spans = _ref_json_secret_spans(text)
        if spans is not None:
            return _ref_splice(text, spans)
    return _ref_redact_loose(text)


def _ref_json_secret_spans(text: str) -> list[tuple[int, int, str]] | None:
    spans: list[tuple[int, int, str]] = []
    auth_op, args_span = False, None
    pos = 0
    while (m := _REF_JSON_STRING_RE.search(text, pos)) is not None:
        colon = _REF_COLON_RE.match(text, m.end())
        if colon is None:  # a string value, not a key
            pos = m.end()
            continue
        raw_key = m.group()
        key = _ref_normalise(json.loads(raw_key) if "\\" in raw_key else raw_key[1:-1])
        start = colon.end()
        if key in SENSITIVE_FIELDS or key == "args":
            try:
                _, end = _REF_DECODER.raw_decode(text, start)
            except ValueError:
                return None
            if key == "args":
                args_span = (start, end, f'["{REDACTED}"]')
            else:
                spans.append((start, end, f'"{REDACTED}"'))
                pos = end
                continue
        elif key == "op" and any(text.startswith(f'"{op}"', start) for op in POSITIONAL_AUTH_OPS):
            auth_op = True
        pos = start
    if auth_op and args_span is not None:
        spans.append(args_span)
    return spans


def _ref_splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    parts: list[str] = []
    pos = 0
    for start, end, replacement in sorted(spans):
        if start < pos:
            continue  # inside a span already replaced
        parts.append(text[pos:start])
        parts.append(replacement)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _ref_redact_loose(text: str) -> str:
    def json_pair(m: re.Match[str]) -> str:
        if _ref_normalise(m.group(1)) not in SENSITIVE_FIELDS:
            return m.group()
        return f'"{m.group(1)}"{m.group(2)}"{REDACTED}"'

    def form_pair(m: re.Match[str]) -> str:
        if _ref_normalise(unquote_plus(m.group(2))) not in SENSITIVE_FIELDS:
            return m.group()
        return f"{m.group(1)}{m.group(2)}={REDACTED}"

    text = _REF_FALLBACK_JSON_PAIR_RE.sub(json_pair, text)
    return _REF_FALLBACK_FORM_PAIR_RE.sub(form_pair, text)


# --- comparing -------------------------------------------------------------------------
def check(text: str) -> None:
    """Identical to the reference on valid JSON; else no exception and no secret."""
    out = redact_json_text(text)  # must not raise, whatever the text
    if is_valid_json(text):
        assert out == ref_redact_json_text(text), text
    else:
        assert_no_secret_left(text, out)


# --- generated text ---------------------------------------------------------------------
_NAMES = sorted(SENSITIVE_FIELDS | {"args", "op"})
_SEPARATORS = st.sampled_from(["", "", "", "", "-", "_", "__", "-_"])
_OTHER_KEYS = st.sampled_from([
    "id", "method", "params", "symbol", "price", "quantity", "side", "type", "timestamp",
    "newClientOrderId", "clientOrderId", "timeInForce", "result", "status", "data", "event",
    "auth", "opx", "signatures", "api", "keys", "arg", "tokens", "client", "sig", "x", "",
    "orderLinkId", "\u212aeys", "sígn", "\u0130d", "api key", "api.key", "key1", "ар",
])


@st.composite
def _secret_key(draw: st.DrawFn) -> str:
    """A name of ``_JSON_KEYS`` with random case, separators anywhere and, rarely,
    the Kelvin sign for a k."""
    name = draw(st.sampled_from(_NAMES))
    out = [draw(_SEPARATORS)]
    for c in name:
        if c == "k" and draw(st.integers(0, 9)) == 0:
            c = "\u212a"
        out.append(c.upper() if draw(st.booleans()) else c)
        out.append(draw(_SEPARATORS))
    return "".join(out)


_KEYS = st.one_of(_secret_key(), _OTHER_KEYS, st.text(max_size=6))
_STRINGS = st.one_of(
    st.sampled_from(["auth", "AUTH", "login", "order.place", "BTCUSDT", "", "x", "apiKey",
                     '"', "\\", ":", "\\u0073ign", "a\nb", "é", "\u212a", "\u0130",
                     '{"sign":"x"}', "op", "args"]),
    st.text(max_size=10),
)
_NUMBERS = st.sampled_from(["0", "-1", "25000.00", "1e-5", "1700000000000", "-0.0", "3E+2"])


@st.composite
def _value(draw: st.DrawFn, depth: int = 0) -> tuple[str, Any]:
    """A JSON value as ``("str"|"num"|"lit"|"obj"|"arr", payload)``."""
    nested = ["obj", "arr"] if depth < 4 else []
    kind = draw(st.sampled_from(["str", "str", "num", "lit", *nested]))
    if kind == "str":
        return kind, draw(_STRINGS)
    if kind == "num":
        return kind, draw(_NUMBERS)
    if kind == "lit":
        return kind, draw(st.sampled_from(["true", "false", "null"]))
    if kind == "arr":
        return kind, draw(st.lists(_value(depth + 1), max_size=4))
    pairs = draw(st.lists(st.tuples(_KEYS, _value(depth + 1)), max_size=5))
    if pairs and draw(st.integers(0, 5)) == 0:  # a duplicate key
        pairs.append(draw(st.sampled_from(pairs)))
    return kind, pairs


_WS = st.sampled_from(["", "", "", " ", "\n  ", "\t", "\r\n", "\x1c", "\u00a0", "\u2028", "  "])


@st.composite
def _document(draw: st.DrawFn) -> str:
    """A JSON(-ish) document: ``_value`` serialised with random whitespace, keys
    and strings escaped in random ways (``\\uXXXX``, ``\\/``), ASCII-only or not."""
    ascii_only = draw(st.booleans())
    escape_some = draw(st.integers(0, 3)) == 0
    rnd = random.Random(draw(st.integers(0, 2**32)))

    def string(s: str) -> str:
        out = json.dumps(s, ensure_ascii=ascii_only)
        if escape_some and len(s) and rnd.random() < 0.5:  # one character as \uXXXX
            i = rnd.randrange(len(s))
            out = json.dumps(s[:i], ensure_ascii=ascii_only)[:-1] + f"\\u{ord(s[i]):04x}" \
                + json.dumps(s[i + 1 :], ensure_ascii=ascii_only)[1:] if ord(s[i]) < 0x10000 \
                else out
        return out

    def ser(v: tuple[str, Any]) -> str:
        kind, p = v
        w = lambda: draw(_WS)  # noqa: E731
        if kind == "str":
            return string(p)
        if kind in ("num", "lit"):
            return str(p)
        if kind == "arr":
            return "[" + w() + ("," + w()).join(ser(x) for x in p) + w() + "]"
        return "{" + w() + ("," + w()).join(
            string(k) + w() + ":" + w() + ser(x) for k, x in p) + w() + "}"

    top = draw(st.sampled_from(["obj", "obj", "arr"]))
    if top == "obj":
        doc = ("obj", draw(st.lists(st.tuples(_KEYS, _value(1)), max_size=6)))
    else:
        doc = ("arr", draw(st.lists(_value(1), max_size=4)))
    return draw(_WS) + ser(doc) + draw(_WS)


_JUNK = st.sampled_from(['"', '"', "\\", ":", ",", "{", "}", "[", "]", " ", "\n", "\u212a",
                         "\u0130", "é", '":', '"key":', '"op":"auth"', '"args":[1]', "\\u",
                         "\\\n", "\x00", "=", "&", "%61pikey=x"])


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A document, then truncated, or with junk inserted or a range deleted."""
    text = draw(_document())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "delete"]))
        i = draw(st.integers(0, len(text)))
        if op == "truncate":
            text = text[:i]
        elif op == "insert":
            text = text[:i] + draw(_JUNK) + text[i:]
        else:
            text = text[:i] + text[i + draw(st.integers(0, 8)) :]
    return text


_ALPHABET = '{}[]":,\\ \n\t-_0123456789aeikgnpstwyorhdcljuvKESYIGNAPT\u212a\u0130é'
_RANDOM = st.text(alphabet=_ALPHABET, max_size=80)


_SETTINGS = settings(max_examples=700, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(_document())
def test_documents(text: str) -> None:
    check(text)


@_SETTINGS
@given(_mutated())
def test_truncated_and_mutated_documents(text: str) -> None:
    check(text)


@_SETTINGS
@given(_RANDOM)
def test_random_text(text: str) -> None:
    check(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(_secret_key(), _OTHER_KEYS, _JUNK, st.text(max_size=4)), max_size=12)
       .map("".join))
def test_pre_check_unchanged(text: str) -> None:
    """The trie pre-check says what the alternation over every name said."""
    assert redact._may_hold_secret(text) == _ref_may_hold_secret(text)


# --- chosen cases -------------------------------------------------------------------------
_CASES = [
    '{"apiKey":"a","signature":"b"}',
    '{"API_KEY" : "a", "Sig-Nature"\t:\n"b"}',
    '{"-api-key-":"a","_op_":"auth","ARGS":[1,2]}',
    '{"op":"auth","args":["k",1,"s"],"args":[3]}',  # the last args wins
    '{"args":["k"],"op":"auth"}',
    '{"op":"auth","args":[1],"signature":{"args":[2],"op":"auth"}}',  # skipped inside a secret
    '{"signature":{"apiKey":"x","args":[1]},"op":"auth","args":[2]}',
    '{"op":"AUTH","args":[1]}', '{"op":"auth ","args":[1]}', '{"op" : "auth","args" :[1]}',
    '{"key":1,"key":2,"key":{"key":3}}',  # duplicate keys
    '{"a":"x","apiKey":"SECRET","b":"unterminated}',
    '{"note":"say "hi", "apiKey":"SECRET"}',  # a stray quote
    '{"a":"x""key":"y"}', '"x"key": 1', '{"x"sign"key": 1}', '{"a":"key":"b"}',
    '{"\\u0073ignature":"x","id":1}', '{"api\\u004bey":"s"}', '{"msg":"\\"apiKey\\": \\"x\\""}',
    '{"\\x":1, "key":2}',  # an invalid escape in a key: json.loads raises
    '{"a\\\n":1,"apiKey":"s"}',
    '{"\u212aey":"kelvin","\u0130d":1,"\u0130":"x","sign":"y"}',
    '{"s\u0130gn":"x","key":"y"}',
    '{"key"\u00a0:\u00a0"x","sign"\x1c:\x1c"y","token"\u2028:"z"}',
    '{"key": "x" "sign": "y"}',
    '{"key": 1e999, "sign": -Infinity, "token": NaN}',
    '{"key": ' + "9" * 5000 + "}",  # int too long for json: ValueError, loose path
    '{"key": [1, 2', '{"key":', '{"key"', '{"key": }', "[", "{", "",
    '[{"sign":"x"},{"op":"auth","args":[]}]',
    '  \n{"token":"t"}', '\u00a0{"token":"t"}', 'x{"token":"t"}',
    "symbol=LTCBTC&signature=abc&timestamp=1", "%61pikey=x&sign=y",
    '{"signature": ' + "[" * 5000 + "]" * 5000 + "}",  # too deep for raw_decode
    '{"args": ' + "[" * 5000 + "]" * 5000 + ', "op": "auth"}',
    '{"args": ' + "[" * 5000 + "]" * 5000 + "}",  # too deep, and no name: text unchanged
    '{"a": ' + "[" * 5000 + "]" * 5000 + ', "sign": 1}',
]


@pytest.mark.parametrize("text", _CASES)
def test_chosen_cases(text: str) -> None:
    check(text)


@given(st.sampled_from(_CASES), st.integers(0, 200))
@example('{"apiKey":"a","signature":"b"}', 10)
@settings(max_examples=500, deadline=None)
def test_chosen_cases_truncated(text: str, at: int) -> None:
    check(text[:at])


# --- real messages -------------------------------------------------------------------------
def _binance_ws(n: int) -> list[str]:
    """Binance WS API ``order.place`` requests (both spacings) and their replies."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        params = {"apiKey": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
                  "newClientOrderId": f"x-{i:010d}", "price": f"{rng.uniform(1, 9e4):.2f}",
                  "quantity": f"{rng.random():.5f}", "side": rng.choice(["BUY", "SELL"]),
                  "signature": f"{rng.getrandbits(256):064x}", "symbol": "BTCUSDT",
                  "timeInForce": "GTC", "timestamp": 1700000000000 + i, "type": "LIMIT"}
        req = {"id": str(uuid.UUID(int=rng.getrandbits(128))), "method": "order.place",
               "params": params}
        out.append(json.dumps(req, separators=(",", ":")))
        out.append(json.dumps(req, indent=rng.choice([None, 2])))
        out.append(json.dumps({"id": req["id"], "status": 200, "result": {
            "symbol": "BTCUSDT", "orderId": 12510000000 + i, "orderListId": -1,
            "clientOrderId": params["newClientOrderId"], "transactTime": 1700000000000 + i,
            "status": "NEW"}, "rateLimits": [{"rateLimitType": "ORDERS", "interval": "SECOND",
                                            "intervalNum": 10, "limit": 50, "count": 1}]},
            separators=(",", ":")))
        out.append(json.dumps({"subscriptionId": 0, "event": {
            "e": "executionReport", "E": 1700000000000 + i, "s": "BTCUSDT",
            "c": params["newClientOrderId"], "x": "NEW", "X": "NEW", "i": 12510000000 + i}},
            separators=(",", ":")))
    return out


def test_binance_ws_api_messages() -> None:
    texts = _binance_ws(300)
    for text in texts:
        check(text)
    assert sum(redact_json_text(t) != t for t in texts) == 600  # every request, no reply


@pytest.fixture(scope="module")
def sample_texts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every text the ingest of the sample captures hands to the JSON redaction."""
    from pcapflow.parsers import redact
    from pcapflow.pipelines.ingest import ingest_capture
    from pcapflow.pipelines.ingest.app_layer import AppLayer

    seen: list[str] = []
    one, many = redact.redact_json_text, redact.redact_json_texts

    def record_one(text: str) -> str:
        seen.append(text)
        return one(text)

    def record_many(texts: Any, where: np.ndarray) -> Any:
        seen.extend(t for t, w in zip(texts.to_pylist(), where, strict=True)
                    if w and t is not None)
        with pytest.MonkeyPatch.context() as inner:  # (its own calls: recorded above)
            inner.setattr(redact, "redact_json_text", one)
            return many(texts, where)

    app = AppLayer.factory([str(k) for k in sorted(SAMPLES.glob("*.keylog"))])
    mp = pytest.MonkeyPatch()
    # the converters that redact JSON (the rows modules import them where they call them)
    mp.setattr(redact, "redact_json_text", record_one)
    mp.setattr(redact, "redact_json_texts", record_many)
    try:
        for cap in sorted(SAMPLES.glob("*.pcap*")):
            root = tmp_path_factory.mktemp("ingest")
            ingest_capture(str(cap), root / "data", app_layer=app)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        mp.undo()
    return seen


def test_sample_capture_payloads(sample_texts: list[str]) -> None:
    assert len(sample_texts) > 1000
    changed = 0
    for text in sample_texts:
        check(text)
        changed += redact_json_text(text) != text
        for cut in (len(text) // 3, len(text) - 1):  # truncated frames
            check(text[:cut])
    assert changed >= 60  # the samples' auth and order messages
