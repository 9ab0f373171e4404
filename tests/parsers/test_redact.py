"""Secret redaction: every auth example of venues.md is redacted, and everything
else (symbol, price, client order ids, request ids, number formats) is kept
byte for byte."""

from __future__ import annotations

import json

import pytest
from helpers.fix_messages import logon
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.fix import FixSession
from pcapflow.parsers.redact import (
    REDACTED,
    SENSITIVE_FIX_TAGS,
    redact_fix_fields,
    redact_form,
    redact_headers,
    redact_json_text,
    redact_query,
)

SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


# --- Headers ---------------------------------------------------------------------
HEADER_CASES = [
    ("X-MBX-APIKEY", KEY),  # §1 Binance
    ("OK-ACCESS-KEY", KEY), ("OK-ACCESS-SIGN", SIG), ("OK-ACCESS-PASSPHRASE", "pp"),  # §3 OKX
    ("X-BAPI-API-KEY", KEY), ("X-BAPI-SIGN", SIG),  # §4 Bybit
    ("CB-ACCESS-KEY", KEY), ("CB-ACCESS-SIGN", SIG), ("CB-ACCESS-PASSPHRASE", "pp"),  # §5
    ("API-Key", KEY), ("API-Sign", SIG),  # §6 Kraken
    ("KC-API-KEY", KEY), ("KC-API-SIGN", SIG), ("KC-API-PASSPHRASE", "pp"),  # §11 KuCoin
    ("ACCESS-KEY", KEY), ("ACCESS-SIGN", SIG), ("ACCESS-PASSPHRASE", "pp"),  # §12 Bitget
    ("api-signature", SIG),  # BitMEX
]


@pytest.mark.parametrize(("name", "value"), HEADER_CASES)
def test_venue_auth_headers(name: str, value: str) -> None:
    kept = [("Host", "api.example.com"), ("X-BAPI-TIMESTAMP", "1711001595207"),
            ("OK-ACCESS-TIMESTAMP", "2020-12-08T09:08:57.715Z"), ("Content-Type", "x")]
    out = redact_headers([kept[0], (name, value), *kept[1:]])
    assert out == [kept[0], (name, REDACTED), *kept[1:]]


