"""Find a TLS 1.3 session's traffic secret when its handshake was not captured.

How this works. A capture that starts after the handshake has no ClientHello, so
the key log cannot be looked up by client random. Every TLS 1.3 secret the key log
holds for this direction (``CLIENT_TRAFFIC_SECRET_0`` for ``out``,
``SERVER_TRAFFIC_SECRET_0`` for ``in``, and the handshake secrets, for a capture
cut inside the handshake) is a candidate instead. A candidate is right when a record
of the direction authenticates under the key it derives (RFC 8446 §7.3) at some
record sequence number (the nonce is ``iv xor seq``, §5.3) and KeyUpdate generation
(``secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length)``, §7.2).

The secret's length gives its hash, which narrows the suites (RFC 8446 §B.4):
32 bytes (SHA-256) -> TLS_AES_128_GCM_SHA256 or TLS_CHACHA20_POLY1305_SHA256,
48 bytes (SHA-384) -> TLS_AES_256_GCM_SHA384. (The AES-CCM suites are not searched.)

AES-GCM costs one AES block per candidate key, whatever the window of sequence
numbers. The tag is ``T = GHASH_H(A, C) xor E_K(J0)`` with ``J0 = nonce || 0^31 1``
(NIST SP 800-38D §7.1), and GHASH does not depend on the nonce; so
``J0 = AES^-1_K(T xor GHASH_H(A, C))``. A key is a match when that J0 ends in
``00000001`` and starts with the first 4 bytes of the key's iv (the 64-bit sequence
number is xored into the last 8 nonce bytes); then ``seq = J0[4:12] xor iv[4:12]``,
which must be below ``SearchLimits.records``. A wrong key passes those 64 bits with
probability 2^-64, and a match is decrypted and authenticated in full before it is
believed. GHASH comes from the cipher itself (no GF(2^128) code here): with the
fixed nonce N* = 0, the keystream is the GCM encryption of zeros, the tag of
``(A, C)`` is that of encrypting ``C xor keystream`` (whose ciphertext is C), and
``E_K(J0*)`` is the tag of the empty message; ``GHASH = tag* xor E_K(J0*)``.

ChaCha20-Poly1305 has no such shortcut (the Poly1305 key is the ChaCha20 block of
the nonce): every sequence number below ``SearchLimits.chacha_records`` is tried,
which costs about 0.6 µs each on a short record; hence its smaller window, and
at most ``CHACHA_GENERATIONS`` KeyUpdate generations.

Candidates are tried generation by generation (the cheap suites of every
generation first), and a preferred client random (the other direction's match:
both directions of a connection are one key log entry) before all others. The
derived keys are cached on the ``KeyLog`` (``KeyLog.search_cache``), so the
connections of one ingest derive each key once; nothing here ever leaves memory.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from . import keysearch_native as kn
from .ciphers import Tls13Decryptor
from .keylog import KeyLog
from .keyschedule import HASH_LENGTH, tls13_next_traffic_secret, tls13_traffic_keys
from .search_limits import (  # noqa: F401  (re-exported: ``keysearch.SearchLimits``...)
    DEFAULT_CHACHA_RECORDS,
    DEFAULT_GENERATIONS,
    DEFAULT_RECORDS,
    SearchLimits,
)
from .suites import SUITES, CipherSuite

# -- limits (``pipelines.limits.Limits`` carries the user's values) ---------------
CHACHA_GENERATIONS = 2
"""KeyUpdate generations tried under ChaCha20-Poly1305 (at most): RFC 8446 §5.5 sets
key usage limits for AES-GCM only ("For ChaCha20/Poly1305, the record sequence
number would wrap before the safety limit is reached"), so stacks that update keys
by usage never update these; only an application's explicit KeyUpdate does."""
SEARCH_RECORDS = 2
"""Protected records of a direction tried before the search gives up (the first
could be misframed by a mid-stream resync). ChaCha20-Poly1305 is tried on the
first only."""

MAX_CACHED_KEYS = 1 << 19
"""Derived keys kept on a ``KeyLog`` (~130 bytes each with their secret: ~70 MB);
past it, later generations are derived again for each search (slower, same result)."""

NONCE_LENGTH = 12
TAG_LENGTH = 16
MIN_FRAGMENT = TAG_LENGTH + 1  # §5.2: the inner plaintext holds at least the type byte
_J0_TAIL = np.array([0, 0, 0, 1], dtype=np.uint8)  # NIST SP 800-38D §7.1, 96-bit IV
_U64 = np.dtype(">u8")
_NSTAR = bytes(NONCE_LENGTH)

SEARCHED_SUITES: tuple[CipherSuite, ...] = tuple(
    s for s in SUITES.values() if s.tls13 and s.cipher in ("aes-gcm", "chacha20-poly1305"))
"""TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256."""


@dataclass(frozen=True, slots=True)
class Found:
    """The secret that decrypts a direction, and where in its life the capture began."""

    client_random: bytes
    label: str
    generation: int
    """KeyUpdates since the logged secret (0: none)."""
    suite: CipherSuite
    secret: bytes
    """The traffic secret of that generation (``repr`` hides it)."""
    seq: int
    """Record sequence number of the record tried (records before it in its epoch
    were not captured)."""

    def __repr__(self) -> str:
        return (f"Found({self.label}, client_random={self.client_random.hex()}, "
                f"generation={self.generation}, suite={self.suite.name}, seq={self.seq})")


@dataclass(slots=True)
class Outcome:
    """A search's result and what it cost."""

    found: Found | None = None
    secrets: int = 0
    """Distinct secrets considered (of a searchable length)."""
    keys: int = 0
    """Keys tried: secret x generation x suite."""
    attempts: int = 0
    """Trial authentications: one per AES-GCM key, one per ChaCha20 key and sequence number."""


# -- candidate keys, derived once per key log ---------------------------------------
@dataclass(slots=True)
class _Keys:
    """One generation of one label's secrets of one hash, with one suite's keys."""

    randoms: list[bytes]
    secrets: list[bytes]
    keys: np.ndarray  # (n, key_length) uint8
    ivs: np.ndarray  # (n, 12) uint8


class _Cache:
    """Secrets by (label, hash) and keys by (label, suite, generation) of one key log."""

    __slots__ = ("keys", "lines", "rows", "secrets")

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.rows = 0  # secrets and keys held, against MAX_CACHED_KEYS
        self.secrets: dict[tuple[str, str, int], tuple[list[bytes], list[bytes]]] = {}
        self.keys: dict[tuple[str, int, int], _Keys] = {}


def _cache(log: KeyLog) -> _Cache:
    cache = log.search_cache
    if not isinstance(cache, _Cache) or cache.lines != log.lines:
        cache = log.search_cache = _Cache(log.lines)
    return cache


def _secrets(log: KeyLog, label: str, hash_name: str, generation: int
             ) -> tuple[list[bytes], list[bytes]]:
    """``(randoms, secrets)`` of ``label`` and ``hash_name``, ``generation`` updates on."""
    cache = _cache(log)
    key = (label, hash_name, generation)
    got = cache.secrets.get(key)
    if got is None:
        if generation == 0:
            length = HASH_LENGTH[hash_name]
            rows = [(r, s) for r, s in log.entries(label) if len(s) == length]
            got = ([r for r, _ in rows], [s for _, s in rows])
        else:
            randoms, prev = _secrets(log, label, hash_name, generation - 1)
            got = (randoms, [tls13_next_traffic_secret(s, hash_name) for s in prev])
        if cache.rows < MAX_CACHED_KEYS:
            cache.secrets[key] = got
            cache.rows += len(got[1])
    return got


def _derive(randoms: list[bytes], secrets: list[bytes], suite: CipherSuite) -> _Keys:
    n = len(secrets)
    keys = np.empty((n, suite.key_length), dtype=np.uint8)
    ivs = np.empty((n, NONCE_LENGTH), dtype=np.uint8)
    for i, secret in enumerate(secrets):
        key, iv = tls13_traffic_keys(secret, suite.key_length, NONCE_LENGTH, suite.prf_hash)
        keys[i] = np.frombuffer(key, dtype=np.uint8)
        ivs[i] = np.frombuffer(iv, dtype=np.uint8)
    return _Keys(randoms, secrets, keys, ivs)


def _keys(log: KeyLog, label: str, suite: CipherSuite, generation: int) -> _Keys:
    cache = _cache(log)
    key = (label, suite.id, generation)
    got = cache.keys.get(key)
    if got is None:
        randoms, secrets = _secrets(log, label, suite.prf_hash, generation)
        got = _derive(randoms, secrets, suite)
        if cache.rows < MAX_CACHED_KEYS:
            cache.keys[key] = got
            cache.rows += len(secrets)
    return got


def _one(log: KeyLog, client_random: bytes, label: str, suite: CipherSuite,
         generation: int) -> _Keys | None:
    """The keys of one key log entry (the preferred client random), not cached."""
    secret = log.get(client_random, label)
    if secret is None or len(secret) != HASH_LENGTH[suite.prf_hash]:
        return None
    for _ in range(generation):
        secret = tls13_next_traffic_secret(secret, suite.prf_hash)
    return _derive([client_random], [secret], suite)


# -- trial authentication -------------------------------------------------------------
def gcm_j0(keys: np.ndarray, aad: bytes, ct: bytes, tag: bytes, *,
           use_native: bool = True) -> np.ndarray:
    """For each AES-GCM key (rows of ``keys``), the J0 under which ``ct`` with
    ``tag`` and additional data ``aad`` authenticates: ``(n, 16)`` uint8."""
    n, klen = keys.shape
    out = np.empty((n, TAG_LENGTH), dtype=np.uint8)
    if not n:
        return out
    if use_native and kn.AVAILABLE:
        gcm = kn.EvpContext("aes-gcm", klen, encrypt=True)
        ecb = kn.EvpContext("aes-ecb", klen, encrypt=False)
        done = kn.gcm_j0(gcm.ptr, ecb.ptr, np.ascontiguousarray(keys),
                         np.frombuffer(aad, dtype=np.uint8), np.frombuffer(ct, dtype=np.uint8),
                         np.frombuffer(tag, dtype=np.uint8), out)
        if done == n:
            return out
    zeros = bytes(len(ct))
    c = int.from_bytes(ct, "big")
    t = int.from_bytes(tag, "big")
    for i in range(n):
        key = keys[i].tobytes()
        gcm_py = AESGCM(key)
        e0 = int.from_bytes(gcm_py.encrypt(_NSTAR, b"", None), "big")
        ks = gcm_py.encrypt(_NSTAR, zeros, None)[: len(ct)]
        p = (c ^ int.from_bytes(ks, "big")).to_bytes(len(ct), "big")
        tstar = int.from_bytes(gcm_py.encrypt(_NSTAR, p, aad)[-TAG_LENGTH:], "big")
        target = (t ^ tstar ^ e0).to_bytes(TAG_LENGTH, "big")
        j0 = Cipher(algorithms.AES(key), modes.ECB()).decryptor().update(target)
        out[i] = np.frombuffer(j0, dtype=np.uint8)
    return out


def gcm_seqs(j0: np.ndarray, ivs: np.ndarray) -> np.ndarray:
    """The sequence number each row's J0 stands for, or -1 where J0 is not of the
    form ``(iv xor (0^32 || seq)) || 00000001`` (a wrong key)."""
    shaped = (j0[:, 12:] == _J0_TAIL).all(axis=1) & (j0[:, :4] == ivs[:, :4]).all(axis=1)
    seq = (np.ascontiguousarray(j0[:, 4:12]).view(_U64)[:, 0]
           ^ np.ascontiguousarray(ivs[:, 4:12]).view(_U64)[:, 0])
    seq = seq.astype(np.uint64)
    out = np.full(j0.shape[0], -1, dtype=np.int64)
    ok = shaped & (seq < np.uint64(1 << 63))
    out[ok] = seq[ok].astype(np.int64)
    return out


def chacha_seqs(keys: np.ndarray, ivs: np.ndarray, aad: bytes, ct: bytes, tag: bytes,
                window: int, *, use_native: bool = True) -> np.ndarray:
    """For each ChaCha20-Poly1305 key, the first sequence number below ``window``
    under which the record authenticates, else -1 (keys after the first match are
    not tried: -1 too)."""
    n = keys.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    if not n or window <= 0:
        return out
    if use_native and kn.AVAILABLE:
        ctx = kn.EvpContext("chacha20-poly1305", 32, encrypt=False)
        done = kn.chacha_seq(ctx.ptr, np.ascontiguousarray(keys), np.ascontiguousarray(ivs),
                             np.frombuffer(aad, dtype=np.uint8),
                             np.frombuffer(ct, dtype=np.uint8),
                             np.frombuffer(tag, dtype=np.uint8), window, out)
        if done >= 0:
            out[done:] = -1
            return out
    sealed = ct + tag
    for i in range(n):
        aead = ChaCha20Poly1305(keys[i].tobytes())
        iv = int.from_bytes(ivs[i].tobytes(), "big")
        for s in range(window):
            try:
                aead.decrypt((iv ^ s).to_bytes(NONCE_LENGTH, "big"), sealed, aad)
            except InvalidTag:
                continue
            out[i] = s
            return out
    return out


def _confirm(suite: CipherSuite, secret: bytes, seq: int, header: bytes,
             fragment: bytes) -> bool:
    """Decrypt and authenticate the record in full at ``seq`` (the match is real)."""
    key, iv = tls13_traffic_keys(secret, suite.key_length, NONCE_LENGTH, suite.prf_hash)
    dec = Tls13Decryptor(suite, key, iv)
    dec.seq = seq
    return dec.decrypt(header[0], struct.unpack("!H", header[1:3])[0], header, fragment) is not None


DEFAULT_LIMITS = SearchLimits()


# -- the search -------------------------------------------------------------------------
def search(log: KeyLog, labels: Sequence[tuple[str, int]], header: bytes, fragment: bytes,
           limits: SearchLimits = DEFAULT_LIMITS, *,
           suites: Sequence[CipherSuite] | None = None, prefer: bytes | None = None,
           chacha: bool = True, use_native: bool = True) -> Outcome:
    """Which key log secret protects this record (5-byte ``header``, ``fragment``)?

    ``labels``: ``(label, generations)`` pairs, e.g. the direction's application
    secret over ``limits.generations`` and its handshake secret over 1 (ChaCha20:
    at most ``CHACHA_GENERATIONS``). ``suites``:
    the suites to try (default ``SEARCHED_SUITES``; the ServerHello's when seen).
    ``prefer``: a client random tried first (the other direction's match).
    ``chacha=False`` leaves ChaCha20-Poly1305 out (a retry on a later record).
    """
    outcome = Outcome()
    if len(fragment) < MIN_FRAGMENT:
        return outcome
    chosen = [s for s in (suites or SEARCHED_SUITES) if s in SEARCHED_SUITES
              and (chacha or s.cipher != "chacha20-poly1305")]
    ct, tag = fragment[:-TAG_LENGTH], fragment[-TAG_LENGTH:]
    seen: set[tuple[str, bytes]] = set()
    for label, _ in labels:
        for random, secret in log.entries(label):
            if any(len(secret) == HASH_LENGTH[s.prf_hash] for s in chosen):
                seen.add((label, random))
    outcome.secrets = len(seen)
    # cheap suites first: every AES-GCM generation before the first ChaCha20 key
    order = sorted(chosen, key=lambda s: s.cipher != "aes-gcm")
    passes: list[bytes | None] = [prefer, None] if prefer is not None else [None]
    for only in passes:
        for suite in order:
            for label, generations in labels:
                if suite.cipher != "aes-gcm":
                    generations = min(generations, CHACHA_GENERATIONS)
                for gen in range(generations):
                    if only is not None:
                        keys = _one(log, only, label, suite, gen)
                    else:
                        keys = _keys(log, label, suite, gen)
                    if keys is None or not keys.secrets:
                        break
                    found = _try(keys, suite, label, gen, header, ct, tag, fragment,
                                 limits, outcome, use_native)
                    if found is not None:
                        outcome.found = found
                        return outcome
    return outcome


def _try(keys: _Keys, suite: CipherSuite, label: str, gen: int, header: bytes, ct: bytes,
         tag: bytes, fragment: bytes, limits: SearchLimits, outcome: Outcome,
         use_native: bool) -> Found | None:
    """Try one block of candidate keys on the record; the confirmed match or None."""
    n = len(keys.secrets)
    outcome.keys += n
    if suite.cipher == "aes-gcm":
        outcome.attempts += n
        seqs = gcm_seqs(gcm_j0(keys.keys, header, ct, tag, use_native=use_native), keys.ivs)
        seqs[seqs >= limits.records] = -1
    else:
        window = limits.chacha_records
        seqs = chacha_seqs(keys.keys, keys.ivs, header, ct, tag, window, use_native=use_native)
        hit = np.flatnonzero(seqs >= 0)
        tried = int(hit[0]) + 1 if hit.size else n
        outcome.attempts += (tried - hit.size) * window + int((seqs[hit] + 1).sum())
    for i in np.flatnonzero(seqs >= 0).tolist():
        secret = keys.secrets[i]
        if _confirm(suite, secret, int(seqs[i]), header, fragment):
            return Found(keys.randoms[i], label, gen, suite, secret, int(seqs[i]))
    return None
