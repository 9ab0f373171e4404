"""Handshake messages: reassembly across records and the hello fields we report.

How this works: handshake messages (RFC 8446 §4 / RFC 5246 §7.4:
``msg_type(1) length(3) body``) may span records or share one; a
``HandshakeReassembler`` per direction joins the plaintext (or decrypted)
handshake bytes and yields whole messages. ``parse_client_hello``,
``parse_server_hello`` and ``parse_encrypted_extensions`` read the fields the
``TlsHandshakeInfo`` event needs (SNI, ALPN, versions, cipher, resumption
hints); anything malformed raises ``DecodeError(code="bad_handshake")``, which
the session turns into an anomaly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import DecodeError

# -- RFC 8446 §4 HandshakeType ------------------------------------------------------
CLIENT_HELLO = 1
SERVER_HELLO = 2
NEW_SESSION_TICKET = 4
END_OF_EARLY_DATA = 5
ENCRYPTED_EXTENSIONS = 8
CERTIFICATE = 11
SERVER_HELLO_DONE = 14
FINISHED = 20
KEY_UPDATE = 24

# -- RFC 8446 §4.2 ExtensionType ------------------------------------------------------
EXT_SERVER_NAME = 0  # RFC 6066 §3
EXT_ALPN = 16  # RFC 7301 §3.1
EXT_ENCRYPT_THEN_MAC = 22  # RFC 7366
EXT_EXTENDED_MASTER_SECRET = 23  # RFC 7627
EXT_SESSION_TICKET = 35  # RFC 5077
EXT_PRE_SHARED_KEY = 41
EXT_EARLY_DATA = 42
EXT_SUPPORTED_VERSIONS = 43

HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
"""RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest."""

HANDSHAKE_HEADER = struct.Struct("!BBH")  # msg_type, uint24 length as (hi byte, lo 16 bits)
HANDSHAKE_HEADER_LENGTH = 4

MAX_HANDSHAKE_MESSAGE = 256 * 1024
"""Largest handshake message we buffer. The wire format allows 2^24 - 1, but real
messages (certificate chains included) stay far below this; beyond it the
direction's handshake parsing stops with ``handshake_too_long``."""


