"""Sealing state kept for a TLS connection under a key derived from its own secret.

The state of a connection that a capture file leaves open is kept with the dataset
so the next file's ingest resumes it (``pipelines.ingest.resume``). For a decrypted
TLS connection that state holds plaintext (a partial HTTP message, a WebSocket
inflate window, an HPACK table), which may carry API keys and signatures: it is
sealed with AES-256-GCM under a key derived from one of the session's key log
secrets, so it is unreadable without the key log, as the capture itself is.

``key = HKDF-Expand-Label(secret, "pcapflow resume", client_random, 32)`` (RFC 8446
§7.1 with SHA-256, whatever the suite: the secret is only the PRK here); a fresh
random 96-bit nonce per seal, stored before the ciphertext; the caller's
additional data binds the blob to its connection.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keyschedule import hkdf_expand_label

LABEL = b"pcapflow resume"
NONCE_BYTES = 12


def seal_key(secret: bytes, client_random: bytes) -> bytes:
    """The sealing key of one session (never stored)."""
    return hkdf_expand_label(secret, LABEL, client_random, 32, "sha256")


def seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    """``nonce || AES-256-GCM(data)``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes | None:
    """The sealed data, or None when the key or the additional data is wrong."""
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        return None
