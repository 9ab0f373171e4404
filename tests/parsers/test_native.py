"""``parsers.native``: libcrypto AEAD and zlib inflate called from compiled loops.

Each kernel is checked against the code it replaces on the batch path, which the
rest of the suite checks against tshark: ``open_records`` against the
``cryptography``-based decryptors record by record (every suite it takes, every
reason it must stop), ``NativeInflater`` against ``MessageInflater`` on random
message streams (valid, truncated, corrupted, bombs), and ``ws_payloads`` against
the pure-Python ``_payloads_py``. Skipped where the libraries are missing: the
callers then use that Python code.
"""

from __future__ import annotations

import os
import random
import zlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers import native
from pcapflow.parsers.tls.ciphers import Tls12AeadDecryptor, Tls13Decryptor
from pcapflow.parsers.tls.suites import suite_for
from pcapflow.parsers.websocket import WebSocketSession
from pcapflow.parsers.websocket.deflate import MessageInflater

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="libcrypto/libz not found")

APPLICATION_DATA, HANDSHAKE = 23, 22
# (suite code, TLS 1.3?) for every AEAD suite the native path takes
SUITES = [
    (0x1301, True), (0x1302, True), (0x1303, True),  # TLS_AES_128/256_GCM, CHACHA20
    (0xC02F, False), (0xC030, False),  # ECDHE_RSA_WITH_AES_128/256_GCM (RFC 5289)
    (0xCCA8, False),  # ECDHE_RSA_WITH_CHACHA20_POLY1305 (RFC 7905)
]


def _seal(suite_code: int, tls13: bool, key: bytes, iv: bytes, seq: int, plaintext: bytes,
          inner_type: int = APPLICATION_DATA, padding: int = 0) -> bytes:
    """One protected application-data record, as a sender writes it."""
    suite = suite_for(suite_code)
    aead = AESGCM(key) if suite.cipher == "aes-gcm" else ChaCha20Poly1305(key)
    if tls13:
        inner = plaintext + bytes([inner_type]) + bytes(padding)
        header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
        nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
        return header + aead.encrypt(nonce, inner, header)
    explicit = suite.explicit_nonce_length
    aad = seq.to_bytes(8, "big") + b"\x17\x03\x03" + len(plaintext).to_bytes(2, "big")
    if explicit:
        nonce_tail = os.urandom(explicit)
        body = nonce_tail + aead.encrypt(iv + nonce_tail, plaintext, aad)
    else:
        body = aead.encrypt((int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big"), plaintext, aad)
    return b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body


def _decryptor(suite_code: int, tls13: bool) -> tuple[Tls13Decryptor | Tls12AeadDecryptor,
                                                       bytes, bytes]:
    suite = suite_for(suite_code)
    key = os.urandom(suite.key_length)
    iv = os.urandom(12 if tls13 or not suite.explicit_nonce_length else 4)
    cls = Tls13Decryptor if tls13 else Tls12AeadDecryptor
    return cls(suite, key, iv), key, iv


def _open(dec: Tls13Decryptor | Tls12AeadDecryptor, records: list[bytes]
          ) -> tuple[int, list[bytes]]:
    buf = np.frombuffer(b"".join(records), dtype=np.uint8)
    lengths = np.array([len(r) - 5 for r in records], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 5)[:-1]]).astype(np.int64)
    out = np.empty(buf.size, dtype=np.uint8)
    ends = np.empty(len(records), dtype=np.int64)
    assert dec.native is not None
    k = native.open_records(dec.native.ptr, dec.native_kind, buf, starts, lengths,
                            dec.native_iv, dec.seq, out, ends)
    plain = [bytes(out[a:b]) for a, b in zip([0, *ends[: k - 1].tolist()], ends[:k].tolist(),
                                             strict=True)] if k else []
    return k, plain


@pytest.mark.parametrize(("code", "tls13"), SUITES)
def test_open_records_equals_the_python_decryptor(code: int, tls13: bool) -> None:
    dec, key, iv = _decryptor(code, tls13)
    rng = random.Random(code)
    texts = [os.urandom(rng.randrange(1, 2000)) for _ in range(50)]
    records = [_seal(code, tls13, key, iv, i, t, padding=rng.choice([0, 0, 7]))
               for i, t in enumerate(texts)]
    k, plain = _open(dec, records)
    assert k == len(records)
    assert plain == texts
    for i, rec in enumerate(records):  # the reference, record by record
        dec.seq = i
        assert dec.decrypt(APPLICATION_DATA, 0x0303, rec[:5], rec[5:]) == (
            APPLICATION_DATA, texts[i])


@pytest.mark.parametrize(("code", "tls13"), SUITES)
def test_open_records_stops_where_the_general_path_must_take_over(code: int,
                                                                   tls13: bool) -> None:
    dec, key, iv = _decryptor(code, tls13)
    good = [_seal(code, tls13, key, iv, i, b"x" * (i + 1)) for i in range(3)]
    # a failed tag
    bad = bytearray(_seal(code, tls13, key, iv, 3, b"tampered"))
    bad[-1] ^= 1
    assert _open(dec, [*good, bytes(bad)])[0] == 3
    # a record sealed for another sequence number is a failed tag too
    assert _open(dec, [*good, _seal(code, tls13, key, iv, 9, b"replayed")])[0] == 3
    # the first record on its own
    assert _open(dec, good[:1]) == (1, [b"x"])
    if tls13:
        # RFC 8446 §5.4: a handshake message (KeyUpdate) inside, or no content at all
        assert _open(dec, [*good, _seal(code, tls13, key, iv, 3, b"\x18\0\0\1\0",
                                         inner_type=HANDSHAKE)])[0] == 3
        assert _open(dec, [*good, _seal(code, tls13, key, iv, 3, b"")])[0] == 3
    else:
        assert _open(dec, [*good, _seal(code, tls13, key, iv, 3, b"")])[0] == 3
    dec.seq = 1  # the sequence number is an input of every record
    assert _open(dec, good[1:])[0] == 2


