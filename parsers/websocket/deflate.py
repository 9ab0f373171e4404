"""permessage-deflate (RFC 7692): negotiated parameters and one inflater per direction.

How this works: the ``Sec-WebSocket-Extensions`` header of the server's 101 response says
what was agreed (RFC 7692 §5). Each direction has its own compressor, so we keep one raw
inflate context per direction (``zlib.decompressobj(-window_bits)``). A compressed message
is the concatenation of its frames' payloads; the sender removed the trailing
``00 00 ff ff`` of its sync flush, so we append it back before inflating (§7.2.2). With
``*_no_context_takeover`` the sender starts each message with an empty window, and so does
our inflater; otherwise the context carries over from message to message.

Output is bounded: ``decompress`` is called with ``max_length`` in a loop and stops once
the caller's cap is passed, so a deflate bomb never allocates more than the cap plus one
chunk (``INFLATE_CHUNK``).
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..events import Direction

if TYPE_CHECKING:
    from .. import native

# ---- RFC 7692 §7: the "permessage-deflate" extension --------------------------------
EXTENSION_NAME = "permessage-deflate"
# §7.1.2: window bits are 8..15; 15 when absent.
MIN_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15
# §7.2.2: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end" (sender);
# the receiver appends them back.
SYNC_FLUSH_TAIL = b"\x00\x00\xff\xff"
# zlib cannot inflate a raw stream with an 8-bit window (its deflater silently uses 9),
# so the inflater never goes below this.
_ZLIB_MIN_RAW_WBITS = 9
# Size of one bounded ``decompress`` step: the most a bomb can allocate past the cap.
INFLATE_CHUNK = 256 << 10

MAX_DEFLATE_RATIO = 2100
"""More than deflate can expand: a length/distance pair (at least 2 bits) yields at
most 258 bytes, so one input byte yields at most 4 x 258 = 1032 (doubled for margin)."""

InflateStatus = Literal["ok", "failed", "bomb"]


def parse_extensions(header: str | None) -> list[tuple[str, dict[str, str | None]]]:
    """Split a ``Sec-WebSocket-Extensions`` value into ``[(name, {param: value})]``.

    RFC 6455 §9.1: ``extension-list = 1#extension; extension = token *( ";" param )``;
    a param value may be a quoted string. Names and param names are case-insensitive.
    """
    out: list[tuple[str, dict[str, str | None]]] = []
    if not header:
        return out
    for ext in header.split(","):
        parts = [p.strip() for p in ext.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str | None] = {}
        for p in parts[1:]:
            if not p:
                continue
            name, eq, value = p.partition("=")
            v = value.strip().strip('"') if eq else None
            params[name.strip().lower()] = v
        out.append((parts[0].lower(), params))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PerMessageDeflateParams:
    """The agreed permessage-deflate parameters (RFC 7692 §7.1), from the server response."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_max_window_bits: int = MAX_WINDOW_BITS

    @classmethod
    def from_header(cls, header: str | None) -> PerMessageDeflateParams | None:
        """The first ``permessage-deflate`` offer in ``header``, or None if there is none.

        Bad window-bits values fall back to 15, which inflates anything a smaller window
        produced; a passive observer should decode what it can rather than refuse.
        """
        for name, params in parse_extensions(header):
            if name != EXTENSION_NAME:
                continue
            return cls(
                server_no_context_takeover="server_no_context_takeover" in params,
                client_no_context_takeover="client_no_context_takeover" in params,
                server_max_window_bits=_window_bits(params.get("server_max_window_bits")),
                client_max_window_bits=_window_bits(params.get("client_max_window_bits")),
            )
        return None

    def for_direction(self, direction: Direction) -> tuple[int, bool]:
        """``(window_bits, no_context_takeover)`` of the sender of ``direction``.

        ``out`` is client to server, so it uses the ``client_*`` parameters.
        """
        if direction == "out":
            return self.client_max_window_bits, self.client_no_context_takeover
        return self.server_max_window_bits, self.server_no_context_takeover

    def as_dict(self) -> dict[str, int | bool]:
        """Plain dict for event fields and tables."""
        return {
            "server_no_context_takeover": self.server_no_context_takeover,
            "client_no_context_takeover": self.client_no_context_takeover,
            "server_max_window_bits": self.server_max_window_bits,
            "client_max_window_bits": self.client_max_window_bits,
        }


def _window_bits(value: str | None) -> int:
    # §7.1.2.1/§7.1.2.2: absent or valueless (client offer) means 15
    if value is None or not value.isdigit():
        return MAX_WINDOW_BITS
    bits = int(value)
    return bits if MIN_WINDOW_BITS <= bits <= MAX_WINDOW_BITS else MAX_WINDOW_BITS


