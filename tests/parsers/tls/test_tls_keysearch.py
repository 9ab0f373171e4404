"""The TLS 1.3 key search (``parsers/tls/keysearch.py``) and sessions without a handshake.

Records are sealed here independently of the code under test: RFC 8446 §5.2-5.4
with ``cryptography``'s AEADs (nonce = iv xor seq, additional data = the record
header, inner plaintext = content + type), keys from §7.3 and KeyUpdate secrets
from §7.2. Key logs hold decoys (random secrets of the same lengths) around the
session's own secrets. Every search runs on both implementations (libcrypto from
Numba, and ``cryptography``).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.tls import KeyLog, Plaintext, TlsRecord, TlsSession, suite_for
from pcapflow.parsers.tls import keysearch as ks
from pcapflow.parsers.tls import keysearch_native as kn
from pcapflow.parsers.tls.events import TlsHandshakeInfo
from pcapflow.parsers.tls.keyschedule import tls13_next_traffic_secret, tls13_traffic_keys
from pcapflow.parsers.tls.keysearch import SearchLimits

AES128, AES256, CHACHA = suite_for(0x1301), suite_for(0x1302), suite_for(0x1303)
SUITES = {"aes128": AES128, "aes256": AES256, "chacha": CHACHA}
IMPLS = [pytest.param(True, id="native", marks=pytest.mark.skipif(
    not kn.AVAILABLE, reason="no libcrypto")), pytest.param(False, id="python")]
CTS, STS = "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"
KEY_UPDATE = 24  # RFC 8446 §4 HandshakeType key_update


def seal(suite, secret: bytes, seq: int, content: bytes, inner: int = 23) -> bytes:
    """One TLS 1.3 record (RFC 8446 §5.2), sealed with ``cryptography``."""
    key, iv = tls13_traffic_keys(secret, suite.key_length, 12, suite.prf_hash)
    aead = ChaCha20Poly1305(key) if suite is CHACHA else AESGCM(key)
    body = content + bytes([inner])
    header = bytes([23, 3, 3]) + (len(body) + 16).to_bytes(2, "big")
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    return header + aead.encrypt(nonce, body, header)


def generation(secret: bytes, suite, n: int) -> bytes:
    for _ in range(n):
        secret = tls13_next_traffic_secret(secret, suite.prf_hash)
    return secret


def hash_len(suite) -> int:
    return 48 if suite.prf_hash == "sha384" else 32


def keylog(sessions: int, length: int, *, seed: int = 1, extra: list[tuple] = ()) -> KeyLog:
    """``sessions`` decoy sessions (both traffic secrets), plus ``extra`` lines
    ``(label, client_random, secret)`` at a random place among them."""
    rng = random.Random(seed)
    lines = []
    for _ in range(sessions):
        r = rng.randbytes(32).hex()
        lines += [f"{CTS} {r} {rng.randbytes(length).hex()}",
                  f"{STS} {r} {rng.randbytes(length).hex()}"]
    at = rng.randrange(len(lines) + 1)
    lines[at:at] = [f"{label} {r.hex()} {s.hex()}" for label, r, s in extra]
    return KeyLog.from_text("\n".join(lines) + "\n")


def split(record: bytes) -> tuple[bytes, bytes]:
    return record[:5], record[5:]


# -- the search alone -----------------------------------------------------------------
@pytest.mark.parametrize("native", IMPLS)
@pytest.mark.parametrize(("suite_name", "seq"), [
    ("aes256", 0), ("aes256", 1), ("aes256", 123_456_789), ("aes256", (1 << 32) - 1),
    ("aes128", 0), ("aes128", 77_777), ("chacha", 0), ("chacha", 100), ("chacha", 255),
])
def test_found_at_seq(suite_name: str, seq: int, native: bool) -> None:
    suite = SUITES[suite_name]
    random_, secret = os.urandom(32), os.urandom(hash_len(suite))
    log = keylog(40, hash_len(suite), extra=[(CTS, random_, secret)])
    header, fragment = split(seal(suite, secret, seq, b"GET /api/v3/order HTTP/1.1\r\n"))
    out = ks.search(log, [(CTS, 16)], header, fragment, use_native=native)
    assert out.found is not None
    f = out.found
    assert (f.client_random, f.label, f.generation, f.suite, f.seq) == (
        random_, CTS, 0, suite, seq)
    assert f.secret == secret and secret.hex() not in repr(f)
    assert out.secrets == 41


@pytest.mark.parametrize("native", IMPLS)
@pytest.mark.parametrize("suite_name", ["aes256", "aes128", "chacha"])
def test_window_edges(suite_name: str, native: bool) -> None:
    """Found at the last sequence number of the window, not one past it."""
    suite = SUITES[suite_name]
    limits = SearchLimits(records=1000, chacha_records=64, generations=4)
    last = (limits.chacha_records if suite is CHACHA else limits.records) - 1
    random_, secret = os.urandom(32), os.urandom(hash_len(suite))
    log = keylog(20, hash_len(suite), extra=[(CTS, random_, secret)])
    for seq, hit in ((last, True), (last + 1, False)):
        header, fragment = split(seal(suite, secret, seq, b"x" * 50))
        out = ks.search(log, [(CTS, 4)], header, fragment, limits, use_native=native)
        assert (out.found is not None) == hit
        if hit:
            assert out.found.seq == seq
        else:  # every secret, generation and suite of its hash was tried
            chacha = 21 * ks.CHACHA_GENERATIONS if suite.prf_hash == "sha256" else 0
            assert out.keys == 21 * 4 + chacha


@pytest.mark.parametrize("native", IMPLS)
def test_key_update_generations(native: bool) -> None:
    random_, secret0 = os.urandom(32), os.urandom(48)
    log = keylog(30, 48, extra=[(STS, random_, secret0)])
    header, fragment = split(seal(AES256, generation(secret0, AES256, 5), 42, b"{}"))
    out = ks.search(log, [(STS, 6)], header, fragment, use_native=native)
    assert out.found is not None and (out.found.generation, out.found.seq) == (5, 42)
    assert out.found.secret == generation(secret0, AES256, 5)
    assert ks.search(log, [(STS, 5)], header, fragment, use_native=native).found is None


@pytest.mark.parametrize("native", IMPLS)
def test_chacha_generations_are_capped(native: bool) -> None:
    """ChaCha20-Poly1305: at most CHACHA_GENERATIONS (no usage limit forces KeyUpdates)."""
    random_, secret0 = os.urandom(32), os.urandom(32)
    log = keylog(10, 32, extra=[(CTS, random_, secret0)])
    last = ks.CHACHA_GENERATIONS - 1
    for gen, hit in ((last, True), (last + 1, False)):
        header, fragment = split(seal(CHACHA, generation(secret0, CHACHA, gen), 9, b"w"))
        out = ks.search(log, [(CTS, 16)], header, fragment, use_native=native)
        assert (out.found is not None) == hit
        if hit:
            assert (out.found.suite, out.found.generation) == (CHACHA, gen)


@pytest.mark.parametrize("native", IMPLS)
def test_wrong_key_log(native: bool) -> None:
    header, fragment = split(seal(AES256, os.urandom(48), 3, b"order"))
    out = ks.search(keylog(50, 48), [(CTS, 16)], header, fragment, use_native=native)
    assert out.found is None and out.secrets == 50 and out.keys == 50 * 16
    # the other direction's label is not a candidate
    random_, secret = os.urandom(32), os.urandom(48)
    log = keylog(5, 48, extra=[(STS, random_, secret)])
    header, fragment = split(seal(AES256, secret, 3, b"order"))
    assert ks.search(log, [(CTS, 16)], header, fragment, use_native=native).found is None


@pytest.mark.parametrize("native", IMPLS)
@pytest.mark.parametrize("suite_name", ["aes256", "aes128"])
def test_thousand_session_key_log_with_decoys(suite_name: str, native: bool) -> None:
    suite = SUITES[suite_name]
    random_, secret0 = os.urandom(32), os.urandom(hash_len(suite))
    log = keylog(1000, hash_len(suite), seed=7, extra=[(CTS, random_, secret0)])
    header, fragment = split(seal(suite, generation(secret0, suite, 3), 9_876_543, b"y" * 300))
    out = ks.search(log, [(CTS, 16)], header, fragment, use_native=native)
    assert out.found is not None
    assert (out.found.client_random, out.found.generation, out.found.seq) == (
        random_, 3, 9_876_543)
    assert out.secrets == 1001 and out.keys <= 1001 * 4
    # a second search reuses the keys derived on the KeyLog
    assert isinstance(log.search_cache, ks._Cache) and log.search_cache.keys


@pytest.mark.skipif(not kn.AVAILABLE, reason="no libcrypto")
@pytest.mark.parametrize("suite_name", ["aes256", "aes128", "chacha"])
def test_native_equals_python(suite_name: str) -> None:
    suite = SUITES[suite_name]
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 256, (64, suite.key_length), dtype=np.uint8)
    ivs = rng.integers(0, 256, (64, 12), dtype=np.uint8)
    aad, ct, tag = b"\x17\x03\x03\x01\x10", rng.bytes(256), rng.bytes(16)
    if suite is CHACHA:
        # key 10 really seals the record at seq 7
        nonce = (int.from_bytes(ivs[10].tobytes(), "big") ^ 7).to_bytes(12, "big")
        sealed = ChaCha20Poly1305(keys[10].tobytes()).encrypt(nonce, ct, aad)
        ct, tag = sealed[:-16], sealed[-16:]
        a = ks.chacha_seqs(keys, ivs, aad, ct, tag, 16, use_native=True)
        b = ks.chacha_seqs(keys, ivs, aad, ct, tag, 16, use_native=False)
        assert a.tolist() == b.tolist() and a[10] == 7 and (a[:10] == -1).all()
    else:
        a = ks.gcm_j0(keys, aad, ct, tag, use_native=True)
        b = ks.gcm_j0(keys, aad, ct, tag, use_native=False)
        assert (a == b).all()


def test_short_fragment_is_not_searched() -> None:
    out = ks.search(keylog(3, 48), [(CTS, 16)], b"\x17\x03\x03\x00\x10", bytes(16))
    assert out.found is None and out.keys == 0


# -- sessions without a handshake -------------------------------------------------------
def run(session: TlsSession, pieces: list[tuple[str, bytes]], t0: int = 1_000) -> list[object]:
    events: list[object] = []
    for i, (direction, data) in enumerate(pieces):
        events += session.feed(direction, data, t0 + i, t0 + i)  # type: ignore[arg-type]
    return events + session.finish(t0 + len(pieces))


def plaintext(events: list[object], direction: str) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Plaintext) and e.direction == direction)


def anomalies(events: list[object], code: str) -> list[Anomaly]:
    return [e for e in events if isinstance(e, Anomaly) and e.code == code]


def connection(suite, n_decoys: int = 200):
    """A key log with decoys and one session's secrets; returns (log, random, c, s)."""
    random_, c, s = os.urandom(32), os.urandom(hash_len(suite)), os.urandom(hash_len(suite))
    log = keylog(n_decoys, hash_len(suite), extra=[(CTS, random_, c), (STS, random_, s)])
    return log, random_, c, s


