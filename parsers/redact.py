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
  untouched after one substring pre-check, without parsing; ``redact_json_texts``
  runs that pre-check on a whole Arrow array in one compiled pass (below). JSON text
  without backslashes (nearly all of it) takes a faster scan with the same result,
  which needs no pre-check (``_flat_secret_spans``). Text the scan cannot read with
  confidence (invalid JSON: stray quotes, bad escapes, truncation, nesting too deep
  to parse) goes through a regex over ``"key": value`` and ``key=value`` pairs
  (``_redact_loose``), which errs on the side of redacting; nothing here raises.
- FIX fields (``redact_fix_fields``): by tag.

Parameter and JSON key names are compared *normalised*: lower-case with ``_`` and
``-`` removed, so ``apiKey``, ``api_key``, ``api-key`` and ``APIKEY`` are one name.
Every secret value becomes the fixed marker ``REDACTED``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import literal_unroll

from .jitload import kernel

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

URL_HEADERS = frozenset({"location", "content-location", "referer", ":path"})
"""Headers whose value is a URL: their query goes through ``redact_query`` (HTTP/2's
``:path`` pseudo-header is the request target, RFC 9113 §8.3.1)."""

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


_PRECHECK_MINIMAL = tuple(n for n in _PRECHECK if not any(m != n and m in n for m in _PRECHECK))
"""The names that matter: a normalised text holds a name of ``_PRECHECK`` exactly
when it holds one of these (a name holding another one is covered by it)."""


def _trie(names: Iterable[str], sep: str = "") -> str:
    """Regex matching exactly ``names`` (lower-case ASCII letters), with ``sep``
    after every letter; shaped as a trie, so the engine tries one branch per
    letter instead of one per name."""
    names = set(names)
    branches = [
        f"{first}{sep}{_trie((n[1:] for n in names if n[:1] == first), sep)}"
        for first in sorted({n[0] for n in names if n})
    ]
    if "" in names:
        branches.append("")
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"


if not all(n.isascii() and n.isalpha() and n.islower() for n in (*_PRECHECK, "args", "op")):
    raise AssertionError("_trie spells names as lower-case ASCII letters")
# One regex pass over every name instead of one substring scan per name (the
# pre-check runs on every message, so it is a hot path).
_PRECHECK_RE = re.compile(_trie(_PRECHECK_MINIMAL))


def _may_hold_secret(text: str) -> bool:
    """Cheap pre-check: does any sensitive name occur at all (normalised)?"""
    return _PRECHECK_RE.search(_normalise(text)) is not None


