"""Secret redaction: pure functions the pipeline applies before anything is written.

How this works: secrets travel in four places, one function each:

- HTTP headers (``redact_headers``): by header name (``SENSITIVE_HEADERS`` and the
  ``SENSITIVE_HEADER_PREFIXES`` families); ``Authorization`` keeps its scheme,
  cookies keep their names, URL-valued headers go through ``redact_query``.
- URLs and form bodies (``redact_query``, ``redact_form``): by parameter name.
- JSON text (``redact_json_text``): by object key, anywhere in the document.
  The text is never re-serialised: a small scanner finds each sensitive key's
  value span (``json.JSONDecoder.raw_decode`` gives its end) and only those spans
  are replaced, so every other byte (number formats like ``25000.00``, key order,
  spacing, ids) is kept exactly. Text without any sensitive key name is returned
  untouched after one substring pre-check, without parsing.
- FIX fields (``redact_fix_fields``): by tag.

Parameter and JSON key names are compared *normalised*: lower-case with ``_`` and
``-`` removed, so ``apiKey``, ``api_key``, ``api-key`` and ``APIKEY`` are one name.
Every secret value becomes the fixed marker ``REDACTED``.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "REDACTED",
    "SENSITIVE_FIELDS",
    "SENSITIVE_FIX_TAGS",
    "SENSITIVE_HEADERS",
    "SENSITIVE_HEADER_PREFIXES",
    "redact_fix_fields",
    "redact_form",
    "redact_headers",
    "redact_json_text",
    "redact_json_texts",
    "redact_query",
]

REDACTED = "REDACTED"

SENSITIVE_HEADERS = frozenset(
    {
        # RFC 9110 §11.6.2 / §11.7.2, RFC 6265 §4
        "authorization",  # also Coinbase Advanced Trade JWT, Deribit HTTP auth
        "proxy-authorization",
        "cookie",
        "set-cookie",
        # venues.md §1 Binance Spot / §2 USDⓈ-M Futures REST
        "x-mbx-apikey",
        # venues.md §3 OKX REST (OK-ACCESS-TIMESTAMP is not secret and stays)
        "ok-access-key",
        "ok-access-sign",
        "ok-access-passphrase",
        # venues.md §4 Bybit v5 REST (X-BAPI-TIMESTAMP / RECV-WINDOW stay)
        "x-bapi-api-key",
        "x-bapi-sign",
        # venues.md §6 Kraken REST: "headers API-Key/API-Sign"
        "api-key",
        "api-sign",
        # venues.md §12 Bitget (ACCESS-TIMESTAMP stays)
        "access-key",
        "access-sign",
        "access-passphrase",
        # §8 BitMEX REST auth (api-expires stays) and Gate APIv4 REST (KEY/SIGN):
        # from those venues' public API docs, not spelled out in venues.md
        "api-signature",
        "key",
        "sign",
        # generic API gateways
        "x-api-key",
        "x-auth-token",
        "x-access-token",
    }
)
"""Lower-case header names whose whole value is secret."""

SENSITIVE_HEADER_PREFIXES = (
    "cb-access-",  # venues.md §5 Coinbase (CB-ACCESS-KEY/SIGN/PASSPHRASE/TIMESTAMP)
    "kc-api-",  # venues.md §11 KuCoin (KC-API-KEY/SIGN/PASSPHRASE/...)
)
"""Header-name families redacted as a whole."""

URL_HEADERS = frozenset({"location", "content-location", "referer"})
"""Headers whose value is a URL: their query goes through ``redact_query``."""

SENSITIVE_FIELDS = frozenset(
    {
        "apikey",  # §1 Binance WS API params.apiKey (B3); §11 KuCoin URL apikey; Gate api_key
        "signature",  # §1 Binance REST/WS (B1, B3); §9 Hyperliquid {r,s,v}; Gate WS login
        "sign",  # §11 KuCoin URL sign; OKX and Bitget WS login args
        "passphrase",  # §11 KuCoin URL passphrase; OKX / Bitget login; Coinbase WS
        "token",  # §6 Kraken WS v2 params.token (K1), WS v1 "token"
        "listenkey",  # §1/§2 Binance user data stream listenKey
        "key",  # Coinbase Exchange WS subscribe {"key","passphrase","signature"}
        "jwt",  # Coinbase Advanced Trade WS user channel auth
        "clientid",  # §7 Deribit public/auth client_id (the API key's id)
        "clientsecret",  # §7 Deribit public/auth client_secret
        "accesstoken",  # §7 Deribit public/auth result; OAuth bodies
        "refreshtoken",  # §7 Deribit public/auth result; OAuth bodies
        "secret",
        "apisecret",
        "secretkey",
        "privatekey",
        "password",
        "otp",  # Kraken REST two-factor password
    }
)
"""Normalised (lower-case, no ``_``/``-``) query, form and JSON key names whose value
is secret. ``timestamp``, ``nonce`` and every order id field stay."""

POSITIONAL_AUTH_OPS = frozenset({"auth"})
"""``{"op":"auth","args":[api_key, expires, signature]}`` (Bybit v5 WS auth,
venues.md §4 [BY-WSAUTH]): secrets by position, so the whole ``args`` goes."""

SENSITIVE_FIX_TAGS = frozenset(
    {
        554,  # Password (FIX 4.3+); Coinbase FIX Logon passphrase (venues.md §5b)
        925,  # NewPassword
        96,  # RawData: Coinbase / Binance Logon signature (venues.md §5b, §13)
        553,  # Username: the API key at Coinbase and Binance FIX (venues.md §5b)
        1402,  # EncryptedPassword
        1404,  # EncryptedNewPassword
    }
)
"""FIX tags whose value is secret. RawDataLength (95) and EncryptedPasswordMethod
(1400) stay; venues.md names no custom (9xxx) auth tags."""


def _normalise(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


# --- Headers --------------------------------------------------------------------
def redact_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Copy of ``headers`` (order and names kept) with secret values replaced."""
    return [(name, _redact_header_value(name, value)) for name, value in headers]


