"""libcrypto (AEAD) and zlib (inflate) called from Numba kernels, without Python per record.

How this works: the batch path spends its time per TLS record and per WebSocket
message. ``cryptography`` and ``zlib`` do the work in C, but each call costs a
Python round trip (arguments, a new ``bytes``, a nonce built in Python), which was
more than the AES-GCM itself (~1.8 us against ~0.3 us for a 300-byte record). Here
the same C libraries are called directly from compiled loops:

- ``llvmlite`` loads the system ``libcrypto`` (OpenSSL >= 1.1) and ``libz``
  permanently, and the functions are declared as Numba ``ExternalFunction``s, bound
  by symbol name when a kernel is compiled or loaded from Numba's cache (so the
  cache stays valid across processes: no address is baked in). Pointers travel as
  integers (``arr.ctypes.data``).
- ``AeadContext`` is one ``EVP_CIPHER_CTX`` with its key set (AES-128/256-GCM or
  ChaCha20-Poly1305, the suites of almost all TLS 1.2/1.3 traffic);
  ``open_records`` decrypts a whole run of application-data records with it: the
  nonce and additional data of RFC 8446 §5.2-5.3 / RFC 5288 / RFC 7905 are built
  in the loop, which stops at the first record that fails or is not plain
  application data (the caller's general path takes that record).
- ``NativeInflater`` keeps a ``z_stream`` in a NumPy array; ``inflate`` (one
  message, the general path) and ``ws_payloads`` (all the simple frames of a batch)
  share ``_inflate_into``, so both paths go through the same state and give the same
  result. Its rules are those of ``deflate.MessageInflater``, the pure-Python
  fallback: the tail ``00 00 ff ff`` is appended, output stops one byte past the cap
  (``bomb``, the first ``max_length`` bytes kept), corrupt data is ``failed`` with
  an empty payload, and after a BFINAL block the stream restarts with this
  message's output as its window. Both reset their context after ``failed`` and
  ``bomb``.

Why by hand: no library offers batched AEAD or inflate over many small buffers, and
both are the floor of the WebSocket-over-TLS path. Nothing here is needed: when a
library is missing (or ``PCAPFLOW_NO_NATIVE=1``), ``AVAILABLE`` is False and the
callers keep their ``cryptography`` / ``zlib`` code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from numba import types
from numba.core.typing import signature

from .jitload import kernel

_P = types.intp  # every pointer, as an integer
_I = types.int32

# ---- libcrypto (OpenSSL EVP) ------------------------------------------------------
EVP_DecryptInit_ex = types.ExternalFunction("EVP_DecryptInit_ex", signature(_I, _P, _P, _P, _P, _P))
EVP_DecryptUpdate = types.ExternalFunction("EVP_DecryptUpdate", signature(_I, _P, _P, _P, _P, _I))
EVP_DecryptFinal_ex = types.ExternalFunction("EVP_DecryptFinal_ex", signature(_I, _P, _P, _P))
EVP_CIPHER_CTX_ctrl = types.ExternalFunction("EVP_CIPHER_CTX_ctrl", signature(_I, _P, _I, _I, _P))
_EVP_CTRL_AEAD_SET_TAG = 0x11
_TAG_LENGTH = 16

# ---- zlib ---------------------------------------------------------------------------
z_inflate = types.ExternalFunction("inflate", signature(_I, _P, _I))
z_inflateReset = types.ExternalFunction("inflateReset", signature(_I, _P))
z_inflateSetDictionary = types.ExternalFunction(
    "inflateSetDictionary", signature(_I, _P, _P, _I))
_Z_SYNC_FLUSH = 2
_Z_STREAM_END = 1
_Z_NEED_DICT = 2
_Z_BUF_ERROR = -5
# z_stream on LP64, as 64-bit words: next_in 0, avail_in 1 (uInt + padding), total_in 2,
# next_out 3, avail_out 4, total_out 5, msg 6, state 7, zalloc 8, zfree 9, opaque 10,
# data_type 11, adler 12, reserved 13 (zlib.h; 112 bytes).
_Z_WORDS = 14
_Z_NEXT_IN, _Z_AVAIL_IN, _Z_NEXT_OUT, _Z_AVAIL_OUT = 0, 1, 3, 4
_Z_MAX_AVAIL = 1 << 30

OK, FAILED, BOMB = 0, 1, 2
STATUS_NAMES = ("ok", "failed", "bomb")


def _names(names: list[str]) -> Iterator[str | None]:
    yield from names[:-1]
    yield ctypes.util.find_library(names[-1])


def _open(names: list[str], symbols: tuple[str, ...]) -> tuple[ctypes.CDLL, str] | None:
    """The first of ``names`` (then ``find_library`` of the last, which runs
    ``ldconfig -p``: asked only when the usual names fail) that has ``symbols``."""
    for name in _names(names):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(lib, s) for s in symbols):
            return lib, name
    return None


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    if os.environ.get("PCAPFLOW_NO_NATIVE") == "1" or os.name != "posix":
        return None
    crypto = _open(["libcrypto.so.3", "libcrypto.so.1.1", "crypto"],
                   ("EVP_CIPHER_CTX_new", "EVP_chacha20_poly1305", "EVP_aes_256_gcm",
                    "EVP_DecryptInit_ex", "EVP_DecryptUpdate", "EVP_DecryptFinal_ex",
                    "EVP_CIPHER_CTX_ctrl", "EVP_CIPHER_CTX_free"))
    z = _open(["libz.so.1", "z"],
              ("inflate", "inflateInit2_", "inflateReset", "inflateSetDictionary", "inflateEnd",
               "zlibVersion"))
    if crypto is None or z is None:
        return None
    try:
        import llvmlite.binding as llvm

        llvm.load_library_permanently(crypto[1])
        llvm.load_library_permanently(z[1])
    except Exception:  # any failure means: use the Python path
        return None
    return crypto[0], z[0]


_LIBS = _load()
AVAILABLE = _LIBS is not None

if _LIBS is not None:
    _crypto, _z = _LIBS
    _crypto.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    _crypto.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    for _name in ("EVP_aes_128_gcm", "EVP_aes_256_gcm", "EVP_chacha20_poly1305"):
        getattr(_crypto, _name).restype = ctypes.c_void_p
    _crypto.EVP_DecryptInit_ex.argtypes = [ctypes.c_void_p] * 5
    _z.zlibVersion.restype = ctypes.c_char_p
    _z.inflateInit2_.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    _z.inflateEnd.argtypes = [ctypes.c_void_p]
    _z.inflateSetDictionary.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint]
    if hasattr(_z, "inflateGetDictionary"):  # zlib >= 1.2.7.1
        _z.inflateGetDictionary.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                            ctypes.POINTER(ctypes.c_uint)]
    _Z_VERSION = _z.zlibVersion()


# ---- AEAD -------------------------------------------------------------------------
class AeadContext:
    """One direction's AEAD key in an ``EVP_CIPHER_CTX`` (freed with the object)."""

    __slots__ = ("ptr",)

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    @classmethod
    def create(cls, cipher: str, key: bytes) -> AeadContext | None:
        """A context for ``cipher`` (``aes-gcm`` / ``chacha20-poly1305``), or None."""
        if not AVAILABLE:
            return None
        if cipher == "aes-gcm" and len(key) in (16, 32):
            evp = _crypto.EVP_aes_128_gcm() if len(key) == 16 else _crypto.EVP_aes_256_gcm()
        elif cipher == "chacha20-poly1305" and len(key) == 32:
            evp = _crypto.EVP_chacha20_poly1305()
        else:
            return None
        ptr = _crypto.EVP_CIPHER_CTX_new()
        if not ptr:
            return None
        if _crypto.EVP_DecryptInit_ex(ptr, evp, None, key, None) != 1:
            _crypto.EVP_CIPHER_CTX_free(ptr)
            return None
        return cls(ptr)

    def __del__(self) -> None:
        if _LIBS is not None and self.ptr:
            _crypto.EVP_CIPHER_CTX_free(self.ptr)
            self.ptr = 0