def test_authorization_cookies_and_urls() -> None:
    headers = [
        ("Authorization", "Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig"),  # §5 Coinbase JWT
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("Cookie", "session=abc123; theme=dark"),
        ("Set-Cookie", "session=abc123; Path=/; HttpOnly"),
        ("Location", f"/api/v3/order?symbol=BTCUSDT&signature={SIG}"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),  # a nonce, not a secret
    ]
    assert redact_headers(headers) == [
        ("Authorization", "Bearer REDACTED"),
        ("proxy-authorization", "Basic REDACTED"),
        ("Cookie", "session=REDACTED; theme=REDACTED"),
        ("Set-Cookie", "session=REDACTED; Path=/; HttpOnly"),
        ("Location", "/api/v3/order?symbol=BTCUSDT&signature=REDACTED"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]


# --- Query strings and forms -------------------------------------------------------
def test_binance_rest_query_b1() -> None:
    target = (
        "/api/v3/order?symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1"
        f"&price=0.2&newClientOrderId=abc&timestamp=1499827319559&signature={SIG}"
    )
    out = redact_query(target)
    assert out == target.replace(SIG, REDACTED)
    assert redact_query("/api/v3/ping") == "/api/v3/ping"


def test_kucoin_ws_url_and_listen_key() -> None:
    url = f"wss://wsapi.kucoin.com/v1/private?apikey={KEY}&sign={SIG}&passphrase=pp&timestamp=1"
    assert redact_query(url) == (
        "wss://wsapi.kucoin.com/v1/private?apikey=REDACTED&sign=REDACTED"
        "&passphrase=REDACTED&timestamp=1"
    )
    assert redact_query("/api/v3/userDataStream?listenKey=pqia91ma19a5s61cv6a81va65sd#x") == (
        "/api/v3/userDataStream?listenKey=REDACTED#x"
    )


def test_forms() -> None:
    k2 = "nonce=1616492376594&ordertype=limit&type=buy&volume=1.25&pair=XBTUSD&price=27500"
    assert redact_form(k2) is k2  # §6 Kraken K2: nothing secret
    body = f"symbol=LTCBTC&origClientOrderId=myOrder1&timestamp=1&signature={SIG}&otp=123456"
    assert redact_form(body) == "symbol=LTCBTC&origClientOrderId=myOrder1&timestamp=1" \
        "&signature=REDACTED&otp=REDACTED"
    assert redact_form("api%5Fkey=x&API-KEY=y&a") == "api%5Fkey=REDACTED&API-KEY=REDACTED&a"


# --- JSON ----------------------------------------------------------------------------
JSON_CASES = [
    (  # §1 Binance WS API B3
        '{"id":"e2a85d9f-07a5-4f94-8d5f-789dc3deb097","method":"order.place","params":{'
        '"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","price":"0.1","quantity":"10",'
        f'"timeInForce":"GTC","timestamp":1655716096498,"apiKey":"{KEY}","signature":"{SIG}"}}}}',
        ["apiKey", "signature"],
    ),
    (  # §6 Kraken WS v2 K1 (note 25000.00: no re-serialisation)
        '{"method":"add_order","params":{"order_type":"limit","side":"buy","symbol":"BTC/USD",'
        '"limit_price":25000.00,"order_qty":0.01,"token":"G38a1tGFzqGiUCmnegBcm8d4nfP3tytiNQz6tk'
        'CBYXY","cl_ord_id":"my-client-id-123"},"req_id":1}',
        ["token"],
    ),
    (  # OKX / Bitget WS login
        '{"op": "login", "args": [{"apiKey": "985d5b66-57ce-40fb-b714-afc0b9787083", '
        '"passphrase": "123456", "timestamp": "1538054050", '
        '"sign": "7L+zFQ+CEgGu5rzCj4+BdV2/uUHGqddA9pI6ztsRRPs="}]}',
        ["apiKey", "passphrase", "sign"],
    ),
    (  # §7 Deribit public/auth, request and response
        '{"jsonrpc":"2.0","id":9929,"method":"public/auth","params":{"grant_type":'
        '"client_credentials","client_id":"fo7WAPRm4P","client_secret":"W0H6FJW4IRPZ1MOQ8FP6K"}}',
        ["client_id", "client_secret"],
    ),
    (
        '{"jsonrpc":"2.0","id":9929,"result":{"access_token":"1582628593469.1MbQ-J_4.CBP",'
        '"expires_in":31536000,"refresh_token":"1582628593469.1GP4rQd0.A9Wa","scope":"x",'
        '"token_type":"bearer"},"usIn":1,"usOut":2}',
        ["access_token", "refresh_token"],
    ),
    (  # §9 Hyperliquid: the signature is an object
        '{"action":{"type":"order","orders":[{"a":0,"b":true,"p":"30000","s":"0.1","r":false,'
        '"t":{"limit":{"tif":"Gtc"}},"c":"0x1234567890abcdef1234567890abcdef"}],'
        '"grouping":"na"},"nonce":1700000000000,"signature":{"r":"0xab","s":"0xcd","v":27}}',
        ["signature"],
    ),
    (  # Gate WS login
        '{"time":1681984544,"channel":"spot.login","event":"api","payload":{"api_key":"ea83fad2'
        '","signature":"a3b5ff","timestamp":"1681984544","req_id":"request-1"}}',
        ["api_key", "signature"],
    ),
    (  # Coinbase Exchange WS subscribe (key/passphrase/signature)
        '{\n  "type": "subscribe",\n  "product_ids": ["BTC-USD"],\n  "signature": "Tt1Ff",\n'
        '  "key": "aabbcc",\n  "passphrase": "pp",\n  "timestamp": "1609459200"\n}',
        ["signature", "key", "passphrase"],
    ),
]


def _by_hand(text: str, keys: list[str]) -> str:
    """The expected output, computed independently: replace each key's value via
    json's own idea of where it ends."""
    decoder = json.JSONDecoder()
    for key in keys:
        start = text.index(f'"{key}"')
        colon = text.index(":", start + len(key) + 2) + 1
        while text[colon] == " ":
            colon += 1
        _, end = decoder.raw_decode(text, colon)
        text = text[:colon] + f'"{REDACTED}"' + text[end:]
    return text


@pytest.mark.parametrize(("text", "keys"), JSON_CASES)
def test_venue_json_auth(text: str, keys: list[str]) -> None:
    out = redact_json_text(text)
    assert out == _by_hand(text, keys)
    json.loads(out)


def test_bybit_ws_auth_positional_args() -> None:
    """Bybit v5 WS auth (§4 [BY-WSAUTH]): api key and signature by position."""
    text = '{"req_id":"10001","op":"auth","args":["api_key_value",1662350400000,"5d2f8c"]}'
    assert redact_json_text(text) == '{"req_id":"10001","op":"auth","args":["REDACTED"]}'
    order = '{"reqId":"test-005","op":"order.create","args":[{"symbol":"ETHUSDT","sign":"x"}]}'
    assert redact_json_text(order) == order.replace('"sign":"x"', '"sign":"REDACTED"')


def test_acks_and_orders_untouched() -> None:
    """Messages without a sensitive key come back as the very same object."""
    for text in (
        '{"id":"NEWtestBTC0123","op":"order","data":[{"clOrdId":"","ordId":"288981657420439575"'
        ',"tag":"","sCode":"0","sMsg":""}],"code":"0","msg":""}',  # §3 O1 ack
        '{"reqId":"test-005","header":{"X-BAPI-TIMESTAMP":"1711001595207","X-BAPI-RECV-WINDOW"'
        ':"8000"},"op":"order.create","args":[{"symbol":"ETHUSDT","price":"2800"}]}',  # §4 Y2
        '{"client_order_id":"11111-00000-000000","product_id":"BTC-USD","side":"BUY"}',  # §5 C1
    ):
        assert redact_json_text(text) is text


def test_escapes_and_strings_that_look_like_keys() -> None:
    text = '{"msg":"the \\"apiKey\\": \\"x\\" field","api\\u004bey":"secret","id":1}'
    assert redact_json_text(text) == (
        '{"msg":"the \\"apiKey\\": \\"x\\" field","api\\u004bey":"REDACTED","id":1}'
    )


def test_not_json_fallbacks() -> None:
    truncated = '{"symbol":"BTCUSDT","apiKey":"abc","signature":"de'
    assert redact_json_text(truncated) == (
        '{"symbol":"BTCUSDT","apiKey":"REDACTED","signature":"REDACTED"'
    )
    form = f"symbol=LTCBTC&signature={SIG}&timestamp=1"
    assert redact_json_text(form) == "symbol=LTCBTC&signature=REDACTED&timestamp=1"
    assert redact_json_text('[1, 2, {"sign": 5e3}]') == '[1, 2, {"sign": "REDACTED"}]'


_KEYS = st.sampled_from(
    ["symbol", "price", "clientOrderId", "id", "orderLinkId", "apiKey", "api_key", "sign",
     "signature", "passphrase", "token", "Password", "refresh-token", "args", "op"]
)
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=8))
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_SECRET = {"apikey", "sign", "signature", "passphrase", "token", "password", "refreshtoken"}