def _redact_header_value(name: str, value: str) -> str:
    lname = name.lower()
    if lname in ("authorization", "proxy-authorization"):
        scheme, sp, _ = value.strip().partition(" ")
        return f"{scheme} {REDACTED}" if sp else REDACTED  # keep "Bearer", "Basic"
    if lname == "cookie":
        return "; ".join(_redact_cookie_pair(p) for p in value.split("; "))
    if lname == "set-cookie":
        pair, sep, attributes = value.partition(";")  # attributes are not secret
        return _redact_cookie_pair(pair) + sep + attributes
    if lname in SENSITIVE_HEADERS or lname.startswith(SENSITIVE_HEADER_PREFIXES):
        return REDACTED
    if lname in URL_HEADERS:
        return redact_query(value)
    return value


def _redact_cookie_pair(pair: str) -> str:
    cookie_name, eq, _ = pair.partition("=")
    return f"{cookie_name}={REDACTED}" if eq else REDACTED


# --- URLs and forms -------------------------------------------------------------
def redact_query(target: str) -> str:
    """A request target or URL with secret query parameter values replaced."""
    path, q, query = target.partition("?")
    if not q:
        return target
    query, hash_sign, fragment = query.partition("#")
    return path + q + redact_form(query) + hash_sign + fragment


def redact_form(body: str) -> str:
    """An ``application/x-www-form-urlencoded`` body with secret values replaced."""
    if not _may_hold_secret(body):
        return body
    pairs = body.split("&")
    for i, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and _normalise(unquote_plus(name)) in SENSITIVE_FIELDS:
            pairs[i] = f"{name}={REDACTED}"
    return "&".join(pairs)


# --- JSON -----------------------------------------------------------------------
_PRECHECK = tuple(sorted(SENSITIVE_FIELDS)) + tuple(POSITIONAL_AUTH_OPS)
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_COLON_RE = re.compile(r"\s*:\s*")
_DECODER = json.JSONDecoder()
_FALLBACK_JSON_PAIR_RE = re.compile(
    r'"([^"\\]{1,64})"(\s*:\s*)("[^"\\]*(?:\\.[^"\\]*)*(?:"|$)|[^,}\]\s]+)'
)
_FALLBACK_FORM_PAIR_RE = re.compile(r"(^|[?&\s;,])([A-Za-z0-9_.%\-]{1,64})=([^&\s;,\"]*)")


