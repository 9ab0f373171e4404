"""Events the TLS session parser returns (one event type per table, STYLE.md rule 3).

None of them ever carries key material: secrets, keys and IVs stay inside the
decryptor objects. ``client_random`` is public (it travels in the clear).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..events import Direction, Run


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRecord:
    """One TLS record on the wire: a row of ``tls_records``."""

    ts_first: int
    """Capture time (ns) of the piece holding the record header's first byte."""
    ts_last: int
    """``ts_last`` of the piece holding the record's last byte."""
    flow_id: int
    direction: Direction
    stream_offset: int
    """Offset of the 5-byte record header in this direction's TCP stream."""
    content_type: int
    """Outer ``ContentType`` (23 for every protected TLS 1.3 record)."""
    version: int
    """Record-layer ``legacy_record_version`` (e.g. 0x0303)."""
    length: int
    """Bytes on the wire, 5-byte header included."""
    decrypted: bool
    """Record protection was removed (and authenticated) with key-log secrets."""
    plaintext_length: int | None
    """Bytes the application sees (no explicit nonce, MAC, padding or TLS 1.3 inner
    type byte). For records sent in the clear (hellos, ChangeCipherSpec) the
    fragment length; ``None`` when protected and not decrypted."""
    inner_content_type: int | None = None
    """TLS 1.3 ``TLSInnerPlaintext.type`` after decryption, else ``None``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsHandshakeInfo:
    """Handshake metadata of one connection (a later event supersedes earlier ones).

    Emitted once when the ServerHello is seen, again when the handshake completes
    (``complete=True``), and at ``finish`` if it never completed.
    """

    ts_first: int
    """``ts_first`` of the ClientHello record (of the ServerHello if no ClientHello)."""
    ts_last: int
    """``ts_last`` of the record that produced this event."""
    flow_id: int
    direction: Direction
    stream_offset: int
    """Offset of the ServerHello record in the ``in`` stream."""
    sni: str | None
    alpn_offered: tuple[str, ...]
    alpn: str | None
    """Chosen protocol: from the ServerHello (TLS <= 1.2) or EncryptedExtensions
    (TLS 1.3, visible only when decrypted)."""
    version: str | None
    """"SSLv3", "1.0", "1.1", "1.2" or "1.3" (1.3 from supported_versions)."""
    cipher: str | None
    """IANA cipher-suite name, e.g. ``TLS_AES_256_GCM_SHA384`` (``0x....`` if unknown)."""
    cipher_id: int | None
    resumed: bool
    """TLS 1.3: PSK accepted. TLS <= 1.2: session id echoed, or the server's
    ChangeCipherSpec came without a full handshake (ticket resumption)."""
    hello_retry: bool
    client_random: str | None
    """Hex ClientHello.random (public; the key log's lookup key)."""
    handshake_ns: int | None
    """ClientHello first byte to the later of the two Finished records; for TLS 1.3
    without keys (Finished invisible) to the client's first protected record
    after the ServerHello (its Finished flight)."""
    keys_found: bool
    """The key log held secrets for this connection's client random."""
    complete: bool
    """Both Finished (or the fallback above) were seen."""
    keylog: str | None = None
    """Where this connection's secrets came from: the key log file (as given) or the
    capture's Decryption Secrets Block (``KeyLog.source_of``); None without secrets."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plaintext:
    """Decrypted application data of one record, for the HTTP/WebSocket/FIX parser."""

    ts_first: int
    ts_last: int
    """Both from the record carrying these bytes (a byte is usable only once its
    whole record is authenticated)."""
    flow_id: int
    direction: Direction
    stream_offset: int
    """Offset of ``data[0]`` in this direction's decrypted application-data stream."""
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRecordRun:
    """Many decrypted application-data records of one direction: ``TlsRecord`` rows
    as columns (the batch path; every field as in ``TlsRecord``)."""

    flow_id: int
    direction: Direction
    ts_first: np.ndarray
    ts_last: np.ndarray
    stream_offset: np.ndarray
    version: np.ndarray
    length: np.ndarray
    plaintext_length: np.ndarray
    inner_content_type: int | None
    """23 for TLS 1.3 (every record of a run is application data), None before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaintextRun:
    """``Plaintext`` of consecutive records as one ``Run`` (one piece per record)."""

    flow_id: int
    direction: Direction
    stream_offset: int
    run: Run


VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3"}