class _Reader:
    """Bounds-checked cursor over a handshake body."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("handshake field runs past its message", code="bad_handshake")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    def done(self) -> bool:
        return self.pos >= len(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """RFC 8446 §4.1.2 fields we use (no secrets here: randoms are public)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    extensions: frozenset[int]
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    supported_versions: tuple[int, ...] = ()
    session_ticket: bool = False  # RFC 5077: non-empty ticket offered


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    """RFC 8446 §4.1.3 / RFC 5246 §7.4.1.3 fields we use."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    extensions: frozenset[int]
    selected_version: int | None = None
    alpn: str | None = None
    hello_retry: bool = False

    @property
    def version(self) -> int:
        """Negotiated version: supported_versions when present, else legacy_version."""
        return self.selected_version or self.legacy_version


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    """``Extension extensions<0..2^16-1>`` (absent entirely in old hellos)."""
    if r.done():
        return []
    block = _Reader(r.vector(2))
    out = []
    while not block.done():
        ext_type = block.uint(2)
        out.append((ext_type, block.vector(2)))
    return out


def _alpn_list(data: bytes) -> tuple[str, ...]:
    """RFC 7301: ``ProtocolName protocol_name_list<2..2^16-1>``."""
    r = _Reader(_Reader(data).vector(2))
    names = []
    while not r.done():
        names.append(r.vector(1).decode("ascii", "replace"))
    return tuple(names)


def _server_name(data: bytes) -> str | None:
    """RFC 6066 §3: first ``host_name(0)`` entry of ``ServerNameList``."""
    r = _Reader(_Reader(data).vector(2))
    while not r.done():
        name_type = r.uint(1)
        name = r.vector(2)
        if name_type == 0:
            return name.decode("ascii", "replace")
    return None


def parse_client_hello(body: bytes) -> ClientHello:
    r = _Reader(body)
    legacy_version = r.uint(2)
    random = r.take(32)
    session_id = r.vector(1)
    suites_raw = r.vector(2)
    suites = tuple(
        int.from_bytes(suites_raw[i : i + 2], "big") for i in range(0, len(suites_raw) - 1, 2)
    )
    r.vector(1)  # legacy_compression_methods
    exts = _extensions(r)
    sni = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    ticket = False
    for ext_type, data in exts:
        if ext_type == EXT_SERVER_NAME and data:
            sni = _server_name(data)
        elif ext_type == EXT_ALPN:
            alpn = _alpn_list(data)
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            raw = _Reader(data).vector(1)
            versions = tuple(
                int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw) - 1, 2)
            )
        elif ext_type == EXT_SESSION_TICKET:
            ticket = bool(data)
    return ClientHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suites=suites,
        extensions=frozenset(t for t, _ in exts),
        sni=sni,
        alpn=alpn,
        supported_versions=versions,
        session_ticket=ticket,
    )


def parse_server_hello(body: bytes) -> ServerHello:
    r = _Reader(body)
    legacy_version = r.uint(2)
    random = r.take(32)
    session_id = r.vector(1)
    cipher_suite = r.uint(2)
    r.uint(1)  # legacy_compression_method
    exts = _extensions(r)
    selected = None
    alpn = None
    for ext_type, data in exts:
        if ext_type == EXT_SUPPORTED_VERSIONS and len(data) >= 2:
            selected = int.from_bytes(data[:2], "big")
        elif ext_type == EXT_ALPN:
            names = _alpn_list(data)
            alpn = names[0] if names else None
    return ServerHello(
        legacy_version=legacy_version,
        random=random,
        session_id=session_id,
        cipher_suite=cipher_suite,
        extensions=frozenset(t for t, _ in exts),
        selected_version=selected,
        alpn=alpn,
        hello_retry=random == HELLO_RETRY_REQUEST_RANDOM,
    )


def parse_encrypted_extensions(body: bytes) -> str | None:
    """RFC 8446 §4.3.1: the ALPN protocol the server chose, if any."""
    for ext_type, data in _extensions(_Reader(body)):
        if ext_type == EXT_ALPN:
            names = _alpn_list(data)
            return names[0] if names else None
    return None


PARSED_TYPES = frozenset(
    {CLIENT_HELLO, SERVER_HELLO, ENCRYPTED_EXTENSIONS, SERVER_HELLO_DONE, FINISHED, KEY_UPDATE}
)
"""Messages whose bodies we read; any other body (Certificate chains can exceed
MAX_HANDSHAKE_MESSAGE) is skipped without buffering and yielded empty."""


@dataclass(slots=True)
class HandshakeReassembler:
    """Joins one direction's handshake bytes into ``(msg_type, body)`` messages."""

    buf: bytearray = field(default_factory=bytearray)
    stopped: bool = False
    skip_type: int = -1  # message whose body is being skipped
    skip_left: int = 0  # body bytes of it still to skip

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add handshake-record bytes; raise ``DecodeError`` if a message is too long."""
        if self.stopped:
            return []
        out: list[tuple[int, bytes]] = []
        if self.skip_left:
            n = min(self.skip_left, len(data))
            self.skip_left -= n
            data = data[n:]
            if self.skip_left:
                return out
            out.append((self.skip_type, b""))
        self.buf += data
        buf = self.buf
        pos = 0
        while len(buf) - pos >= HANDSHAKE_HEADER_LENGTH:
            msg_type, hi, lo = HANDSHAKE_HEADER.unpack_from(buf, pos)
            length = hi << 16 | lo
            body = pos + HANDSHAKE_HEADER_LENGTH
            if msg_type not in PARSED_TYPES and len(buf) < body + length:
                self.skip_type, self.skip_left = msg_type, body + length - len(buf)
                pos = len(buf)
                break
            if length > MAX_HANDSHAKE_MESSAGE:
                self.stopped = True
                self.buf.clear()
                raise DecodeError(
                    f"handshake message type {msg_type} of {length} bytes",
                    code="handshake_too_long",
                )
            if len(buf) < body + length:
                break
            out.append((msg_type, bytes(buf[body : body + length])))
            pos = body + length
        del buf[:pos]
        return out

    def reset(self) -> None:
        """Forget a partial message (after a gap or a key change)."""
        self.buf.clear()
        self.skip_left = 0
