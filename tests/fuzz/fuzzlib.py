"""Shared pieces of the fuzz harnesses: mutations, the stream container, budgets.

How this works. Every fuzz target is a function ``run(data: bytes) -> None`` that
feeds ``data`` to one part of pcapflow and checks what it promises (no exception
but the documented ones, invariants on what comes out). Inputs are *seeds* (real
bytes: sample and public captures, streams extracted from them) changed by a
short list of *mutations* that hypothesis draws and shrinks: bit flips, byte
overwrites, "interesting" integers written over length fields, truncation,
deletion, insertion, duplication and splices of another seed. Pure random bytes
are drawn too.

Session parsers take several pieces of two directions, so their inputs are a
*container*: records of ``tag (1 byte) | length (3 bytes, big-endian) | data``.
Tag 0 is an ``out`` piece, 1 an ``in`` piece, 2 metadata (a key log, a header
value), 3 a gap (its data is the gap length as text). The decoder is lenient (a
mutated length just takes what is left), so every byte string is a valid input
and a regression file is just the container bytes.

A run is bounded three ways: ``max_examples`` per target (scaled by the
``PCAPFLOW_FUZZ_LONG`` environment variable), a per-input wall-clock alarm
(``PER_INPUT_SECONDS``: an input taking longer is a hang), and an address-space
limit on the child process (``MEMORY_HEADROOM``: a blow-up is a ``MemoryError``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence

from hypothesis import strategies as st

PER_INPUT_SECONDS = 2.0
"""An input that takes longer than this is a hang bug (issue 6)."""

MEMORY_HEADROOM = 3 << 29
"""Address space (1.5 GiB) a fuzz child may add once its modules are loaded: its
RLIMIT_AS is the loaded size plus this. The loaded size itself is large and
varies (Numba, pyarrow and DuckDB reserve ~1-2 GiB they never touch), so the
limit is relative; pcapflow streams in bounded chunks and needs far less."""

LONG_FACTOR = 100
"""``PCAPFLOW_FUZZ_LONG=1`` multiplies every target's example count by this
(``PCAPFLOW_FUZZ_LONG=N`` for N > 1 multiplies by N)."""

TAG_OUT, TAG_IN, TAG_META, TAG_GAP = 0, 1, 2, 3
MAX_CONTAINER_RECORD = (1 << 24) - 1  # what a 3-byte length can say

# Values written over length fields: limits of every integer width and their
# neighbours, the TLS/WebSocket/pcap protocol maxima, and small ones.
INTERESTING = (
    0, 1, 2, 3, 4, 5, 7, 8, 16, 20, 24, 32, 64, 125, 126, 127, 128, 255, 256,
    0x3FFF, 0x4000, 0x4001, 0x4800, 0x4801, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
    0x40000, 0x40001, 0xFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
    0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
)


def long_factor() -> int:
    """How many times the CI example counts a run does (1 in CI)."""
    raw = os.environ.get("PCAPFLOW_FUZZ_LONG", "")
    if not raw or raw == "0":
        return 1
    return LONG_FACTOR if raw == "1" else max(1, int(raw))


# --- the container ---------------------------------------------------------------
def pack(records: Sequence[tuple[int, bytes]]) -> bytes:
    """Records ``(tag, data)`` as container bytes (see the module docstring)."""
    out = bytearray()
    for tag, data in records:
        for i in range(0, max(len(data), 1), MAX_CONTAINER_RECORD):
            part = data[i : i + MAX_CONTAINER_RECORD]
            out += bytes([tag]) + len(part).to_bytes(3, "big") + part
    return bytes(out)


def unpack(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Records of container bytes; any byte string decodes (lengths are clipped)."""
    pos = 0
    while pos < len(data):
        tag = data[pos] & 3
        n = int.from_bytes(data[pos + 1 : pos + 4].ljust(3, b"\0"), "big")
        body = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
        yield tag, body


def gap_length(body: bytes) -> int:
    """A gap record's length (0 when its data is not a number)."""
    digits = body[:20]
    return int(digits) if digits.isdigit() else 0


# --- mutations -------------------------------------------------------------------
def _pos(buf: bytearray | bytes, raw: int) -> int:
    return raw % (len(buf) + 1)


def _flip(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    if buf:
        i = a % len(buf)
        buf[i] ^= 1 << (b % 8)


def _set_byte(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    if buf:
        buf[a % len(buf)] = b & 0xFF


def _set_int(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    width = (1, 2, 3, 4, 8)[c % 5]
    value = INTERESTING[b % len(INTERESTING)] & ((1 << (8 * width)) - 1)
    if c & 8:  # nearby values too: off-by-one is where length bugs live
        value = (value + (c >> 4) % 5 - 2) & ((1 << (8 * width)) - 1)
    raw = value.to_bytes(width, "little" if c & 16 else "big")
    i = _pos(buf, a)
    buf[i : i + width] = raw


def _truncate(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    del buf[_pos(buf, a) :]


def _delete(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    i = _pos(buf, a)
    del buf[i : i + 1 + b % 64]


def _insert(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    i = _pos(buf, a)
    buf[i:i] = struct.pack("<Q", b)[: 1 + c % 8]


def _duplicate(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    i = _pos(buf, a)
    buf[i:i] = buf[i : i + 1 + b % 4096] * (1 + c % 3)


def _splice(buf: bytearray, seeds: Sequence[bytes], a: int, b: int, c: int) -> None:
    other = seeds[c % len(seeds)]
    j = _pos(other, b)
    i = _pos(buf, a)
    buf[i:] = other[j : j + 1 + (c >> 3) % 65536]


MUTATIONS = (_flip, _set_byte, _set_int, _truncate, _delete, _insert, _duplicate, _splice)

_OP = st.tuples(
    st.integers(0, len(MUTATIONS) - 1),
    st.integers(0, 1 << 32),
    st.integers(0, 1 << 32),
    st.integers(0, 1 << 16),
)


def apply(seeds: Sequence[bytes], index: int, ops: Sequence[tuple[int, int, int, int]]) -> bytes:
    """Seed ``index`` with ``ops`` applied in order."""
    buf = bytearray(seeds[index])
    for kind, a, b, c in ops:
        MUTATIONS[kind](buf, seeds, a, b, c)
    return bytes(buf)


def mutated(
    seeds: Sequence[bytes], *, max_ops: int = 6, raw_size: int = 2048
) -> st.SearchStrategy[bytes]:
    """Mutated seeds (mostly) and random bytes (sometimes)."""
    if not seeds:
        return st.binary(max_size=raw_size)
    muts = st.builds(
        lambda i, ops: apply(seeds, i, ops),
        st.integers(0, len(seeds) - 1),
        st.lists(_OP, min_size=1, max_size=max_ops),
    )
    return st.one_of(muts, st.binary(max_size=raw_size))
