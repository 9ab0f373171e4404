"""Key schedule and record protection.

RFC 8448 §3 ("Simple 1-RTT Handshake") values below were checked for mutual
consistency (each traffic secret derives exactly the published key and iv, and
the early/derived secrets chain), so a mistyped byte would fail loudly. The
published *protected records* of RFC 8448 are not reproduced here; record
decryption of real traffic is checked against tshark on the public captures in
``test_tls_public.py`` (all five TLS 1.3 suites, KeyUpdate, HRR, PSK). Below,
record protection is also checked by round trips against an encryptor written
independently from the RFC text.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from pcapflow.parsers.tls.ciphers import Tls13Decryptor, tls12_decryptor
from pcapflow.parsers.tls.keyschedule import (
    hkdf_expand_label,
    prf_tls10,
    prf_tls12,
    tls12_key_block,
    tls13_next_traffic_secret,
    tls13_traffic_keys,
)
from pcapflow.parsers.tls.suites import SUITE_NAMES, SUITES, suite_for


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# -- RFC 8448 §3 -------------------------------------------------------------------
RFC8448_TRAFFIC = {
    "server handshake": (
        "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 "
        "b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
        "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc",
        "5d 31 3e b2 67 12 76 ee 13 00 0b 30",
    ),
    "client handshake": (
        "b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d "
        "8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21",
        "db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01",
        "5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f",
    ),
    "server application": (
        "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 "
        "32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43",
        "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56",
        "cf 78 2b 88 dd 83 54 9a ad f1 e9 84",
    ),
}


@pytest.mark.parametrize("name", list(RFC8448_TRAFFIC))
def test_rfc8448_traffic_keys(name: str) -> None:
    secret, key, iv = (h(x) for x in RFC8448_TRAFFIC[name])
    assert tls13_traffic_keys(secret, 16, 12, "sha256") == (key, iv)


def test_rfc8448_early_and_derived_secret() -> None:
    # early secret = HKDF-Extract(0, 0); derived = Derive-Secret(early, "derived", "")
    early = hmac.new(b"\0" * 32, b"\0" * 32, "sha256").digest()
    assert early == h(
        "33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c "
        "e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a"
    )
    derived = hkdf_expand_label(early, b"derived", hashlib.sha256(b"").digest(), 32, "sha256")
    assert derived == h(
        "6f 26 15 a1 08 c7 02 c5 67 8f 54 fc 9d ba b6 "
        "97 16 c0 76 18 9c 48 25 0c eb ea c3 57 6c 36 11 ba"
    )


def test_key_update_is_hkdf_expand_label_traffic_upd() -> None:
    secret = h(RFC8448_TRAFFIC["server application"][0])
    nxt = tls13_next_traffic_secret(secret, "sha256")
    assert nxt == hkdf_expand_label(secret, b"traffic upd", b"", 32, "sha256")
    assert nxt != secret and len(tls13_next_traffic_secret(nxt + nxt[:16], "sha384")) == 48


def test_prf_definitions() -> None:
    """RFC 5246 §5 P_hash and RFC 2246 §5 MD5/SHA-1 split, recomputed literally."""
    secret, label, seed = b"s" * 48, b"key expansion", b"r" * 64
    a1 = hmac.new(secret, label + seed, "sha256").digest()
    a2 = hmac.new(secret, a1, "sha256").digest()
    expect = hmac.new(secret, a1 + label + seed, "sha256").digest()
    expect += hmac.new(secret, a2 + label + seed, "sha256").digest()
    assert prf_tls12(secret, label, seed, 64, "sha256") == expect
    odd = bytes(range(47))  # odd length: S1 and S2 share the middle byte
    out = prf_tls10(odd, label, seed, 40)
    md5 = prf_tls12(odd[:24], label, seed, 40, "md5")
    sha = prf_tls12(odd[23:], label, seed, 40, "sha1")
    assert out == bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def test_suite_registry() -> None:
    gcm = suite_for(0xC02F)
    assert gcm is not None and gcm.name == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert (gcm.key_length, gcm.iv_length, gcm.explicit_nonce_length, gcm.prf_hash) == (
        16,
        4,
        8,
        "sha256",
    )
    ccm8 = SUITES[0xC0A0]
    assert ccm8.tag_length == 8 and ccm8.cipher == "aes-ccm"
    cbc = SUITES[0xC028]
    assert (cbc.mac, cbc.mac_length, cbc.prf_hash, cbc.block_size) == ("sha384", 48, "sha384", 16)
    assert SUITES[0x1303].tls13 and SUITES[0x1303].prf_hash == "sha256"
    assert suite_for(0x0003) is None  # export suites are out of scope
    assert all(name.startswith("TLS_") for name in SUITE_NAMES.values())


# -- record protection round trips (independent encryptors) -------------------------
TLS13_SUITES = [0x1301, 0x1302, 0x1303, 0x1304, 0x1305]


def _aead(suite_id: int, key: bytes) -> AESGCM | AESCCM | ChaCha20Poly1305:
    suite = SUITES[suite_id]
    if suite.cipher == "aes-gcm":
        return AESGCM(key)
    if suite.cipher == "aes-ccm":
        return AESCCM(key, tag_length=suite.tag_length)
    return ChaCha20Poly1305(key)


@pytest.mark.parametrize("suite_id", TLS13_SUITES)
def test_tls13_record_round_trip(suite_id: int) -> None:
    suite = SUITES[suite_id]
    secret = bytes(range(48 if suite.prf_hash == "sha384" else 32))
    key, iv = tls13_traffic_keys(secret, suite.key_length, 12, suite.prf_hash)
    aead = _aead(suite_id, key)
    dec = Tls13Decryptor(suite, key, iv)
    for seq, (inner_type, content, pad) in enumerate(
        [(23, b"GET / HTTP/1.1\r\n", 0), (22, b"\x18\0\0\x01\0", 7)]
    ):
        inner = content + bytes([inner_type]) + b"\0" * pad  # RFC 8446 §5.2 TLSInnerPlaintext
        length = len(inner) + suite.tag_length
        header = struct.pack("!BHH", 23, 0x0303, length)
        nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
        record = aead.encrypt(nonce, inner, header)
        assert dec.decrypt(23, 0x0303, header, record) == (inner_type, content)
    header = struct.pack("!BHH", 23, 0x0303, 17 + suite.tag_length)
    assert dec.decrypt(23, 0x0303, header, b"\0" * (17 + suite.tag_length)) is None


def _mac(suite_id: int, mac_key: bytes, seq: int, ctype: int, version: int, data: bytes) -> bytes:
    suite = SUITES[suite_id]
    assert suite.mac is not None
    head = struct.pack("!QBHH", seq, ctype, version, len(data))
    return hmac.new(mac_key, head + data, suite.mac).digest()


def _cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    pad = 16 - (len(data) + 1) % 16
    padded = data + bytes([pad]) * (pad + 1)
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


@pytest.mark.parametrize("suite_id", [0xC02F, 0xC030, 0xCCA8, 0xC0AC, 0xC0AE])
def test_tls12_aead_round_trip(suite_id: int) -> None:
    suite = SUITES[suite_id]
    key, iv = bytes(range(suite.key_length)), bytes(range(100, 100 + suite.iv_length))
    dec = tls12_decryptor(suite, key=key, iv=iv, mac_key=b"", version=0x0303, etm=False)
    aead = _aead(suite_id, key)
    for seq, data in enumerate([b"hello", b"world" * 50]):
        aad = struct.pack("!QBHH", seq, 23, 0x0303, len(data))
        if suite.explicit_nonce_length:  # RFC 5288 §3: salt + explicit nonce
            explicit = (seq + 1000).to_bytes(8, "big")
            fragment = explicit + aead.encrypt(iv + explicit, data, aad)
        else:  # RFC 7905 §2
            nonce = bytes(a ^ b for a, b in zip(iv, seq.to_bytes(12, "big"), strict=True))
            fragment = aead.encrypt(nonce, data, aad)
        assert dec.decrypt(23, 0x0303, b"", fragment) == (23, data)


@pytest.mark.parametrize("etm", [False, True])
@pytest.mark.parametrize("version", [0x0301, 0x0303])
def test_cbc_round_trip(version: int, etm: bool) -> None:
    suite_id = 0xC027 if version == 0x0303 else 0xC013  # AES_128_CBC_SHA256 / _SHA
    suite = SUITES[suite_id]
    key, iv, mac_key = b"k" * 16, b"i" * 16, b"m" * suite.mac_length
    dec = tls12_decryptor(suite, key=key, iv=iv, mac_key=mac_key, version=version, etm=etm)
    chain_iv = iv
    for seq, data in enumerate([b"first record", b"second" * 9]):
        record_iv = chain_iv if version == 0x0301 else bytes([seq]) * 16
        if etm:  # RFC 7366: encrypt, then MAC the IV + ciphertext
            body = _cbc_encrypt(key, record_iv, data)
            body = body if version == 0x0301 else record_iv + body
            fragment = body + _mac(suite_id, mac_key, seq, 23, version, body)
        else:
            body = _cbc_encrypt(
                key, record_iv, data + _mac(suite_id, mac_key, seq, 23, version, data)
            )
            fragment = body if version == 0x0301 else record_iv + body
        chain_iv = fragment[-16 - (suite.mac_length if etm else 0) :][:16]
        assert dec.decrypt(23, version, b"", fragment) == (23, data)
    bad = bytearray(fragment)
    bad[-1] ^= 1
    dec2 = tls12_decryptor(suite, key=key, iv=iv, mac_key=mac_key, version=version, etm=etm)
    assert dec2.decrypt(23, version, b"", bytes(bad)) is None


def test_key_block_split_order() -> None:
    """RFC 5246 §6.3: client MAC, server MAC, client key, server key, client IV, server IV."""
    master, cr, sr = b"M" * 48, b"C" * 32, b"S" * 32
    kb = tls12_key_block(
        master,
        cr,
        sr,
        version=0x0303,
        prf_hash="sha256",
        mac_key_length=20,
        key_length=16,
        iv_length=16,
    )
    block = prf_tls12(master, b"key expansion", sr + cr, 104, "sha256")
    assert kb.client_write_mac_key == block[:20] and kb.server_write_mac_key == block[20:40]
    assert kb.client_write_key == block[40:56] and kb.server_write_iv == block[88:104]
    assert "M" not in repr(kb) and block[:4].hex() not in repr(kb)
