"""Record protection: undo one direction's encryption, one record at a time.

How this works: each ``RecordDecryptor`` owns the keys and the 64-bit record
sequence number of one direction in one epoch (RFC 8446 §5.3, RFC 5246 §6.1:
"sequence numbers ... set to zero whenever a connection state is made
active"). ``decrypt(content_type, version, header, fragment)`` returns
``(content_type, plaintext)`` or ``None`` when authentication fails; after a
failure the object must not be used again (the caller stops that direction).

- TLS 1.3 AEAD (RFC 8446 §5.2-5.3): nonce = iv XOR left-padded seq; additional
  data = the 5-byte record header; the inner plaintext ends with the real
  content type followed by zero padding.
- TLS 1.2 AEAD: GCM (RFC 5288) and CCM (RFC 6655) use a 4-byte implicit salt and
  an 8-byte explicit nonce at the start of the fragment; ChaCha20-Poly1305
  (RFC 7905) XORs the 12-byte IV with seq. Additional data is
  ``seq_num + type + version + plaintext length`` (RFC 5246 §6.2.3.3).
- CBC (RFC 5246 §6.2.3.2): MAC-then-encrypt, or encrypt-then-MAC (RFC 7366).
  TLS 1.0/SSL 3.0 chain the IV across records (one long-lived CBC context);
  TLS 1.1+ send an explicit IV as the first block.
- Stream (RC4) and NULL: MAC only after the (possibly identity) cipher.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import warnings
from typing import Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from .. import native
from .suites import CipherSuite

with warnings.catch_warnings():  # legacy ciphers live in "decrepit"; importing is fine
    warnings.simplefilter("ignore")
    from cryptography.hazmat.decrepit.ciphers import algorithms as decrepit

    # Camellia moved to "decrepit" only in later releases (after 45) of the range we admit.
    _CAMELLIA = getattr(decrepit, "Camellia", None) or algorithms.Camellia

_MAC_HEADER = struct.Struct("!QBHH")  # seq_num, type, version, length (RFC 5246 §6.2.3.1)
_SSL3_MAC_HEADER = struct.Struct("!QBH")  # SSL 3.0 MAC omits the version (RFC 6101 §5.2.3.1)

TLS13_INNER_TYPE_MISSING = 0
"""An all-zero TLSInnerPlaintext has no content type (RFC 8446 §5.4)."""


class RecordDecryptor(Protocol):
    """One direction's protection state in one epoch."""

    seq: int

    def decrypt(
        self, content_type: int, version: int, header: bytes, fragment: bytes
    ) -> tuple[int, bytes] | None: ...


def _aead(cipher: str, key: bytes, tag_length: int) -> AESGCM | AESCCM | ChaCha20Poly1305:
    if cipher == "aes-gcm":
        return AESGCM(key)
    if cipher == "aes-ccm":
        return AESCCM(key, tag_length=tag_length)
    return ChaCha20Poly1305(key)


class Tls13Decryptor:
    """RFC 8446 §5.2 record protection."""

    __slots__ = ("_aead", "_iv", "native", "native_iv", "native_kind", "seq")

    def __init__(self, suite: CipherSuite, key: bytes, iv: bytes) -> None:
        self._aead = _aead(suite.cipher, key, suite.tag_length)
        self._iv = int.from_bytes(iv, "big")
        self.seq = 0
        # the same key for the batch path's compiled loop (``native.open_records``)
        self.native = native.AeadContext.create(suite.cipher, key)
        self.native_iv = np.frombuffer(iv, dtype=np.uint8)
        self.native_kind = native.TLS13

    def decrypt(
        self, content_type: int, version: int, header: bytes, fragment: bytes
    ) -> tuple[int, bytes] | None:
        # §5.3: "the padded sequence number is XORed with the static client_write_iv"
        nonce = (self._iv ^ self.seq).to_bytes(12, "big")
        try:
            inner = self._aead.decrypt(nonce, fragment, header)
        except InvalidTag:
            return None
        self.seq += 1
        # §5.4: strip zero padding; the last non-zero byte is the content type.
        stripped = inner.rstrip(b"\x00")
        if not stripped:
            return TLS13_INNER_TYPE_MISSING, b""
        return stripped[-1], stripped[:-1]