# record kinds for open_records
TLS13 = 0        # RFC 8446 §5.2: nonce iv ^ seq, aad = header, inner type at the end
TLS12_XOR = 1    # RFC 7905 ChaCha20-Poly1305: nonce iv ^ seq, aad = seq|type|version|len
TLS12_EXPLICIT = 2  # RFC 5288 GCM: nonce = 4-byte salt | 8 explicit bytes of the record


@kernel(cache=True, nogil=True)
def open_records(ctx: int, kind: int, buf: np.ndarray, starts: np.ndarray,
                 lengths: np.ndarray, iv: np.ndarray, seq: int,
                 out: np.ndarray, plain_ends: np.ndarray) -> int:
    """Decrypt the application-data records at ``starts`` (5-byte header, fragment of
    ``lengths``) into ``out``; ``plain_ends[i]`` is where record i's plaintext ends.

    Record i uses sequence number ``seq + i``. Returns how many records came out;
    it stops before a record whose tag fails, whose TLS 1.3 inner type is not
    application data (23) or whose plaintext is empty (the general path's cases).
    """
    nonce = np.empty(12, np.uint8)
    aad = np.empty(13, np.uint8)
    outl = np.zeros(1, np.int32)
    outl_p = outl.ctypes.data
    bp = buf.ctypes.data
    op = out.ctypes.data
    o = 0
    explicit = 8 if kind == TLS12_EXPLICIT else 0
    for i in range(starts.shape[0]):
        a = starts[i]
        n = lengths[i] - explicit - _TAG_LENGTH
        if n <= 0:
            return i
        s = seq + i
        if kind == TLS12_EXPLICIT:
            for j in range(4):
                nonce[j] = iv[j]
            for j in range(8):
                nonce[4 + j] = buf[a + 5 + j]
        else:
            for j in range(12):
                nonce[j] = iv[j]
            for j in range(8):
                nonce[11 - j] ^= (s >> (8 * j)) & 0xFF
        if EVP_DecryptInit_ex(ctx, 0, 0, 0, nonce.ctypes.data) != 1:
            return i
        if kind == TLS13:
            ok = EVP_DecryptUpdate(ctx, 0, outl_p, bp + a, 5)
        else:  # RFC 5246 §6.2.3.3: seq_num + type + version + length (of the plaintext)
            for j in range(8):
                aad[7 - j] = (s >> (8 * j)) & 0xFF
            aad[8] = buf[a]
            aad[9] = buf[a + 1]
            aad[10] = buf[a + 2]
            aad[11] = (n >> 8) & 0xFF
            aad[12] = n & 0xFF
            ok = EVP_DecryptUpdate(ctx, 0, outl_p, aad.ctypes.data, 13)
        if ok != 1:
            return i
        ct = bp + a + 5 + explicit
        if EVP_DecryptUpdate(ctx, op + o, outl_p, ct, n) != 1:
            return i
        got = np.int64(outl[0])
        if EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_AEAD_SET_TAG, _TAG_LENGTH, ct + n) != 1:
            return i
        if EVP_DecryptFinal_ex(ctx, op + o + got, outl_p) != 1:
            return i  # InvalidTag
        got += outl[0]
        if kind == TLS13:  # §5.4: strip the zero padding; the last byte left is the type
            while got > 0 and out[o + got - 1] == 0:
                got -= 1
            if got < 2 or out[o + got - 1] != 23:
                return i
            got -= 1
        o += got
        plain_ends[i] = o
    return starts.shape[0]