def redact_json_texts(texts: pa.StringArray, where: np.ndarray) -> pa.StringArray:
    """``redact_json_text`` applied to ``texts[i]`` for every i where ``where[i]``.

    The pre-check runs compiled over the whole array (``_maybe_secret``): an ASCII
    text whose normalised form holds no sensitive name cannot change; every other
    selected text goes through ``redact_json_text`` itself, so the result is
    exactly the per-text one. Null texts stay null.
    """
    todo = np.flatnonzero(_maybe_secret(texts, where))
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
    valid JSON (a truncated frame, a form body, stray quotes) goes through a regex
    over ``"key": value`` and ``key=value`` pairs instead (``_redact_loose``), so
    malformed text never hides a secret from the scan. Never raises.
    """
    low = text.lower()
    json_like = text.lstrip()[:1] in ("{", "[")
    spans: list[tuple[int, int, str]] | None = None
    flat = json_like and "\\" not in text and len(low) == len(text)
    if flat:  # the same scan, faster, and with no need for the pre-check (see there)
        spans = _flat_secret_spans(text, low)
        if spans is not None and "=" not in text:  # trusted without a parse: see there
            return _splice(text, spans) if spans else text
    if _PRECHECK_RE.search(low.replace("_", "").replace("-", "")) is None:  # _may_hold_secret
        return text
    if json_like and _is_json(text):
        if spans is None:
            spans = _json_secret_spans(text)
        if spans is not None:
            return _splice(text, spans)
    return _redact_loose(text)


def _is_json(text: str) -> bool:
    """Is ``text`` one complete JSON document (as ``json.loads`` reads it)?"""
    try:
        json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to read
        return False
    return True


def _json_secret_spans(text: str) -> list[tuple[int, int, str]] | None:
    """``(start, end, replacement)`` of every secret value of a valid JSON text
    (``_is_json``); None if the scan cannot read it.

    The scan: each string (``_JSON_STRING_RE``, searched from where the last one
    ended) followed by ``:`` is a key; a secret key's value is skipped to its end
    (``raw_decode``). ``_flat_secret_spans`` gives the same for text without ``\\``.
    On valid JSON each string the scan finds is a string of the document, so it
    reads every key; on any other text it may pair the quotes wrongly, which is why
    ``redact_json_text`` parses the whole text before it trusts this scan.
    """
    spans: list[tuple[int, int, str]] = []
    auth_op, args_span = False, None
    pos = 0
    while (m := _JSON_STRING_RE.search(text, pos)) is not None:
        colon = _COLON_RE.match(text, m.end())
        if colon is None:  # a string value, not a key
            pos = m.end()
            continue
        raw_key = m.group()
        try:
            key = _normalise(json.loads(raw_key) if "\\" in raw_key else raw_key[1:-1])
        except ValueError:  # a key like "\x", not a JSON string
            return None
        start = colon.end()
        if key in SENSITIVE_FIELDS or key == "args":
            try:
                _, end = _DECODER.raw_decode(text, start)
            except (ValueError, RecursionError):
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


# --- JSON: the scan of text without backslashes --------------------------------------
# How this works: without a backslash, each string of the scan above runs from a
# quote to the very next quote, so the scan's strings pair up the quotes in order
# from where it (re)started, and a quote opens a string exactly when an even number
# of quotes lie between that restart and it (``str.count``, in C). The only keys that
# matter are those normalising to ``_JSON_KEYS``: after ``lower()`` (which keeps every
# position when it keeps the length) such a key is ``"``, the name's letters with any
# ``-``/``_`` around them, ``"``, ``\s*:``; any other character in a key name stays
# in its normalised form (only the Kelvin sign lower-cases into an ASCII letter, and
# it does so in ``lower()`` too), so the key is no name. ``_REV_KEY_RE`` finds those
# keys in the reversed text, where each attempt starts at a colon (a few per message)
# rather than at a quote (four per key), and never stops at any other key or string.
# The candidates are then taken in text order: one that lies in a secret value
# skipped by the scan is passed over.
#
# Malformed text: this scan does not parse the whole text, so it checks instead that
# it read every candidate as a key, and gives None (and ``redact_json_text`` the
# loose regex) when it did not: a candidate whose quote closes a string (in valid
# JSON the name would stand outside any string: impossible), a value that does not
# decode, or one followed by anything but ``,``, ``}``, ``]`` or the end (after
# spaces). A result then covers every value the loose regex would redact: that
# regex's pairs ``"key": value`` with a secret key are candidates here (whatever the
# alignment of its quotes), each such candidate's value span starts where the
# regex's value starts and, ending at a delimiter, holds all of it. Only its
# ``key=value`` pairs are not seen here, so text holding ``=`` is trusted only once
# it parses (``redact_json_text``). On valid JSON none of the checks fails, and the
# result is the one of the general scan.
# ``redact_json_text`` runs this scan before the pre-check, and skips the pre-check
# unless the scan returns None or the text holds ``=``: a span means a key holding a
# name (or ``"auth"``), which the pre-check would have seen; no span means the text
# comes back as it is (the loose regex, too, would change nothing). A message
# without secrets pays for one search at its colons instead of the pre-check's
# search at every character.

_JSON_KEYS = SENSITIVE_FIELDS | {"args", "op"}
_SPACES_RE = re.compile(r"\s*")
_REDACTED_VALUE, _REDACTED_ARGS = f'"{REDACTED}"', f'["{REDACTED}"]'
_VALUE_ENDS = ",}]"  # what may follow a value (and "", the end: ``"" in`` is True)
_AFTER_VALUE_RE = re.compile(r"\s*(?:[,}\]]|\Z)")
_REV_KEY_RE = re.compile(
    r':\s*"([-_]*' + _trie((n[::-1] for n in _JSON_KEYS), "[-_]*") + ')"'
)


def _flat_secret_spans(text: str, low: str) -> list[tuple[int, int, str]] | None:
    """``_json_secret_spans`` of a text without ``\\`` whose ``lower()`` is ``low``
    (of the same length); None where the text is not read with confidence (above)."""
    rev = low[::-1]
    if (m := _REV_KEY_RE.search(rev)) is None:  # the common case: no key to look at
        return []
    keys: list[tuple[int, int, int]] = []  # (colon, key start, key end) in ``rev``
    while m is not None:
        keys.append((m.start(), m.start(1), m.end(1)))
        m = _REV_KEY_RE.search(rev, m.end())
    last = len(text) - 1
    spans: list[tuple[int, int, str]] = []
    auth_op, args_span = False, None
    count, decode = text.count, _DECODER.raw_decode
    pos = 0  # the scan's restart: outside any string
    for rev_colon, rev_start, rev_end in reversed(keys):
        quote = last - rev_end  # the key's opening quote
        if quote < pos:
            continue  # inside a secret value
        if count('"', pos, quote) & 1:
            return None  # this quote closes a string: the quotes do not pair up
        start = last - rev_colon + 1  # after the colon, then after \s* as in _COLON_RE
        if text[start : start + 1].isspace():  # (str.isspace() is re's \s)
            start = _SPACES_RE.match(text, start).end()  # type: ignore[union-attr]
        pos = start
        key = low[quote + 1 : last - rev_start + 1].replace("_", "").replace("-", "")
        if key == "op":
            if any(text.startswith(f'"{op}"', start) for op in POSITIONAL_AUTH_OPS):
                auth_op = True
            continue
        try:
            _, end = decode(text, start)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return None
        if text[end : end + 1] not in _VALUE_ENDS and _AFTER_VALUE_RE.match(text, end) is None:
            return None  # e.g. 12abc, "a"b: the value is not what decodes
        if key == "args":
            args_span = (start, end, _REDACTED_ARGS)
        else:
            spans.append((start, end, _REDACTED_VALUE))
            pos = end  # the scan goes on after the value
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
    """Regex fallback for text that is not (complete) JSON.

    Every ``"key": value`` and ``key=value`` the pair regexes match *at any
    position* is looked at, not only those of one left-to-right pass: where stray
    quotes make such a pass pair them up wrongly (``{"a":"x"apiKey":"s"}``) or a
    value swallows the next pair (``a=x?sign=s``), a secret pair still shows where
    it starts. Overlapping values are replaced as one. With an ``"op": "auth"``
    pair, ``"args"`` values go whole (to their closing bracket, or the end of the
    text), as in the JSON scan.
    """
    spans: list[tuple[int, int, str]] = [
        (m.start(3), m.end(3), _REDACTED_VALUE)
        for m in _LOOSE_JSON_PAIR_RE.finditer(text)
        if _normalise(m.group(1)) in SENSITIVE_FIELDS
    ]
    spans += [
        (m.start(3), m.end(3), REDACTED)
        for m in _LOOSE_FORM_PAIR_RE.finditer(text)
        if _normalise(unquote_plus(m.group(2))) in SENSITIVE_FIELDS
    ]
    if _LOOSE_AUTH_OP_RE.search(text) is not None:
        spans += [(m.end(), _loose_value_end(text, m.end()), _REDACTED_ARGS)
                  for m in _LOOSE_ARGS_RE.finditer(text)]
    return _splice_merged(text, spans) if spans else text


# the pair regex at every position (a match of the look-ahead is empty, so the
# search goes on at the next character and matches may overlap)
_LOOSE_JSON_PAIR_RE = re.compile(f"(?={_FALLBACK_JSON_PAIR_RE.pattern})")
_LOOSE_FORM_PAIR_RE = re.compile(f"(?={_FALLBACK_FORM_PAIR_RE.pattern})")
_LOOSE_AUTH_OP_RE = re.compile(
    r'"[-_]*o[-_]*p[-_]*"\s*:\s*"(?:' + "|".join(map(re.escape, POSITIONAL_AUTH_OPS)) + ')"',
    re.IGNORECASE,
)
_LOOSE_ARGS_RE = re.compile(r'"[-_]*a[-_]*r[-_]*g[-_]*s[-_]*"\s*:\s*', re.IGNORECASE)
_LOOSE_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|$)|[^,}\]\s]*')


def _loose_value_end(text: str, start: int) -> int:
    """End of the value at ``start`` as the loose regex sees it; an array runs to its
    closing bracket (brackets counted, strings not) or to the end of the text."""
    if not text.startswith("[", start):
        return _LOOSE_TOKEN_RE.match(text, start).end()  # type: ignore[union-attr]
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _splice_merged(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace the spans, overlapping ones merged into one (the first's replacement)."""
    merged: list[list[Any]] = []
    for start, end, replacement in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, replacement])
    return _splice(text, [(a, b, r) for a, b, r in merged])