class MessageInflater:
    """Raw-inflate context of one direction; ``inflate`` takes one whole message."""

    __slots__ = ("_ctx", "_window", "_window_len", "no_context_takeover", "window_bits")

    def __init__(self, window_bits: int = MAX_WINDOW_BITS, no_context_takeover: bool = False,
                 *, history: bytes = b""):
        self.window_bits = max(window_bits, _ZLIB_MIN_RAW_WBITS)
        self.no_context_takeover = no_context_takeover
        # ``history``: a preset window (zdict), as if these bytes had come out already
        self._ctx = (zlib.decompressobj(-self.window_bits, zdict=history) if history
                     else zlib.decompressobj(-self.window_bits))
        # the last outputs, at least 2**window_bits bytes of them: a zlib context cannot
        # be pickled, so resuming across capture files (``__getstate__``) re-primes a
        # fresh one with that window as its preset dictionary, which inflates the next
        # message identically (a message ends on a sync flush: byte-aligned, nothing
        # pending but the window); kept as a queue, the window is joined only then
        self._window: deque[bytes] = deque([history] if history else ())
        self._window_len = len(history)

    def reset(self) -> None:
        """Start over with an empty window (after an error, or per message)."""
        self._ctx = zlib.decompressobj(-self.window_bits)
        self._window.clear()
        self._window_len = 0

    def __getstate__(self) -> dict[str, object]:
        return {"window_bits": self.window_bits, "no_context_takeover": self.no_context_takeover,
                "window": b"" if self.no_context_takeover else b"".join(self._window)[
                    -(1 << self.window_bits):]}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(int(state["window_bits"]),  # type: ignore[misc, call-overload]
                      bool(state["no_context_takeover"]),
                      history=bytes(state["window"]))  # type: ignore[call-overload]

    def _remember(self, payload: bytes, status: InflateStatus) -> tuple[bytes, InflateStatus]:
        if status == "ok" and not self.no_context_takeover and payload:
            q = self._window
            q.append(payload)
            self._window_len += len(payload)
            size = 1 << self.window_bits
            while self._window_len - len(q[0]) >= size:
                self._window_len -= len(q.popleft())
        return payload, status

    def inflate(self, compressed: bytes, max_length: int) -> tuple[bytes, InflateStatus]:
        """Inflate one message's payload; at most ``max_length`` bytes come back.

        Returns ``(payload, status)``: ``ok``; ``failed`` (corrupt data; payload is what
        came out before the error; the context is reset); ``bomb`` (more than
        ``max_length`` would come out: payload holds the first ``max_length`` bytes,
        inflating stopped, and the context is reset since its window is now unknown).
        """
        if self.no_context_takeover:
            self.reset()
        data = compressed + SYNC_FLUSH_TAIL
        ctx = self._ctx
        try:
            if len(data) * MAX_DEFLATE_RATIO <= max_length:
                # cannot exceed the cap: no output limit (zlib's faster path)
                step = max_length + 1
                chunk = ctx.decompress(data)
            else:
                step = min(INFLATE_CHUNK, max_length + 1)
                chunk = ctx.decompress(data, step)
        except zlib.error:
            self.reset()
            return b"", "failed"
        if len(chunk) < step and not ctx.eof and not ctx.unconsumed_tail:
            return self._remember(chunk, "ok")  # the common case: one call, all of it
        return self._remember(*self._inflate_rest(chunk, step, max_length))

    def _inflate_rest(self, chunk: bytes, step: int, max_length: int
                      ) -> tuple[bytes, InflateStatus]:
        """``inflate`` after a first ``decompress(data, step)`` call returned ``chunk``."""
        out: list[bytes] = [chunk]
        total = len(chunk)
        data = self._ctx.unconsumed_tail
        try:
            while True:
                if total > max_length:
                    self.reset()
                    return b"".join(out)[:max_length], "bomb"
                if self._ctx.eof:
                    # §7.2.3.4: a sender may flush with a BFINAL=1 block. zlib stops
                    # there; bytes after it (another block, padding, our appended tail)
                    # start a new raw stream whose window is what came out so far.
                    data = self._ctx.unused_data + data
                    self._restart_after_final(b"".join(out))
                    if not data:
                        return b"".join(out), "ok"
                elif not data and len(chunk) < step:
                    # (a full chunk may leave output pending inside zlib with no input left)
                    return b"".join(out), "ok"
                # ask one byte more than the cap allows, so "exactly max_length" is ok
                step = min(INFLATE_CHUNK, max_length + 1 - total)
                chunk = self._ctx.decompress(data, step)
                out.append(chunk)
                total += len(chunk)
                data = self._ctx.unconsumed_tail
        except zlib.error:
            self.reset()
            return b"".join(out), "failed"

    def _restart_after_final(self, produced: bytes) -> None:
        # Only this message's output is known as history; a later message reaching
        # further back than that (legal, rare) fails with "failed".
        window = produced[-(1 << self.window_bits) :]
        self._ctx = zlib.decompressobj(-self.window_bits, zdict=window) if window else (
            zlib.decompressobj(-self.window_bits)
        )
        self._window.clear()  # the whole message's output is remembered when it ends
        self._window_len = 0