# ---- inflate ----------------------------------------------------------------------
class NativeInflater:
    """``deflate.MessageInflater`` on a zlib ``z_stream`` the batch kernels can use."""

    __slots__ = ("_out", "_ptr", "no_context_takeover", "strm", "window_bits")

    def __init__(self, window_bits: int = 15, no_context_takeover: bool = False) -> None:
        # zlib cannot inflate a raw stream with an 8-bit window (as MessageInflater)
        self.window_bits = max(window_bits, 9)
        self.no_context_takeover = no_context_takeover
        self.strm = np.zeros(_Z_WORDS, dtype=np.uint64)
        self._out = np.empty(_OUT_KEPT, dtype=np.uint8)  # reused by ``inflate``
        self._ptr = 0
        ptr = int(self.strm.ctypes.data)
        if _z.inflateInit2_(ptr, -self.window_bits, _Z_VERSION, 8 * _Z_WORDS) != 0:
            raise MemoryError("zlib inflateInit2 failed")
        self._ptr = ptr  # initialised: inflateEnd frees zlib's state and window

    def __del__(self) -> None:
        if self._ptr:
            _z.inflateEnd(self._ptr)
            self._ptr = 0

    def reset(self) -> None:
        """Start over with an empty window."""
        _z.inflateReset(ctypes.c_void_p(self._ptr))

    # Resuming across capture files: a raw inflate context between messages is its
    # window (the last 2**window_bits bytes of output) and nothing else (a message
    # ends on a sync flush: byte-aligned, at a block boundary), so it is pickled as
    # that window and rebuilt with ``inflateSetDictionary``.
    def __getstate__(self) -> dict[str, object]:
        window = b""
        if not self.no_context_takeover:
            if not hasattr(_z, "inflateGetDictionary"):
                raise TypeError("this zlib cannot read an inflate window back")
            buf = ctypes.create_string_buffer(1 << 15)
            size = ctypes.c_uint(0)
            _z.inflateGetDictionary(ctypes.c_void_p(self._ptr), buf, ctypes.byref(size))
            window = buf.raw[: size.value]
        return {"window_bits": self.window_bits, "no_context_takeover": self.no_context_takeover,
                "window": window}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["window_bits"]),  # type: ignore[misc]
                      bool(state["no_context_takeover"]))
        window = bytes(state["window"])
        if window:
            _z.inflateSetDictionary(ctypes.c_void_p(self._ptr), window, len(window))

    def inflate(self, compressed: bytes, max_length: int) -> tuple[bytes, str]:
        """One message's payload (see ``MessageInflater.inflate``)."""
        out, n, status = _inflate_message(
            self.strm, np.frombuffer(compressed, dtype=np.uint8), self.no_context_takeover,
            self.window_bits, max_length, self._out)
        if out.shape[0] <= _OUT_KEPT:  # a bigger one (a big message) is not kept
            self._out = out
        return out[:n].tobytes(), STATUS_NAMES[status]


