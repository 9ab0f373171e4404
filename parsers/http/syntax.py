"""HTTP/1.1 message syntax (RFC 9112 §2-§7): start lines, field lines, chunk-size lines.

Pure functions and compiled patterns used by ``http.HttpSession``; nothing here keeps state.
"""

from __future__ import annotations

import re

from ..events import Direction

Headers = list[tuple[str, str]]
"""Field lines in wire order as ``(name, value)``, decoded as Latin-1 (RFC 9110 §5.5)."""

# ---- RFC 9112 §2-§5: message format ------------------------------------------------
# "HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]";
# §2.2: "a recipient MAY recognize a single LF as a line terminator".
HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# §3: request-line = method SP request-target SP HTTP-version
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (\S+) (HTTP/\d\.\d)")
# §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
STATUS_LINE = re.compile(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?")
_FIELD_NAME = re.compile(_TOKEN)
# What the first bytes of a head must look like; checked before waiting for the whole
# head so that a non-HTTP stream (TLS, binary) is refused at once, not after max_header.
_REQUEST_PREFIX = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}(?: |$)")
_RESPONSE_PREFIX = b"HTTP/"
_PREFIX_PROBE = 33  # bytes checked: a 32-byte method and its SP
# §7.1: chunk-size = 1*HEXDIG; chunk-ext = *( BWS ";" BWS chunk-ext-name ... )
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Mid-stream: where the next message head begins (§2.1): a start line (§3, §4), field
# lines, a blank line, all there. Not only at a line start: a body seldom ends with a
# newline. A request's method must be a registered one (RFC 9110 §9.3, PATCH: RFC 5789)
# since the tail of a cut request line ("ST /order HTTP/1.1") is a token too.
_FIELDS_TO_BLANK = rb"(?:" + _TOKEN + rb":[^\r\n]*\r?\n)*\r?\n"
START_LINE_AT: dict[str, re.Pattern[bytes]] = {
    "out": re.compile(rb"(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE)"
                      rb" [!-~]+ HTTP/1\.[01]\r?\n" + _FIELDS_TO_BLANK),
    # (a reason phrase of words: one ending in a body's '"}' is no status line)
    "in": re.compile(rb"HTTP/1\.[01] [0-9]{3}(?: [A-Za-z' -]*)?\r?\n" + _FIELDS_TO_BLANK),
}
MAX_START_LINE = 64 << 10
"""Bytes kept while hunting for a message head (the default ``max_header``)."""
_OWS = b" \t"  # §5.6.3: OWS = *( SP / HTAB )


def parse_fields(lines: list[bytes]) -> Headers | None:
    """§5: ``field-line = field-name ":" OWS field-value OWS``; None if one is malformed.

    §5.2: obs-fold (a line starting with SP/HTAB) is replaced by one SP. A field name
    followed by whitespace before the colon is rejected (§5.1: "MUST reject").
    """
    out: Headers = []
    for raw in lines:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not out:
                return None
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip(_OWS).decode("latin-1"))
            continue
        raw_name, colon, raw_value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(raw_name):
            return None
        out.append((raw_name.decode("latin-1"), raw_value.strip(_OWS).decode("latin-1")))
    return out


def plausible_head(direction: Direction, data: bytearray) -> bool:
    """Could ``data`` be the start of a request line (out) or status line (in)?"""
    if direction == "out":
        return _REQUEST_PREFIX.match(data[:_PREFIX_PROBE]) is not None
    n = min(len(data), len(_RESPONSE_PREFIX))
    return data[:n] == _RESPONSE_PREFIX[:n]