class Tls12AeadDecryptor:
    """GCM / CCM (explicit nonce) and ChaCha20-Poly1305 (RFC 7905) in TLS 1.2."""

    __slots__ = ("_aead", "_explicit", "_iv", "_iv_int", "_tag", "native", "native_iv",
                 "native_kind", "seq")

    def __init__(self, suite: CipherSuite, key: bytes, iv: bytes) -> None:
        self._aead = _aead(suite.cipher, key, suite.tag_length)
        self._iv = iv
        self._iv_int = int.from_bytes(iv, "big")
        self._explicit = suite.explicit_nonce_length
        self._tag = suite.tag_length
        self.seq = 0
        # the same key for the batch path's compiled loop (``native.open_records``)
        kind = {0: native.TLS12_XOR, 8: native.TLS12_EXPLICIT}.get(self._explicit)
        iv_length = 4 if self._explicit else 12
        ok = kind is not None and suite.tag_length == 16 and len(iv) == iv_length
        self.native = native.AeadContext.create(suite.cipher, key) if ok else None
        self.native_iv = np.frombuffer(iv, dtype=np.uint8)
        self.native_kind = kind

    def decrypt(
        self, content_type: int, version: int, header: bytes, fragment: bytes
    ) -> tuple[int, bytes] | None:
        n = self._explicit
        plain_len = len(fragment) - n - self._tag
        if plain_len < 0:
            return None
        if n:
            nonce = self._iv + fragment[:n]
            ciphertext = fragment[n:]
        else:
            nonce = (self._iv_int ^ self.seq).to_bytes(12, "big")
            ciphertext = fragment
        aad = _MAC_HEADER.pack(self.seq, content_type, version, plain_len)
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            return None
        self.seq += 1
        return content_type, plaintext


def _block_algorithm(cipher: str, key: bytes) -> algorithms.AES | algorithms.Camellia | object:
    table = {
        "aes": algorithms.AES,
        "camellia": _CAMELLIA,
        "3des": decrepit.TripleDES,
        "des": lambda k: decrepit.TripleDES(k * 3),  # K1=K2=K3: 3DES-EDE is plain DES
        "idea": decrepit.IDEA,
        "seed": decrepit.SEED,
    }
    return table[cipher](key)


class _Mac:
    """HMAC for TLS 1.0-1.2, or the SSL 3.0 nested MAC (RFC 6101 §5.2.3.1)."""

    __slots__ = ("_hash", "_key", "_ssl3", "length")

    def __init__(self, hash_name: str, key: bytes, length: int, ssl3: bool) -> None:
        self._hash = hash_name
        self._key = key
        self._ssl3 = ssl3
        self.length = length

    def compute(self, seq: int, content_type: int, version: int, content: bytes) -> bytes:
        if not self._ssl3:
            head = _MAC_HEADER.pack(seq, content_type, version, len(content))
            return hmac.new(self._key, head + content, self._hash).digest()
        pad = 48 if self._hash == "md5" else 40
        head = _SSL3_MAC_HEADER.pack(seq, content_type, len(content))
        inner = hashlib.new(self._hash, self._key + b"\x36" * pad + head + content).digest()
        return hashlib.new(self._hash, self._key + b"\x5c" * pad + inner).digest()


