"""Key derivation: TLS 1.3 HKDF-Expand-Label, the TLS 1.0-1.2 PRF, SSLv3 key block.

How this works: a passive decoder never sees the (EC)DHE shared secret; the key
log hands it the *output* of the key exchange instead:

- TLS 1.3 (RFC 8446 §7): the traffic secrets themselves. Record keys are
  ``key = HKDF-Expand-Label(secret, "key", "", key_length)`` and
  ``iv = HKDF-Expand-Label(secret, "iv", "", iv_length)`` (§7.3); after a
  KeyUpdate, ``secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length)``
  (§7.2).
- TLS 1.0-1.2 (RFC 2246/4346/5246 §6.3): the 48-byte master secret; the key block
  is ``PRF(master_secret, "key expansion", server_random + client_random)`` cut
  into MAC keys, cipher keys and IVs (client write first).
- SSL 3.0 (RFC 6101 §6.2.2): MD5/SHA-1 nesting instead of a PRF.

Everything here is pure functions over bytes; secrets never leave as strings.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------------------
# RFC 5869 §2.3 HKDF-Expand and RFC 8446 §7.1 HKDF-Expand-Label
# ---------------------------------------------------------------------------

HASH_LENGTH = {"sha256": 32, "sha384": 48, "sha1": 20, "md5": 16}


def hkdf_expand(prk: bytes, info: bytes, length: int, hash_name: str) -> bytes:
    """RFC 5869 §2.3: ``T(i) = HMAC-Hash(PRK, T(i-1) | info | i)``."""
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def hkdf_expand_label(
    secret: bytes, label: bytes, context: bytes, length: int, hash_name: str
) -> bytes:
    """RFC 8446 §7.1.

    ``struct { uint16 length; opaque label<7..255> = "tls13 " + Label;
    opaque context<0..255>; } HkdfLabel;``
    """
    full_label = b"tls13 " + label
    hkdf_label = (
        struct.pack("!HB", length, len(full_label)) + full_label + bytes([len(context)]) + context
    )
    return hkdf_expand(secret, hkdf_label, length, hash_name)


def tls13_traffic_keys(
    secret: bytes, key_length: int, iv_length: int, hash_name: str
) -> tuple[bytes, bytes]:
    """RFC 8446 §7.3: ``[sender]_write_key`` and ``[sender]_write_iv`` from a traffic secret."""
    key = hkdf_expand_label(secret, b"key", b"", key_length, hash_name)
    iv = hkdf_expand_label(secret, b"iv", b"", iv_length, hash_name)
    return key, iv


def tls13_next_traffic_secret(secret: bytes, hash_name: str) -> bytes:
    """RFC 8446 §7.2: ``application_traffic_secret_N+1``."""
    return hkdf_expand_label(secret, b"traffic upd", b"", HASH_LENGTH[hash_name], hash_name)


# ---------------------------------------------------------------------------
# RFC 5246 §5 (TLS 1.2) and RFC 2246 §5 (TLS 1.0/1.1) pseudorandom functions
# ---------------------------------------------------------------------------


def p_hash(secret: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """RFC 5246 §5: ``P_hash(secret, seed) = HMAC_hash(secret, A(1) + seed) + ...``."""
    out = b""
    a = seed
    while len(out) < length:
        a = hmac.new(secret, a, hash_name).digest()
        out += hmac.new(secret, a + seed, hash_name).digest()
    return out[:length]


def prf_tls12(secret: bytes, label: bytes, seed: bytes, length: int, hash_name: str) -> bytes:
    """RFC 5246 §5: ``PRF(secret, label, seed) = P_<hash>(secret, label + seed)``."""
    return p_hash(secret, label + seed, length, hash_name)


def prf_tls10(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 2246 §5: ``P_MD5(S1, label + seed) XOR P_SHA-1(S2, label + seed)``.

    "S1 and S2 are the two halves of the secret ... if the original secret is an
    odd number of bytes long, the last byte of S1 will be the same as the first
    byte of S2."
    """
    half = (len(secret) + 1) // 2
    s1, s2 = secret[:half], secret[len(secret) - half :]
    md5 = p_hash(s1, label + seed, length, "md5")
    sha = p_hash(s2, label + seed, length, "sha1")
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def ssl3_key_block(master: bytes, server_random: bytes, client_random: bytes, length: int) -> bytes:
    """RFC 6101 §6.2.2: ``MD5(master + SHA('A' + master + ServerHello.random +
    ClientHello.random)) + MD5(master + SHA('BB' + ...)) + ...``."""
    out = b""
    i = 0
    while len(out) < length:
        salt = bytes([ord("A") + i]) * (i + 1)
        inner = hashlib.sha1(salt + master + server_random + client_random).digest()
        out += hashlib.md5(master + inner).digest()
        i += 1
    return out[:length]


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """RFC 5246 §6.3 split of the key block (``repr`` hides the key bytes)."""

    client_write_mac_key: bytes
    server_write_mac_key: bytes
    client_write_key: bytes
    server_write_key: bytes
    client_write_iv: bytes
    server_write_iv: bytes

    def __repr__(self) -> str:
        return "KeyBlock(<secret>)"


def tls12_key_block(
    master: bytes,
    client_random: bytes,
    server_random: bytes,
    *,
    version: int,
    prf_hash: str,
    mac_key_length: int,
    key_length: int,
    iv_length: int,
) -> KeyBlock:
    """Expand the master secret into the six write keys (RFC 5246 §6.3)."""
    total = 2 * (mac_key_length + key_length + iv_length)
    seed = server_random + client_random
    if version == 0x0300:
        block = ssl3_key_block(master, server_random, client_random, total)
    elif version < 0x0303:
        block = prf_tls10(master, b"key expansion", seed, total)
    else:
        block = prf_tls12(master, b"key expansion", seed, total, prf_hash)
    cuts = [mac_key_length, mac_key_length, key_length, key_length, iv_length, iv_length]
    parts: list[bytes] = []
    pos = 0
    for n in cuts:
        parts.append(block[pos : pos + n])
        pos += n
    return KeyBlock(*parts)