@pytest.mark.parametrize("suite_name", ["aes256", "aes128", "chacha"])
def test_session_decrypts_both_directions(suite_name: str) -> None:
    suite = SUITES[suite_name]
    log, random_, c, s = connection(suite)
    out_msgs = [f"POST /api/v3/order?i={i} HTTP/1.1\r\n\r\n".encode() for i in range(6)]
    in_msgs = [f"HTTP/1.1 200 OK\r\nX-N: {i}\r\n\r\n".encode() for i in range(6)]
    pieces = []
    first_in = 200 if suite is CHACHA else 250  # within the ChaCha20 window (256)
    for i in range(6):  # the capture began at client record 100, server record first_in
        pieces += [("out", seal(suite, c, 100 + i, out_msgs[i])),
                   ("in", seal(suite, s, first_in + i, in_msgs[i]))]
    events = run(TlsSession(1, log), pieces)
    assert plaintext(events, "out") == b"".join(out_msgs)
    assert plaintext(events, "in") == b"".join(in_msgs)
    recs = [e for e in events if isinstance(e, TlsRecord)]
    assert len(recs) == 12 and all(r.decrypted and r.inner_content_type == 23 for r in recs)
    found = anomalies(events, "handshake_not_captured")
    assert [a.direction for a in found] == ["out", "in"]
    assert "record 100" in found[0].detail and f"record {first_in}" in found[1].detail
    assert random_.hex() in found[0].detail
    # the server's secret is the same entry's peer: one key tried
    assert found[1].detail.endswith("keys tried: 1); SNI, ALPN and handshake time unknown")
    info = [e for e in events if isinstance(e, TlsHandshakeInfo)]
    assert len(info) == 1 and (info[0].version, info[0].cipher) == ("1.3", suite.name)
    assert info[0].client_random == random_.hex() and info[0].sni is None
    for e in events:  # no key material in any event
        assert c.hex() not in repr(e) and s.hex() not in repr(e)