# --- JSON: the batch pre-check (compiled) -------------------------------------------
# How this works: ``_maybe_secret`` tells, for every text of an Arrow string array
# at once, whether ``not text.isascii() or _may_hold_secret(text)``, reading the
# array's UTF-8 bytes in place (a character is non-ASCII iff a byte of it is >= 0x80).
# Two passes, both Numba-compiled:
#
# 1. ``_flag_blocks`` reads the whole data buffer in 64-byte blocks, in a loop LLVM
#    vectorises (no table look-ups, no early exit), and flags a block when it holds
#    a byte >= 0x80 or three bytes that may begin a name (``_may_begin``: the name's
#    first letter, then its second letter or a separator, then its third letter,
#    its second or a separator; either case). Every name has at least three
#    letters, so every occurrence of one begins with such bytes.
# 2. ``_precheck``: each selected text looks only at the flagged blocks it
#    overlaps, byte by byte and exactly (``_name_at``: skip ``-``/``_``, fold case,
#    compare with every name), bounded by the text's own end.
#
# On the text payloads of a 400k-message WebSocket capture (100 MB of JSON) this
# takes ~45 ms where Arrow's RE2 (``match_substring_regex`` over the names with
# ``[-_]*`` between the letters, or'd with ``string_is_ascii``) took ~190 ms
# (``benchmarks/redact_precheck.py``).