# ---- Mid-stream: the history before the capture is unknown ---------------------------
UNKNOWN_BYTE = 0
"""What a payload byte that depends on uncaptured history becomes (NUL: no JSON text
holds one unescaped, so such a message never parses, and never matches)."""


class MidstreamInflater:
    """Inflater of a direction whose earlier messages were not captured.

    How this works: with context takeover a message may copy bytes from up to a window
    (``2**window_bits``) of output before it, which we never saw. So every message is
    inflated twice, once against a preset window of all ``00`` bytes (``_a``) and once
    against all ``ff`` (``_b``). A literal comes out the same in both; a copy from the
    missing history comes out ``00`` in one and ``ff`` in the other, and so does every
    later copy of such a byte. So a byte is *known* exactly when both outputs agree, and
    then it is right. Once the last full window of output is known, nothing can reach
    the unknown history any more: ``exact`` turns True and ``exact_inflater`` hands over
    ``_a``, whose state is now the sender's.

    A sender without context takeover never refers to earlier messages: its messages
    come out fully known from the first one on (``unknown_messages`` stays 0).
    """

    __slots__ = ("_a", "_b", "_known_tail", "exact", "messages", "unknown_bytes",
                 "unknown_messages", "window_bits")

    def __init__(self, window_bits: int = MAX_WINDOW_BITS) -> None:
        self.window_bits = max(window_bits, _ZLIB_MIN_RAW_WBITS)
        self.messages = 0  # compressed messages inflated
        self.unknown_messages = 0  # ... of which with at least one unknown byte
        self.unknown_bytes = 0
        self._a = self._b = MessageInflater(self.window_bits)
        self.exact = False
        self._known_tail = 0
        self.reset()

    def reset(self) -> None:
        """History unknown (again): at the start, after a failure or a lost message."""
        size = 1 << self.window_bits
        self._a = MessageInflater(self.window_bits, history=bytes(size))
        self._b = MessageInflater(self.window_bits, history=b"\xff" * size)
        self._known_tail = 0  # output bytes known since the last unknown one
        self.exact = False

    def inflate(self, compressed: bytes, max_length: int) -> tuple[bytes, InflateStatus]:
        """``MessageInflater.inflate`` with unknown bytes as ``UNKNOWN_BYTE``."""
        payload, status, _ = self.inflate_marked(compressed, max_length)
        return payload, status

    def inflate_marked(self, compressed: bytes, max_length: int
                       ) -> tuple[bytes, InflateStatus, int]:
        """``(payload, status, unknown)``: ``unknown`` bytes of ``payload`` depend on
        history before the capture and are ``UNKNOWN_BYTE`` there."""
        self.messages += 1
        out_a, status = self._a.inflate(compressed, max_length)
        if self.exact:
            return out_a, status, 0
        out_b, status_b = self._b.inflate(compressed, max_length)
        if status_b != status or len(out_a) != len(out_b):
            status = "failed"
        a = np.frombuffer(out_a, dtype=np.uint8)
        diff = a != np.frombuffer(out_b, dtype=np.uint8) if status != "failed" else (
            np.ones(a.size, dtype=bool))
        unknown = int(np.count_nonzero(diff))
        if unknown:
            self.unknown_messages += 1
            self.unknown_bytes += unknown
            out_a = np.where(diff, np.uint8(UNKNOWN_BYTE), a).tobytes()
            self._known_tail = a.size - 1 - int(np.flatnonzero(diff)[-1])
        else:
            self._known_tail += a.size
        if status != "ok":
            self.reset()  # the context is lost: unknown history again
        elif self._known_tail >= 1 << self.window_bits:
            self.exact = True
            self._b = self._a
        return out_a, status, unknown

    def exact_inflater(self) -> MessageInflater | None:
        """The running context once ``exact`` (the sender's own), else None."""
        return self._a if self.exact else None


def new_inflater(window_bits: int = MAX_WINDOW_BITS, no_context_takeover: bool = False
                 ) -> MessageInflater | native.NativeInflater:
    """The inflater of one direction: zlib called from compiled code when the native
    libraries are there (``native.NativeInflater``, same results), else ``MessageInflater``."""
    from .. import native  # (libcrypto and zlib: loaded with the first compressed message)

    if native.AVAILABLE:
        return native.NativeInflater(window_bits, no_context_takeover)
    return MessageInflater(window_bits, no_context_takeover)
