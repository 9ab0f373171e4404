"""HPACK (RFC 7541) decoder for a passive observer: one per direction of a connection.

Why not the ``hpack`` package's ``Decoder``: two reasons, both measured or structural.
(1) Speed: on order traffic (a fresh Huffman-coded ``:path`` with a signature on every
request) ``hpack.Decoder.decode`` costs ~140 µs per header block and its Huffman
decoder ~230 µs for a 160-octet string, more than the whole HTTP/1.1 message path.
Here Huffman strings are decoded by a compiled bit-walk over the code tree
(``_huffman``), ~2 µs. (2) A capture that starts mid-connection does not know the
dynamic table: ``hpack`` can only fail, where we must keep decoding the fields that
do not depend on it, and flag, never guess, the ones that do. The Huffman code itself
(RFC 7541 Appendix B) is taken from ``hpack.huffman_constants``; the static table
(Appendix A) from ``hpack.table``; the tests check this decoder against RFC 7541
Appendix C and against ``hpack.Encoder`` output.

How the unknown table works: the dynamic table is a list of *known* entries, newest
first, plus ``tail_unknown``: older entries may exist whose contents we never saw
(a capture begun mid-connection, a header block lost in a capture gap or one that
failed to decode). An index into the known part decodes; an index past it while
``tail_unknown`` holds is *unknown* (the field is reported as such, and a field
that would insert an entry of unknown size makes the whole table unknown). The
unknown tail is certainly evicted once the known entries leave no room for even
one entry (32 octets, §4.1) within the maximum size; then the table is exact again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

from ..jitload import kernel

# ---- §4.1: table entry size; §6.3 / RFC 9113 §6.5.2: the default maximum ------------
ENTRY_OVERHEAD = 32
DEFAULT_TABLE_SIZE = 4096
STATIC_TABLE: tuple[tuple[str, str], ...] = tuple(
    (n.decode("latin-1"), v.decode("latin-1")) for n, v in HeaderTable.STATIC_TABLE)
"""Appendix A, indices 1..61 (stored 0-based)."""
STATIC_LEN = len(STATIC_TABLE)

# Caps: an integer longer than this many continuation octets is garbage (§5.1 leaves
# it to the implementation); a string longer than the block cannot be in it.
MAX_INT_OCTETS = 5
HUFFMAN_CACHE = 4096  # decoded Huffman strings kept (repeated literal values)


class HpackError(ValueError):
    """A header block that cannot be decoded (RFC 7541 "decoding error"); ``code`` is
    the anomaly code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


# ---- Appendix B: the Huffman code as a binary tree --------------------------------------
EOS = 256
def _build_tree() -> tuple[np.ndarray, np.ndarray]:
    child = np.full((2 * (EOS + 1), 2), -1, dtype=np.int32)
    sym = np.full(2 * (EOS + 1), -1, dtype=np.int32)
    nodes = 1
    for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH,
                                                strict=True)):
        node = 0
        for k in range(length - 1, -1, -1):
            bit = (code >> k) & 1
            if child[node, bit] < 0:
                child[node, bit] = nodes
                nodes += 1
            node = child[node, bit]
        sym[node] = symbol
    return child[:nodes].copy(), sym[:nodes].copy()


_CHILD, _SYM = _build_tree()


@kernel(cache=True, nogil=True)
def _huffman(src: np.ndarray, child: np.ndarray, sym: np.ndarray, out: np.ndarray) -> int:
    """Decode ``src`` into ``out``; the output length, or -2 for an EOS symbol, -3 for
    bad padding (§5.2: "A padding strictly longer than 7 bits MUST be treated as a
    decoding error"; "A padding not corresponding to the most significant bits of the
    code for the EOS symbol MUST be treated as a decoding error")."""
    node = 0
    n = 0
    depth = 0
    ones = True
    for i in range(src.size):
        b = src[i]
        for k in range(7, -1, -1):
            bit = (b >> k) & 1
            node = child[node, bit]
            if node < 0:
                return -3
            depth += 1
            if bit == 0:
                ones = False
            s = sym[node]
            if s >= 0:
                if s == 256:
                    return -2
                out[n] = s
                n += 1
                node = 0
                depth = 0
                ones = True
    if depth > 7 or not ones:
        return -3
    return n


_huffman_cache: dict[bytes, str] = {}