def test_session_feed_many_equals_feed() -> None:
    from pcapflow.parsers.events import Run
    log, _, c, s = connection(AES256)
    pieces = [("out", seal(AES256, c, 10 + i, b"m%d" % i)) for i in range(30)]
    a = run(TlsSession(1, log), [("in", seal(AES256, s, 5, b"hi")), *pieces])
    session = TlsSession(1, log)
    b = session.feed("in", seal(AES256, s, 5, b"hi"), 1000, 1000)
    data = b"".join(p for _, p in pieces)
    ends = np.cumsum([len(p) for _, p in pieces])
    t = np.arange(1001, 1031, dtype=np.int64)
    b += session.feed_many("out", Run(data, ends, t, t)) + session.finish(1031)
    got = b"".join(e.data for e in b if isinstance(e, Plaintext) and e.direction == "out")
    got += b"".join(e.run.data for e in b if type(e).__name__ == "PlaintextRun")
    assert got == plaintext(a, "out") == b"".join(b"m%d" % i for i in range(30))


def test_session_key_update_inside_and_before_the_capture() -> None:
    log, _, c, _s = connection(AES256)
    c2, c3 = generation(c, AES256, 2), generation(c, AES256, 3)
    key_update = bytes([KEY_UPDATE, 0, 0, 1, 0])  # update_not_requested
    pieces = [("out", seal(AES256, c2, 7, b"a")), ("out", seal(AES256, c2, 8, b"b")),
              ("out", seal(AES256, c2, 9, key_update, inner=22)),
              ("out", seal(AES256, c3, 0, b"c")), ("out", seal(AES256, c3, 1, b"d"))]
    events = run(TlsSession(1, log), pieces)
    assert plaintext(events, "out") == b"abcd"
    assert "2 KeyUpdates, record 7" in anomalies(events, "handshake_not_captured")[0].detail
    assert all(r.decrypted for r in events if isinstance(r, TlsRecord))


