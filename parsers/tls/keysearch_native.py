"""Compiled trial decryption for the TLS 1.3 key search (``keysearch``), on libcrypto.

How this works: ``parsers.native`` has loaded the system ``libcrypto`` into the
process for Numba (``llvmlite.load_library_permanently``); the kernels here declare
the few EVP functions they need as ``ExternalFunction``s too and loop over many
candidate keys (and, for ChaCha20-Poly1305, many sequence numbers) without going
back to Python. Each kernel is the compiled twin of a function in ``keysearch``
that does the same with ``cryptography``; the tests run both.

- ``gcm_j0``: for each AES-GCM key, the pre-counter block J0 that would make the
  record's tag verify (see ``keysearch``: GHASH from the GCM of a fixed nonce, then
  one AES block decryption). Cost per key: three GCM passes over the record and
  one block, whatever the window of sequence numbers.
- ``chacha_seq``: for each ChaCha20-Poly1305 key, the first sequence number below
  the window under which the record authenticates (-1 if none).

Contexts are made with ``EvpContext`` (freed with the object); the kernels re-key
them (``*Init_ex`` with a NULL cipher keeps the cipher, its mode and padding).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import types
from numba.core.typing import signature

from .. import native
from ..jitload import kernel

_P = types.intp
_I = types.int32

EVP_EncryptInit_ex = types.ExternalFunction("EVP_EncryptInit_ex", signature(_I, _P, _P, _P, _P, _P))
EVP_EncryptUpdate = types.ExternalFunction("EVP_EncryptUpdate", signature(_I, _P, _P, _P, _P, _I))
EVP_EncryptFinal_ex = types.ExternalFunction("EVP_EncryptFinal_ex", signature(_I, _P, _P, _P))
EVP_DecryptInit_ex = types.ExternalFunction("EVP_DecryptInit_ex", signature(_I, _P, _P, _P, _P, _P))
EVP_DecryptUpdate = types.ExternalFunction("EVP_DecryptUpdate", signature(_I, _P, _P, _P, _P, _I))
EVP_DecryptFinal_ex = types.ExternalFunction("EVP_DecryptFinal_ex", signature(_I, _P, _P, _P))
EVP_CIPHER_CTX_ctrl = types.ExternalFunction("EVP_CIPHER_CTX_ctrl", signature(_I, _P, _I, _I, _P))

_EVP_CTRL_AEAD_GET_TAG = 0x10
_EVP_CTRL_AEAD_SET_TAG = 0x11
TAG = 16
NONCE = 12

# which EVP cipher each (cipher, key length) is
_EVP_NAMES = {
    ("aes-gcm", 16): "EVP_aes_128_gcm",
    ("aes-gcm", 32): "EVP_aes_256_gcm",
    ("aes-ecb", 16): "EVP_aes_128_ecb",
    ("aes-ecb", 32): "EVP_aes_256_ecb",
    ("chacha20-poly1305", 32): "EVP_chacha20_poly1305",
}


def _symbols() -> ctypes.CDLL | None:
    libs = getattr(native, "_LIBS", None)
    if not native.AVAILABLE or libs is None:
        return None
    crypto = libs[0]
    needed = ("EVP_EncryptInit_ex", "EVP_EncryptUpdate", "EVP_EncryptFinal_ex",
              "EVP_CIPHER_CTX_set_padding", "EVP_aes_128_ecb", "EVP_aes_256_ecb",
              *(_EVP_NAMES.values()))
    if not all(hasattr(crypto, s) for s in needed):
        return None
    crypto.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    crypto.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    crypto.EVP_CipherInit_ex.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int]
    crypto.EVP_CIPHER_CTX_set_padding.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in _EVP_NAMES.values():
        getattr(crypto, name).restype = ctypes.c_void_p
    return crypto


_CRYPTO = _symbols()
AVAILABLE = _CRYPTO is not None
"""False without libcrypto (or with ``PCAPFLOW_NO_NATIVE=1``): ``keysearch`` then
uses ``cryptography``, with the same results."""


class EvpContext:
    """One ``EVP_CIPHER_CTX`` set up for ``cipher`` and ``key_length`` (a zero key)."""

    __slots__ = ("ptr",)

    def __init__(self, cipher: str, key_length: int, *, encrypt: bool) -> None:
        assert _CRYPTO is not None
        self.ptr = 0
        ptr = _CRYPTO.EVP_CIPHER_CTX_new()
        if not ptr:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        self.ptr = ptr
        evp = getattr(_CRYPTO, _EVP_NAMES[(cipher, key_length)])()
        if _CRYPTO.EVP_CipherInit_ex(ptr, evp, None, bytes(key_length), None, int(encrypt)) != 1:
            raise RuntimeError(f"EVP_CipherInit_ex failed for {cipher}")
        if cipher == "aes-ecb":  # one block in, one block out
            _CRYPTO.EVP_CIPHER_CTX_set_padding(ptr, 0)

    def __del__(self) -> None:
        if self.ptr and _CRYPTO is not None:
            _CRYPTO.EVP_CIPHER_CTX_free(self.ptr)
            self.ptr = 0


@kernel(cache=True, nogil=True)
def gcm_j0(gcm: int, ecb: int, keys: np.ndarray, aad: np.ndarray, ct: np.ndarray,
           tag: np.ndarray, out: np.ndarray) -> int:
    """``out[i]`` = the J0 under which ``ct`` (tag ``tag``, additional data ``aad``)
    authenticates with AES-GCM key ``keys[i]``; returns how many keys were done.

    ``gcm``: an encrypting AES-GCM context, ``ecb``: a decrypting AES-ECB one
    without padding, both for the keys' length. With the all-zero nonce N*:
    keystream = GCM_N*(zeros), tag* = tag of GCM_N*(aad, ct xor keystream) (whose
    ciphertext is ``ct``), E_K(J0*) = tag of GCM_N*(empty); then
    GHASH = tag* xor E_K(J0*) and J0 = AES^-1_K(tag xor GHASH).
    """
    n, klen = keys.shape
    length = ct.shape[0]
    nstar = np.zeros(NONCE, np.uint8)
    zeros = np.zeros(length + TAG, np.uint8)
    buf = np.empty(length + TAG, np.uint8)
    tmp = np.empty(length + TAG, np.uint8)
    e0 = np.empty(TAG, np.uint8)
    tstar = np.empty(TAG, np.uint8)
    target = np.empty(TAG, np.uint8)
    outl = np.zeros(1, np.int32)
    ol = outl.ctypes.data
    np_ = nstar.ctypes.data
    kp0 = keys.ctypes.data
    for i in range(n):
        kp = kp0 + i * klen
        # E_K(J0*): the tag of the empty message (GHASH of nothing is zero)
        if EVP_EncryptInit_ex(gcm, 0, 0, kp, np_) != 1:
            return i
        EVP_EncryptFinal_ex(gcm, tmp.ctypes.data, ol)
        EVP_CIPHER_CTX_ctrl(gcm, _EVP_CTRL_AEAD_GET_TAG, TAG, e0.ctypes.data)
        # the keystream of N*, then P = ct xor keystream, whose encryption is ct
        EVP_EncryptInit_ex(gcm, 0, 0, 0, np_)
        EVP_EncryptUpdate(gcm, buf.ctypes.data, ol, zeros.ctypes.data, length)
        for j in range(length):
            buf[j] ^= ct[j]
        EVP_EncryptInit_ex(gcm, 0, 0, 0, np_)
        EVP_EncryptUpdate(gcm, 0, ol, aad.ctypes.data, aad.shape[0])
        EVP_EncryptUpdate(gcm, tmp.ctypes.data, ol, buf.ctypes.data, length)
        EVP_EncryptFinal_ex(gcm, tmp.ctypes.data, ol)
        EVP_CIPHER_CTX_ctrl(gcm, _EVP_CTRL_AEAD_GET_TAG, TAG, tstar.ctypes.data)
        for j in range(TAG):
            target[j] = tag[j] ^ tstar[j] ^ e0[j]
        if EVP_DecryptInit_ex(ecb, 0, 0, kp, 0) != 1:
            return i
        EVP_DecryptUpdate(ecb, out.ctypes.data + i * TAG, ol, target.ctypes.data, TAG)
    return n


@kernel(cache=True, nogil=True)
def chacha_seq(ctx: int, keys: np.ndarray, ivs: np.ndarray, aad: np.ndarray,
               ct: np.ndarray, tag: np.ndarray, window: int, out: np.ndarray) -> int:
    """``out[i]`` = the first sequence number below ``window`` under which ``ct``
    authenticates with ChaCha20-Poly1305 key ``keys[i]`` and TLS 1.3 nonce
    ``ivs[i] xor seq`` (RFC 8446 §5.3), else -1. Stops after the first key that
    matches (a 128-bit tag does not match by chance); returns how many keys were
    done, or -1 if libcrypto failed.

    ``ctx``: a decrypting ChaCha20-Poly1305 context."""
    n, klen = keys.shape
    length = ct.shape[0]
    nonce = np.empty(NONCE, np.uint8)
    scratch = np.empty(length + TAG, np.uint8)
    tg = tag.copy()  # SET_TAG reads it; the caller's array stays untouched
    outl = np.zeros(1, np.int32)
    ol = outl.ctypes.data
    kp0 = keys.ctypes.data
    for i in range(n):
        out[i] = -1
        if EVP_DecryptInit_ex(ctx, 0, 0, kp0 + i * klen, 0) != 1:
            return -1
        for s in range(window):
            for j in range(NONCE):
                nonce[j] = ivs[i, j]
            for j in range(8):
                nonce[11 - j] ^= (s >> (8 * j)) & 0xFF
            EVP_DecryptInit_ex(ctx, 0, 0, 0, nonce.ctypes.data)
            EVP_DecryptUpdate(ctx, 0, ol, aad.ctypes.data, aad.shape[0])
            EVP_DecryptUpdate(ctx, scratch.ctypes.data, ol, ct.ctypes.data, length)
            EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_AEAD_SET_TAG, TAG, tg.ctypes.data)
            if EVP_DecryptFinal_ex(ctx, scratch.ctypes.data, ol) == 1:
                out[i] = s
                return i + 1
    return n
