"""HTTP content codings (RFC 9110 §8.4): remove gzip / deflate / br from a message body.

How this works: ``Content-Encoding`` lists the codings in the order they were applied, so
they are removed last-first. Every step is bounded: zlib is driven with ``max_length`` and
brotli with ``output_buffer_limit``, in a loop that stops one byte past the caller's cap,
so a decompression bomb costs at most the cap plus one step of memory. A body cut short
(capture ended, or the raw body was capped) inflates as far as it goes without an error.
"""

from __future__ import annotations

import zlib
from typing import Literal, NamedTuple

import brotli

DecodeStatus = Literal["ok", "truncated", "failed", "unsupported"]

# One bounded decompression step: the most a bomb can allocate beyond the cap.
DECODE_CHUNK = 256 << 10

# RFC 9110 §8.4.1: the registered codings we remove; "x-gzip" is an alias of gzip (§8.4.1.3).
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
IDENTITY = "identity"


def split_codings(content_encoding: str | None) -> list[str]:
    """``Content-Encoding: gzip, identity`` -> ``["gzip", "identity"]`` (lower case)."""
    if not content_encoding:
        return []
    return [c.strip().lower() for c in content_encoding.split(",") if c.strip()]


def decode_content(
    raw: bytes, content_encoding: str | None, max_length: int
) -> tuple[bytes, DecodeStatus, str]:
    """Remove every content coding of ``raw``; return ``(body, status, detail)``.

    ``status``: ``ok``; ``truncated`` (the decoded body passed ``max_length`` and was cut
    there); ``failed`` (corrupt data; ``body`` is ``raw`` unchanged); ``unsupported`` (an
    unknown coding; ``body`` is ``raw``). ``detail`` says which coding and why.
    """
    data = raw
    status: DecodeStatus = "ok"
    for coding in reversed(split_codings(content_encoding)):
        if coding == IDENTITY:
            continue
        decoder = DECODERS.get(coding)
        if decoder is None:
            return raw, "unsupported", f"content coding {coding!r}"
        try:
            data, cut = decoder(data, max_length)
        except (zlib.error, brotli.error) as err:
            return raw, "failed", f"{coding}: {err}"
        if cut:
            status = "truncated"
    return data, status, ""


def _zlib_bounded(data: bytes, wbits: int, limit: int) -> tuple[bytes, bool]:
    """Inflate ``data`` (several concatenated streams allowed) to at most ``limit`` bytes."""
    out: list[bytes] = []
    total = 0
    ctx = zlib.decompressobj(wbits)
    while True:
        step = min(DECODE_CHUNK, limit + 1 - total)
        chunk = ctx.decompress(data, step)
        out.append(chunk)
        total += len(chunk)
        data = ctx.unconsumed_tail
        if total > limit:
            return b"".join(out)[:limit], True
        if ctx.eof:
            data = ctx.unused_data + data
            # gzip allows several members one after the other (RFC 1952 §2.2)
            if not data.strip(b"\x00"):
                return b"".join(out), False
            ctx = zlib.decompressobj(wbits)
            continue
        if not data and len(chunk) < step:
            return b"".join(out), False


def _gzip(data: bytes, limit: int) -> tuple[bytes, bool]:
    return _zlib_bounded(data, _GZIP_WBITS, limit)


def _deflate(data: bytes, limit: int) -> tuple[bytes, bool]:
    # RFC 9110 §8.4.1.2: "deflate" is a zlib stream (RFC 1950), but many servers send a
    # raw deflate stream (RFC 1951) instead; a zlib header has CMF/FLG with
    # CM = 8 and (CMF * 256 + FLG) divisible by 31.
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return _zlib_bounded(data, _ZLIB_WBITS, limit)
    return _zlib_bounded(data, _RAW_WBITS, limit)


def _br(data: bytes, limit: int) -> tuple[bytes, bool]:
    ctx = brotli.Decompressor()
    out: list[bytes] = []
    step = min(DECODE_CHUNK, limit + 1)
    chunk = ctx.process(data, output_buffer_limit=step)
    total = len(chunk)
    out.append(chunk)
    # "Following process() must only be called with empty input until
    # can_accept_more_data() once returns True."
    while total <= limit and not ctx.is_finished() and not ctx.can_accept_more_data():
        chunk = ctx.process(b"", output_buffer_limit=step)
        if not chunk:
            break
        out.append(chunk)
        total += len(chunk)
    if total > limit:
        return b"".join(out)[:limit], True
    return b"".join(out), False


DECODERS = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _br,
}
"""Content coding -> bounded decoder ``(data, limit) -> (decoded, cut)``."""


class DecodedBody(NamedTuple):
    """A message body with its content codings removed (``decode_body``)."""

    body: bytes
    decoded: bool
    """False when a coding failed or is unknown: ``body`` is then the raw bytes."""
    truncated: bool
    """The decoded body passed the cap and was cut there."""
    problem: tuple[str, str] | None
    """``(anomaly code, detail)`` when ``decoded`` is False."""


def decode_body(parts: list[bytes], content_encoding: str | None,
                max_length: int) -> DecodedBody:
    """The body of an HTTP/1.1 or HTTP/2 message from its pieces, decoded as its
    Content-Encoding says (one rule for both versions)."""
    body = b"".join(parts)
    if not (content_encoding and body):
        return DecodedBody(body, True, False, None)
    body, status, detail = decode_content(body, content_encoding, max_length)
    if status in ("failed", "unsupported"):
        code = "body_decode_failed" if status == "failed" else "unsupported_encoding"
        return DecodedBody(body, False, False, (code, detail))
    return DecodedBody(body, True, status == "truncated", None)