class BlockDecryptor:
    """CBC suites, MAC-then-encrypt or encrypt-then-MAC (RFC 7366)."""

    __slots__ = ("_bs", "_chained", "_cipher", "_etm", "_key", "_mac", "_ssl3", "seq")

    def __init__(
        self, suite: CipherSuite, key: bytes, iv: bytes, mac_key: bytes, *, version: int, etm: bool
    ) -> None:
        self._bs = suite.block_size
        self._key = key
        self._cipher = suite.cipher
        self._etm = etm
        self._ssl3 = version == 0x0300
        assert suite.mac is not None
        self._mac = _Mac(suite.mac, mac_key, suite.mac_length, self._ssl3)
        # TLS 1.0 / SSL 3.0: "the IV for subsequent records is the last ciphertext
        # block from the previous record" -- one CBC context spanning records.
        self._chained: CipherContext | None = None
        if version <= 0x0301:
            self._chained = Cipher(_block_algorithm(suite.cipher, key), modes.CBC(iv)).decryptor()  # type: ignore[arg-type]
        self.seq = 0

    def _cbc(self, data: bytes) -> bytes | None:
        bs = self._bs
        if not data or len(data) % bs:
            return None
        if self._chained is not None:
            return self._chained.update(data)
        if len(data) < 2 * bs:
            return None
        ctx = Cipher(_block_algorithm(self._cipher, self._key), modes.CBC(data[:bs])).decryptor()  # type: ignore[arg-type]
        return ctx.update(data[bs:])

    def decrypt(
        self, content_type: int, version: int, header: bytes, fragment: bytes
    ) -> tuple[int, bytes] | None:
        mac_len = self._mac.length
        if self._etm:  # RFC 7366 §3: MAC over IV + ciphertext, checked first
            body, tag = fragment[:-mac_len], fragment[-mac_len:]
            if len(fragment) < mac_len or not hmac.compare_digest(
                tag, self._mac.compute(self.seq, content_type, version, body)
            ):
                return None
            padded = self._cbc(body)
            content = None if padded is None else self._unpad(padded)
        else:
            padded = self._cbc(fragment)
            unpadded = None if padded is None else self._unpad(padded)
            if unpadded is None or len(unpadded) < mac_len:
                return None
            content, tag = unpadded[:-mac_len], unpadded[-mac_len:]
            if not hmac.compare_digest(
                tag, self._mac.compute(self.seq, content_type, version, content)
            ):
                return None
        if content is None:
            return None
        self.seq += 1
        return content_type, content

    def _unpad(self, padded: bytes) -> bytes | None:
        pad = padded[-1]
        if pad + 1 > len(padded):
            return None
        if self._ssl3:  # RFC 6101: only the length byte is defined
            return padded[: -pad - 1] if pad < self._bs else None
        if padded[-pad - 1 :] != bytes([pad]) * (pad + 1):  # RFC 5246: every byte = length
            return None
        return padded[: -pad - 1]


class StreamDecryptor:
    """RC4 and NULL suites: (identity) stream cipher, then the MAC."""

    __slots__ = ("_mac", "_rc4", "seq")

    def __init__(self, suite: CipherSuite, key: bytes, mac_key: bytes, *, version: int) -> None:
        assert suite.mac is not None
        self._mac = _Mac(suite.mac, mac_key, suite.mac_length, version == 0x0300)
        self._rc4: CipherContext | None = None
        if suite.kind == "stream":
            self._rc4 = Cipher(decrepit.ARC4(key), mode=None).decryptor()
        self.seq = 0

    def decrypt(
        self, content_type: int, version: int, header: bytes, fragment: bytes
    ) -> tuple[int, bytes] | None:
        data = self._rc4.update(fragment) if self._rc4 is not None else fragment
        mac_len = self._mac.length
        if len(data) < mac_len:
            return None
        content, tag = data[: len(data) - mac_len], data[len(data) - mac_len :]
        if not hmac.compare_digest(
            tag, self._mac.compute(self.seq, content_type, version, content)
        ):
            return None
        self.seq += 1
        return content_type, content


def tls12_decryptor(
    suite: CipherSuite, *, key: bytes, iv: bytes, mac_key: bytes, version: int, etm: bool
) -> RecordDecryptor:
    """The decryptor for one direction of a TLS 1.0-1.2 / SSL 3.0 connection state."""
    if suite.kind == "aead":
        return Tls12AeadDecryptor(suite, key, iv)
    if suite.kind == "block":
        return BlockDecryptor(suite, key, iv, mac_key, version=version, etm=etm)
    return StreamDecryptor(suite, key, mac_key, version=version)


__all__ = [
    "BlockDecryptor",
    "RecordDecryptor",
    "StreamDecryptor",
    "Tls12AeadDecryptor",
    "Tls13Decryptor",
    "tls12_decryptor",
]
