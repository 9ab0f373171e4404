"""A loose, implementation-independent view of secrets in text, for the redaction
tests: ``loose_secrets`` finds every value of a secret-named key (JSON pairs and
``key=value`` pairs, tried at every position), ``assert_no_secret_left`` checks a
redacted text kept none of them."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_plus

from pcapflow.parsers.redact import REDACTED, SENSITIVE_FIELDS


def normalise_key(name: str) -> str:
    """A key as the redaction compares it: lower case, without ``_`` and ``-``."""
    return name.lower().replace("_", "").replace("-", "")


def is_valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


# The loose view of secrets, independent of the implementation: each regex is tried
# at every position (not in one left-to-right pass), so a pair shows wherever it
# starts, whatever stray quotes or values lie before it.
_PAIR_RE = re.compile(r'"([^"\\]{1,64})"\s*:\s*("[^"\\]*(?:\\.[^"\\]*)*(?:"|$)|[^,}\]\s]+)')
_FORM_RE = re.compile(r"(?:^|(?<=[?&\s;,]))([A-Za-z0-9_.%\-]{1,64})=([^&\s;,\"]*)")


def loose_secrets(text: str) -> list[tuple[int, str]]:
    """``(position, value)`` of every value of a secret-named key, JSON pairs (string
    values without their quotes) and ``key=value`` pairs."""
    out = []
    for i in range(len(text)):
        if (m := _PAIR_RE.match(text, i)) and normalise_key(m.group(1)) in SENSITIVE_FIELDS:
            v, at = m.group(2), m.start(2)
            if v.startswith('"'):
                v, at = v[1:-1] if len(v) > 1 and v.endswith('"') else v[1:], at + 1
            out.append((at, v))
        if (m := _FORM_RE.match(text, i)) \
                and normalise_key(unquote_plus(m.group(1))) in SENSITIVE_FIELDS:
            out.append((m.start(2), m.group(2)))
    return out


def _occurrences(s: str, v: str) -> int:
    return len(re.findall(f"(?={re.escape(v)})", s))


def assert_no_secret_left(text: str, out: str) -> None:
    """Each secret value's occurrences in ``out`` are fewer than in ``text`` by at
    least its secret occurrences. Checked for values that cannot be made up by a
    replacement (no ``"[]=``): the replacements, marked off, then split ``out`` into
    pieces of ``text`` outside the replaced values."""
    if REDACTED in text:
        return
    marked = out.replace(REDACTED, "\uffff")
    found: dict[str, set[int]] = {}
    for at, v in loose_secrets(text):
        if v and not any(c in v for c in '"[]=\uffff'):
            found.setdefault(v, set()).add(at)
    for v, at in found.items():
        assert _occurrences(marked, v) <= _occurrences(text, v) - len(at), (text, out, v)