def decode_huffman(data: bytes) -> str:
    """A Huffman-coded string literal (§5.2) as text (Latin-1, one char per octet)."""
    hit = _huffman_cache.get(data)
    if hit is not None:
        return hit
    out = np.empty(len(data) * 8 // 5 + 1, dtype=np.uint8)
    n = _huffman(np.frombuffer(data, dtype=np.uint8), _CHILD, _SYM, out)
    if n < 0:
        raise HpackError("hpack_bad_huffman",
                         "EOS in a Huffman string" if n == -2 else "bad Huffman padding")
    text = out[:n].tobytes().decode("latin-1")
    if len(_huffman_cache) >= HUFFMAN_CACHE:
        _huffman_cache.clear()
    _huffman_cache[data] = text
    return text


# ---- §5: primitive type representations ---------------------------------------------
def decode_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """§5.1 integer with an N-bit prefix at ``data[pos]``; returns ``(value, next pos)``."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    for _ in range(MAX_INT_OCTETS):
        if pos >= len(data):
            raise HpackError("hpack_truncated", "integer runs past the block")
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
    raise HpackError("hpack_bad_integer", f"integer longer than {MAX_INT_OCTETS} octets")


def decode_string(data: bytes, pos: int) -> tuple[str, int]:
    """§5.2 string literal: H bit, 7-bit-prefix length, octets."""
    if pos >= len(data):
        raise HpackError("hpack_truncated", "string literal missing")
    huffman = data[pos] & 0x80
    length, pos = decode_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("hpack_truncated", f"string of {length} octets runs past the block")
    raw = data[pos:end]
    return (decode_huffman(raw) if huffman else raw.decode("latin-1")), end


@dataclass(slots=True)
class HeaderBlock:
    """A decoded header block: ``headers`` in order; ``unknown`` counts the fields
    that referenced dynamic-table entries whose contents are not known (left out of
    ``headers``)."""

    headers: list[tuple[str, str]]
    unknown: int = 0


class HpackDecoder:
    """The decoding context of one direction (§2.2): static table + dynamic table.

    ``max_size``: the size the encoder chose by its last dynamic table size update
    (§6.3); ``limit``: the most the decoder's side allows (SETTINGS_HEADER_TABLE_SIZE
    it announced, RFC 9113 §6.5.2). ``known=False`` starts mid-connection.
    """

    __slots__ = ("entries", "known_size", "limit", "max_size", "tail_unknown")

    def __init__(self, *, known: bool = True, max_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.entries: list[tuple[str, str, int]] = []  # (name, value, size), newest first
        self.known_size = 0
        self.max_size = max_size
        self.limit = max_size
        self.tail_unknown = not known

    def forget(self) -> None:
        """A header block was lost or failed: the table's contents are unknown now."""
        self.entries.clear()
        self.known_size = 0
        self.tail_unknown = True

    # ---- §4.3-§4.4: size and eviction ------------------------------------------------
    def _evict(self) -> None:
        while self.entries and self.known_size > self.max_size:
            self.known_size -= self.entries.pop()[2]
        if self.tail_unknown and self.known_size > self.max_size - ENTRY_OVERHEAD:
            self.tail_unknown = False  # no room left for any older entry

    def _add(self, name: str, value: str) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.max_size:
            # §4.4: "an attempt to add an entry larger than the maximum size causes the
            # table to be emptied of all existing entries and results in an empty table"
            self.entries.clear()
            self.known_size = 0
            self.tail_unknown = False
            return
        self.entries.insert(0, (name, value, size))
        self.known_size += size
        self._evict()

    def _lookup(self, index: int) -> tuple[str, str] | None:
        """§2.3.3 index space; None for an entry of the unknown tail."""
        if index == 0:
            raise HpackError("hpack_bad_index", "index 0")
        if index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        i = index - STATIC_LEN - 1
        if i < len(self.entries):
            name, value, _ = self.entries[i]
            return name, value
        if self.tail_unknown:
            return None
        raise HpackError("hpack_bad_index", f"index {index} past the dynamic table "
                                            f"({len(self.entries)} entries)")

    # ---- §6: binary format ----------------------------------------------------------------
    def decode(self, block: bytes) -> HeaderBlock:
        """Decode one complete header block; raises ``HpackError`` (the table is then
        unknown: entries may have been added before the error)."""
        try:
            return self._decode(block)
        except HpackError:
            self.forget()
            raise
        except IndexError:  # a representation cut off by the end of the block
            self.forget()
            raise HpackError("hpack_truncated", "representation runs past the block") from None

    def _decode(self, data: bytes) -> HeaderBlock:
        out: list[tuple[str, str]] = []
        unknown = 0
        pos, n = 0, len(data)
        fields = 0
        while pos < n:
            b = data[pos]
            if b & 0x80:  # §6.1 indexed header field
                index = b & 0x7F
                if index == 0x7F:
                    index, pos = decode_int(data, pos, 7)
                else:
                    pos += 1
                fields += 1
                if 0 < index <= STATIC_LEN:  # the common case, inline
                    out.append(STATIC_TABLE[index - 1])
                    continue
                entry = self._lookup(index)
                if entry is None:
                    unknown += 1
                else:
                    out.append(entry)
            elif b & 0x40:  # §6.2.1 literal with incremental indexing
                name, value, pos, known_name = self._literal(data, pos, 6)
                if known_name:
                    out.append((name, value))
                    self._add(name, value)
                else:
                    unknown += 1
                    self.forget()  # an entry of unknown size went in
                fields += 1
            elif b & 0x20:  # §6.3 dynamic table size update
                if fields:
                    # §4.2: "This dynamic table size update MUST occur at the beginning
                    # of the first header block following the change"
                    raise HpackError("hpack_late_size_update",
                                     "table size update after a header field")
                size, pos = decode_int(data, pos, 5)
                if size > self.limit:
                    raise HpackError("hpack_size_over_limit",
                                     f"table size {size} over the limit {self.limit}")
                self.max_size = size
                self._evict()
                if size == 0:
                    self.tail_unknown = False
            else:  # §6.2.2 without indexing / §6.2.3 never indexed (4-bit prefix)
                name, value, pos, known_name = self._literal(data, pos, 4)
                if known_name:
                    out.append((name, value))
                else:
                    unknown += 1
                fields += 1
        return HeaderBlock(out, unknown)

    def _literal(self, data: bytes, pos: int, prefix: int) -> tuple[str, str, int, bool]:
        index, pos = decode_int(data, pos, prefix)
        known = True
        if index:
            entry = self._lookup(index)
            if entry is None:
                known, name = False, ""
            else:
                name = entry[0]
        else:
            name, pos = decode_string(data, pos)
        value, pos = decode_string(data, pos)
        return name, value, pos, known