def _expected(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: REDACTED if k.lower().replace("_", "").replace("-", "") in _SECRET
            else _expected(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expected(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from([None, 2]))
def test_any_json_document(doc: object, indent: int | None) -> None:
    text = json.dumps(doc, indent=indent)
    if '"auth"' in text:
        return  # Bybit's positional rule, tested above
    assert json.loads(redact_json_text(text)) == _expected(doc)


# --- FIX -----------------------------------------------------------------------------
def test_fix_logon_fields() -> None:
    """§5b Coinbase Logon: 553 API key, 554 passphrase, 96 signature (95 length stays)."""
    (msg,) = FixSession(1).feed("out", logon(), 0, 0)
    out = redact_fix_fields(msg.fields)  # type: ignore[attr-defined]
    assert [t for t, _ in out] == [t for t, _ in msg.fields]  # type: ignore[attr-defined]
    values = dict(out)
    assert values[553] == values[554] == values[96] == REDACTED
    assert values[95] == "12" and values[49] == "CLIENT1" and values[1137] == "9"
    assert {t for t, v in out if v == REDACTED} == SENSITIVE_FIX_TAGS & set(values)
    assert redact_fix_fields([(1400, "101"), (1402, "enc"), (925, "new")]) == [
        (1400, "101"), (1402, REDACTED), (925, REDACTED),
    ]


# --- the vectorised pre-check (batch path) ----------------------------------------
_ALPHABET = 'aeikgnpstwyorhdcljuKEYSIGN_-"{}:[], 0é\u212a'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=_ALPHABET, max_size=40), min_size=1, max_size=20))
def test_redact_json_texts_equals_per_text(texts: list[str]) -> None:
    import numpy as np
    import pyarrow as pa
    from pcapflow.parsers.redact import redact_json_texts

    where = np.array([i % 3 != 2 for i in range(len(texts))])
    got = redact_json_texts(pa.array(texts, type=pa.string()), where).to_pylist()
    want = [redact_json_text(t) if w else t for t, w in zip(texts, where, strict=True)]
    assert got == want


def test_redact_json_texts_finds_separated_names() -> None:
    import numpy as np
    import pyarrow as pa
    from pcapflow.parsers.redact import redact_json_texts

    texts = ['{"API_KEY":"abc"}', '{"s-i_g-n":"x"}', '{"price":"1"}', '{"pass_Phrase":"p"}']
    got = redact_json_texts(pa.array(texts), np.ones(4, dtype=bool)).to_pylist()
    assert got == ['{"API_KEY":"REDACTED"}', '{"s-i_g-n":"REDACTED"}', '{"price":"1"}',
                   '{"pass_Phrase":"REDACTED"}']