def test_session_wrong_key_log() -> None:
    log, _, c, _s = connection(AES256, n_decoys=30)
    other = keylog(30, 48, seed=99)
    pieces = [("out", seal(AES256, c, 3 + i, b"z")) for i in range(4)]
    events = run(TlsSession(1, other), pieces)
    assert not any(r.decrypted for r in events if isinstance(r, TlsRecord))
    assert len([r for r in events if isinstance(r, TlsRecord)]) == 4
    (miss,) = anomalies(events, "tls13_secret_not_found")
    assert miss.direction == "out"
    assert "30 secrets" in miss.detail and "first 2 records" in miss.detail
    assert "generations 0-15" in miss.detail and "--keylog" in miss.detail
    # a TLS 1.2 key log (CLIENT_RANDOM lines only) says there is nothing to search
    tls12 = KeyLog.from_text(f"CLIENT_RANDOM {os.urandom(32).hex()} {os.urandom(48).hex()}\n")
    (miss,) = anomalies(run(TlsSession(1, tls12), pieces), "tls13_secret_not_found")
    assert "holds no TLS 1.3 traffic secret" in miss.detail and "TLS 1.2" in miss.detail
    # beyond the window: the same, with the limits in the message
    limits = SearchLimits(records=3, generations=2)
    (miss,) = anomalies(run(TlsSession(1, log, search=limits), pieces), "tls13_secret_not_found")
    assert "below 3 (AES-GCM)" in miss.detail and "generations 0-1" in miss.detail
    # a direction that ends after one record: said at the end
    (miss,) = anomalies(run(TlsSession(1, other), pieces[:1]), "tls13_secret_not_found")
    assert "first record at" in miss.detail
    # no key log: nothing is searched, nothing claimed
    assert not anomalies(run(TlsSession(1, None), pieces), "tls13_secret_not_found")


def test_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``MAX_CACHED_KEYS`` keys are derived again: the same result, bounded memory."""
    monkeypatch.setattr(ks, "MAX_CACHED_KEYS", 100)
    random_, secret0 = os.urandom(32), os.urandom(48)
    log = keylog(60, 48, extra=[(CTS, random_, secret0)])
    header, fragment = split(seal(AES256, generation(secret0, AES256, 4), 11, b"q"))
    for _ in range(2):
        out = ks.search(log, [(CTS, 8)], header, fragment, use_native=False)
        assert out.found is not None and (out.found.generation, out.found.seq) == (4, 11)
    cache = log.search_cache
    assert isinstance(cache, ks._Cache) and cache.rows < 100 + 61