def test_unsupported_keys_have_no_native_context() -> None:
    assert native.AeadContext.create("aes-ccm", os.urandom(16)) is None
    assert native.AeadContext.create("aes-gcm", os.urandom(24)) is None
    assert native.AeadContext.create("chacha20-poly1305", os.urandom(16)) is None


# ---- inflate ---------------------------------------------------------------------
def _messages(rng: random.Random, bits: int, takeover: bool, n: int) -> list[bytes]:
    """Wire payloads of ``n`` messages: deflated as RFC 7692 says, sometimes with a
    BFINAL block, truncated, corrupted, or just noise."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = []
    for _ in range(n):
        text = bytes(rng.choice(b'{"px":"1.25","q":7}') if rng.random() < 0.8
                     else rng.getrandbits(8) for _ in range(rng.randrange(0, 3000)))
        kind = rng.random()
        if kind < 0.6:
            data = (comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
        elif kind < 0.75:
            final = zlib.compressobj(6, zlib.DEFLATED, -bits)
            data = final.compress(text) + final.flush()
        elif kind < 0.85:
            data = rng.randbytes(rng.randrange(0, 40))
        else:
            data = (comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
            data = data[: rng.randrange(0, len(data) + 1)]
        if data and rng.random() < 0.1:
            b = bytearray(data)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        if not takeover:
            comp = zlib.compressobj(6, zlib.DEFLATED, -bits)
        out.append(data)
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([8, 9, 11, 15]), st.booleans(),
       st.sampled_from([0, 10, 300, 4096, 1 << 20]))
def test_native_inflater_equals_message_inflater(seed: int, bits: int, takeover: bool,
                                                 cap: int) -> None:
    rng = random.Random(seed)
    ours, ref = native.NativeInflater(bits, not takeover), MessageInflater(bits, not takeover)
    for data in _messages(rng, max(bits, 9), takeover, 12):
        got, want = ours.inflate(data, cap), ref.inflate(data, cap)
        if {got[1], want[1]} == {"failed", "bomb"}:
            # corrupt data whose output also passes the cap: which zlib meets first
            # depends on how it is fed (Python's zlib takes the sync-flush tail in the
            # same call); both are anomalies and both reset the context
            continue
        assert got[1] == want[1]
        if want[1] != "failed":  # (a failed message's partial output is not defined)
            assert got[0] == want[0]
        assert len(got[0]) <= cap


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.booleans(), st.booleans(), st.sampled_from([50, 1 << 20]))
def test_ws_payloads_equals_the_python_loop(seed: int, masked: bool, takeover: bool,
                                            cap: int) -> None:
    """Frames as ``ws_simple_frames`` hands them over: header, masking key, payload."""
    rng = random.Random(seed)
    payloads = _messages(rng, 15, takeover, 30)
    rsv1 = np.array([rng.random() < 0.8 for _ in payloads])
    frames, starts, hls = [], [], []
    pos = 0
    for p in payloads:
        n = len(p)
        length = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
        key = os.urandom(4) if masked else b""
        body = bytes(b ^ key[i % 4] for i, b in enumerate(p)) if masked else p
        head = b"\xc1" + bytes([length[0] | (0x80 if masked else 0)]) + length[1:] + key
        frames.append(head + body)
        starts.append(pos)
        hls.append(len(head))
        pos += len(head) + n
    data = b"".join(frames)
    args = (np.array(starts, dtype=np.int64), np.array(hls, dtype=np.int64),
            np.array([len(p) for p in payloads], dtype=np.int64), rsv1)
    session = WebSocketSession(1, extensions="permessage-deflate" + (
        "" if takeover else "; server_no_context_takeover; client_no_context_takeover"),
        max_inflated=cap)
    d = session._dirs["in"]
    d.inflater = MessageInflater(15, not takeover)
    d.buf.append(data, 0, 0)
    want, want_ends, want_status = session._payloads_py(d, *args, masked)
    z = native.NativeInflater(15, not takeover)
    got, got_ends, got_status = native.ws_payloads(
        np.frombuffer(data, dtype=np.uint8), *args, masked, z.strm, not takeover, 15, cap)
    starts_got = [0, *got_ends[:-1].tolist()]
    starts_want = [0, *want_ends[:-1].tolist()]
    for i, (status, ours) in enumerate(zip(want_status.tolist(), got_status.tolist(),
                                           strict=True)):
        if {status, ours} == {native.FAILED, native.BOMB}:
            continue  # as in test_native_inflater_equals_message_inflater
        assert ours == status
        if status != native.FAILED:
            assert bytes(got[starts_got[i]:got_ends[i]]) == want[starts_want[i]:want_ends[i]]