# One alternation over every name: a single regex pass instead of one substring
# scan per name (the pre-check runs on every message, so it is a hot path).
_PRECHECK_RE = re.compile("|".join(re.escape(n) for n in sorted(_PRECHECK, key=len, reverse=True)))


# The same pre-check on text that is not normalised, for Arrow's RE2 (exact for
# ASCII text): a name whose normalised form holds another name is covered by it,
# and ``[-_]*`` between letters stands for the removed separators.
_PRECHECK_MINIMAL = [n for n in _PRECHECK if not any(m != n and m in n for m in _PRECHECK)]
_PRECHECK_RAW = "|".join("[-_]*".join(re.escape(c) for c in n) for n in sorted(_PRECHECK_MINIMAL))


def _may_hold_secret(text: str) -> bool:
    """Cheap pre-check: does any sensitive name occur at all (normalised)?"""
    return _PRECHECK_RE.search(_normalise(text)) is not None


def redact_json_texts(texts: pa.StringArray, where: np.ndarray) -> pa.StringArray:
    """``redact_json_text`` applied to ``texts[i]`` for every i where ``where[i]``.

    The pre-check runs vectorised (Arrow): an ASCII text whose normalised form
    holds no sensitive name cannot change; every other selected text goes through
    ``redact_json_text`` itself, so the result is exactly the per-text one.
    """
    hit = pc.match_substring_regex(texts, _PRECHECK_RAW, ignore_case=True)
    maybe = pc.or_(hit, pc.invert(pc.string_is_ascii(texts)))
    todo = np.flatnonzero(where & maybe.to_numpy(zero_copy_only=False))
    if todo.size == 0:
        return texts
    mask = np.zeros(len(texts), dtype=bool)
    replacements: list[str] = []
    for i in todo.tolist():
        text = texts[i].as_py()
        red = redact_json_text(text)
        if red != text:
            mask[i] = True
            replacements.append(red)
    if not replacements:
        return texts
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(replacements, type=pa.string()))


def redact_json_text(text: str) -> str:
    """JSON text with the values of sensitive keys replaced, everything else kept.

    Works at any depth (``params.apiKey``, ``args[0].sign``). Text that is not
    valid JSON (a truncated frame, a form body) goes through a regex over
    ``"key": value`` and ``key=value`` pairs instead.
    """
    if not _may_hold_secret(text):
        return text
    if text.lstrip()[:1] in ("{", "["):
        spans = _json_secret_spans(text)
        if spans is not None:
            return _splice(text, spans)
    return _redact_loose(text)


def _json_secret_spans(text: str) -> list[tuple[int, int, str]] | None:
    """``(start, end, replacement)`` of every secret value; None if not JSON."""
    spans: list[tuple[int, int, str]] = []
    auth_op, args_span = False, None
    pos = 0
    while (m := _JSON_STRING_RE.search(text, pos)) is not None:
        colon = _COLON_RE.match(text, m.end())
        if colon is None:  # a string value, not a key
            pos = m.end()
            continue
        raw_key = m.group()
        key = _normalise(json.loads(raw_key) if "\\" in raw_key else raw_key[1:-1])
        start = colon.end()
        if key in SENSITIVE_FIELDS or key == "args":
            try:
                _, end = _DECODER.raw_decode(text, start)
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


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the spans (outermost wins where they nest)."""
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


def _redact_loose(text: str) -> str:
    """Regex fallback for text that is not (complete) JSON."""

    def json_pair(m: re.Match[str]) -> str:
        if _normalise(m.group(1)) not in SENSITIVE_FIELDS:
            return m.group()
        return f'"{m.group(1)}"{m.group(2)}"{REDACTED}"'

    def form_pair(m: re.Match[str]) -> str:
        if _normalise(unquote_plus(m.group(2))) not in SENSITIVE_FIELDS:
            return m.group()
        return f"{m.group(1)}{m.group(2)}={REDACTED}"

    text = _FALLBACK_JSON_PAIR_RE.sub(json_pair, text)
    return _FALLBACK_FORM_PAIR_RE.sub(form_pair, text)


# --- FIX ------------------------------------------------------------------------
def redact_fix_fields(fields: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """FIX ``(tag, value)`` pairs with secret tags' values replaced (order kept)."""
    return [(tag, REDACTED if tag in SENSITIVE_FIX_TAGS else value) for tag, value in fields]