# Output buffer a NativeInflater keeps between messages (grown per message beyond it).
_OUT_KEPT = 1 << 16


@kernel(cache=True, nogil=True)
def _inflate_message(z: np.ndarray, src: np.ndarray, no_context_takeover: bool,
                     window_bits: int, cap: int, out: np.ndarray
                     ) -> tuple[np.ndarray, int, int]:
    """``_inflate_into`` for one message held in an array, from ``out[0]`` (one
    dispatch from Python instead of computing the pointer there: ~2x faster)."""
    return _inflate_into(z, src.ctypes.data, src.shape[0], no_context_takeover, window_bits,
                         cap, out, 0)


@kernel(cache=True, nogil=True)
def _grow(out: np.ndarray, keep: int, need: int) -> np.ndarray:
    bigger = np.empty(max(2 * out.shape[0], need), np.uint8)
    bigger[:keep] = out[:keep]
    return bigger


@kernel(cache=True, nogil=True)
def _inflate_into(z: np.ndarray, src: int, src_len: int, no_context_takeover: bool,
                  window_bits: int, cap: int, out: np.ndarray, o: int
                  ) -> tuple[np.ndarray, int, int]:
    """Inflate one message (``src`` + the sync-flush tail) into ``out[o:]``.

    ``z`` is the ``z_stream`` (as 64-bit words). Returns ``(out, produced,
    status)``; ``out`` may be a bigger copy.
    """
    s = z
    strm = z.ctypes.data
    if no_context_takeover:
        z_inflateReset(strm)
    tail = np.empty(4, np.uint8)
    tail[0] = 0
    tail[1] = 0
    tail[2] = 0xFF
    tail[3] = 0xFF
    inp = src
    n_in = src_len
    part = 0
    produced = 0
    wsize = 1 << window_bits
    for _ in range(1 << 40):  # ends: each pass consumes input or adds output
        if n_in == 0 and part == 0:
            part = 1
            inp = tail.ctypes.data
            n_in = 4
        want = cap + 1 - produced
        room = out.shape[0] - o - produced
        if room < want and room < 65536:
            out = _grow(out, o + produced, o + produced + min(want, 1 << 20))
            room = out.shape[0] - o - produced
        want = min(want, room, _Z_MAX_AVAIL)
        give = min(n_in, _Z_MAX_AVAIL)  # avail_in / avail_out are 32-bit
        s[_Z_NEXT_IN] = inp
        s[_Z_AVAIL_IN] = give
        s[_Z_NEXT_OUT] = out.ctypes.data + o + produced
        s[_Z_AVAIL_OUT] = want
        r = z_inflate(strm, _Z_SYNC_FLUSH)
        consumed = give - np.int64(s[_Z_AVAIL_IN] & 0xFFFFFFFF)
        free = np.int64(s[_Z_AVAIL_OUT] & 0xFFFFFFFF)
        inp += consumed
        n_in -= consumed
        produced += want - free
        if r == _Z_STREAM_END:
            # RFC 7692 §7.2.3.4: a BFINAL block ends zlib's stream; what follows starts
            # a new one whose window is this message's output so far
            z_inflateReset(strm)
            keep = min(produced, wsize)
            if keep:
                z_inflateSetDictionary(strm, out.ctypes.data + o + produced - keep, keep)
            if n_in == 0 and part == 1:
                return out, produced, OK
            continue
        if r == _Z_NEED_DICT or (r < 0 and r != _Z_BUF_ERROR):
            z_inflateReset(strm)
            return out, 0, FAILED
        if produced > cap:
            z_inflateReset(strm)
            return out, cap, BOMB
        if n_in == 0 and part == 1 and free > 0:
            return out, produced, OK  # all input in, and zlib had room: nothing pending
        if consumed == 0 and want == free:
            # no progress with input and room: cannot happen with a valid zlib; stop
            z_inflateReset(strm)
            return out, 0, FAILED
    return out, 0, FAILED