if not all(n.isascii() and n.isalpha() and n.islower() and len(n) >= 3
           for n in _PRECHECK_MINIMAL):
    raise AssertionError("the kernels fold case with | 0x20 and read three bytes")
_HEADS = tuple(tuple(np.uint8(ord(c)) for c in head)
               for head in sorted({n[:3] for n in _PRECHECK_MINIMAL}))
"""The names' first three letters, unrolled into ``_may_begin`` at compile time."""
_NAMES = np.zeros((len(_PRECHECK_MINIMAL), max(map(len, _PRECHECK_MINIMAL))), np.uint8)
_NAME_LENGTHS = np.array([len(n) for n in _PRECHECK_MINIMAL], np.int64)
for _i, _name in enumerate(_PRECHECK_MINIMAL):
    _NAMES[_i, : len(_name)] = np.frombuffer(_name.encode(), np.uint8)

_BLOCK = 64
_CASE = np.uint8(0x20)  # an ASCII letter | 0x20 is its lower case
_DASH, _UNDERSCORE = np.uint8(ord("-")), np.uint8(ord("_"))
# the separators as ``_may_begin`` sees them, case-folded (so CR and DEL pass for
# separators too: that only costs an exact look at their block)
_DASH_FOLDED, _UNDERSCORE_FOLDED = _DASH | _CASE, _UNDERSCORE | _CASE
_HIGH_BIT = np.uint8(0x80)


def _maybe_secret(texts: pa.Array | pa.ChunkedArray, where: np.ndarray) -> np.ndarray:
    """Boolean per text: ``where[i]``, not null, and ``not texts[i].isascii() or
    _may_hold_secret(texts[i])``."""
    if isinstance(texts, pa.ChunkedArray):
        parts, start = [], 0
        for chunk in texts.chunks:
            parts.append(_maybe_secret(chunk, where[start : start + len(chunk)]))
            start += len(chunk)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    large = pa.types.is_large_string(texts.type)
    if not (large or pa.types.is_string(texts.type)):  # e.g. string_view
        texts, large = texts.cast(pa.large_string()), True
    n = len(texts)
    select = np.array(where, dtype=np.bool_)  # the kernel's own copy
    if texts.null_count:
        select &= texts.is_valid().to_numpy(zero_copy_only=False)
    _, offsets_buf, data_buf = texts.buffers()
    dtype = np.dtype(np.int64 if large else np.int32)
    # a sliced array starts ``texts.offset`` entries into its offsets buffer
    offsets = np.frombuffer(offsets_buf, dtype, count=n + 1, offset=texts.offset * dtype.itemsize)
    first, last = int(offsets[0]), int(offsets[-1])
    if data_buf is None or first == last:  # every text is empty
        return np.zeros(n, dtype=bool)
    data = np.frombuffer(data_buf, np.uint8, count=last - first, offset=first)
    return _precheck(data, offsets.astype(np.int64) - first, select, _NAMES, _NAME_LENGTHS)