@kernel(cache=True, nogil=True)
def ws_payloads(data: np.ndarray, starts: np.ndarray, hls: np.ndarray, lens: np.ndarray,
                rsv1: np.ndarray, masked: bool, z: np.ndarray, no_context_takeover: bool,
                window_bits: int, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The payloads of whole single-frame messages (``scan.ws_simple_frames``),
    unmasked (RFC 6455 §5.3) and, where RSV1 is set, inflated with the ``z_stream``
    ``z`` (RFC 7692 §7.2.2): ``(out, ends, status)``, message i being
    ``out[ends[i-1]:ends[i]]`` with status ``OK``, ``FAILED`` or ``BOMB``."""
    n = starts.shape[0]
    ends = np.empty(n, np.int64)
    status = np.zeros(n, np.int8)
    total = 0
    longest = 0
    for i in range(n):
        total += lens[i]
        if masked and rsv1[i] and lens[i] > longest:
            longest = lens[i]
    out = np.empty(max(total + (total >> 1), 64), np.uint8)
    scratch = np.empty(longest, np.uint8)
    dp = data.ctypes.data
    o = 0
    for i in range(n):
        a = starts[i] + hls[i]
        m = lens[i]
        if rsv1[i]:
            src = dp + a
            if masked:
                for j in range(m):
                    scratch[j] = data[a + j] ^ data[a - 4 + (j & 3)]
                src = scratch.ctypes.data
            out, got, st = _inflate_into(z, src, m, no_context_takeover, window_bits, cap, out, o)
            status[i] = st
            o += got
        else:
            if out.shape[0] - o < m:
                out = _grow(out, o, o + m + (total >> 1))
            if masked:
                for j in range(m):
                    out[o + j] = data[a + j] ^ data[a - 4 + (j & 3)]
            else:
                out[o:o + m] = data[a:a + m]
            o += m
        ends[i] = o
    if out.shape[0] - o > (o >> 3) + 4096:  # held until the next flush: no slack
        return out[:o].copy(), ends, status
    return out[:o], ends, status