@kernel(cache=True, nogil=True)
def _precheck(data, offsets, select, names, lengths):
    """``_maybe_secret`` of the texts ``data[offsets[i]:offsets[i + 1]]``."""
    flags = _flag_blocks(data)
    out = np.zeros(select.shape[0], np.bool_)
    for i in range(select.shape[0]):
        start, end = offsets[i], offsets[i + 1]
        if not select[i] or start == end:
            continue
        for block in range(start // _BLOCK, (end - 1) // _BLOCK + 1):
            lo, hi = max(start, block * _BLOCK), min(end, (block + 1) * _BLOCK)
            if flags[block] and _hit_in(data, lo, hi, end, names, lengths):
                out[i] = True
                break
    return out


@kernel(cache=True, nogil=True)
def _flag_blocks(data):
    """Per 64-byte block of ``data``: may a text there be non-ASCII or hold a name?"""
    n = data.shape[0]
    flags = np.zeros((n + _BLOCK - 1) // _BLOCK, np.bool_)
    whole = max(n - 2, 0) // _BLOCK  # the blocks whose bytes all have two successors
    for block in range(whole):
        w = data[block * _BLOCK : (block + 1) * _BLOCK + 2]
        high = np.uint8(0)
        hit = False
        for j in range(_BLOCK):
            # every result cast back to uint8: Numba widens integer arithmetic to
            # 64 bits, and LLVM would then put 8 bytes in a vector instead of 64
            high = np.uint8(high | w[j])
            hit |= _may_begin(np.uint8(w[j] | _CASE), np.uint8(w[j + 1] | _CASE),
                              np.uint8(w[j + 2] | _CASE))
        flags[block] = hit or high >= _HIGH_BIT
    for block in range(whole, flags.shape[0]):  # the rest, byte by byte
        flags[block] = _hit_in(data, block * _BLOCK, min(n, (block + 1) * _BLOCK), n,
                               _NAMES, _NAME_LENGTHS)
    return flags


# (inlined in Numba's IR: as a call, LLVM would not vectorise ``_flag_blocks``)
@kernel(cache=True, nogil=True, inline="always")
def _may_begin(a, b, c):
    """May the case-folded bytes ``a b c`` begin a name (with separators)?"""
    b_sep = (b == _DASH_FOLDED) | (b == _UNDERSCORE_FOLDED)
    c_sep = (c == _DASH_FOLDED) | (c == _UNDERSCORE_FOLDED)
    hit = False
    for head in literal_unroll(_HEADS):
        hit |= (a == head[0]) & ((b == head[1]) | b_sep) & ((c == head[2]) | (c == head[1]) | c_sep)
    return hit


@kernel(cache=True, nogil=True)
def _hit_in(data, lo, hi, end, names, lengths):
    """Is a byte of ``data[lo:hi]`` non-ASCII, or does a name begin there (in a
    text ending at ``end``)?"""
    for j in range(lo, hi):
        if data[j] >= _HIGH_BIT:
            return True
        if j + 2 < end and _may_begin(np.uint8(data[j] | _CASE), np.uint8(data[j + 1] | _CASE),
                                      np.uint8(data[j + 2] | _CASE)) \
                and _name_at(data, j, end, names, lengths):
            return True
    return False


@kernel(cache=True, nogil=True)
def _name_at(data, j, end, names, lengths):
    """Does a name begin at ``data[j]`` (normalised: ``-``/``_`` skipped, case folded)?"""
    for k in range(names.shape[0]):
        p = j
        for m in range(lengths[k]):
            if m > 0:
                while p < end and (data[p] == _DASH or data[p] == _UNDERSCORE):
                    p += 1
            if p >= end or np.uint8(data[p] | _CASE) != names[k, m]:
                break
            p += 1
        else:
            return True
    return False


# --- FIX ------------------------------------------------------------------------
def redact_fix_fields(fields: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """FIX ``(tag, value)`` pairs with secret tags' values replaced (order kept)."""
    return [(tag, REDACTED if tag in SENSITIVE_FIX_TAGS else value) for tag, value in fields]
