"""NSS key log ("SSLKEYLOGFILE") parsing, keyed by ClientHello.random.

How this works: every useful line is ``LABEL <client_random hex> <secret hex>``.
TLS 1.2 and older log one ``CLIENT_RANDOM`` line carrying the 48-byte master
secret; TLS 1.3 logs one line per traffic secret (RFC 8446 §7.1 names). A
connection finds its secrets by the 32-byte ``random`` of its ClientHello, so
several files (or pcapng Decryption Secrets Blocks, whose payload is the same
text) merge into one table. Comments, blank lines and garbage are counted in
``bad_lines`` (comments in ``comment_lines``) and never fatal.

Secrets live only in this object: nothing here formats them into strings,
and ``repr`` shows counts only.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from os import PathLike
from typing import BinaryIO

from ..errors import ConfigError

# -- NSS key log labels (https://firefox-source-docs.mozilla.org/security/nss/legacy/key_log_format/)
CLIENT_RANDOM = "CLIENT_RANDOM"  # TLS <= 1.2: 48-byte master secret
CLIENT_EARLY_TRAFFIC_SECRET = "CLIENT_EARLY_TRAFFIC_SECRET"
CLIENT_HANDSHAKE_TRAFFIC_SECRET = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE_TRAFFIC_SECRET = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_SECRET_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_SECRET_0 = "SERVER_TRAFFIC_SECRET_0"
EXPORTER_SECRET = "EXPORTER_SECRET"
EARLY_EXPORTER_SECRET = "EARLY_EXPORTER_SECRET"

LABELS = frozenset(
    {
        CLIENT_RANDOM,
        CLIENT_EARLY_TRAFFIC_SECRET,
        CLIENT_HANDSHAKE_TRAFFIC_SECRET,
        SERVER_HANDSHAKE_TRAFFIC_SECRET,
        CLIENT_TRAFFIC_SECRET_0,
        SERVER_TRAFFIC_SECRET_0,
        EXPORTER_SECRET,
        EARLY_EXPORTER_SECRET,
    }
)

PCAPNG_DSB_TLS_KEY_LOG = 0x544C534B
"""pcapng Decryption Secrets Block ``secrets_type`` for an NSS key log ("TLSK")."""

CLIENT_RANDOM_LENGTH = 32
"""RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2: ``opaque random[32]``."""

MAX_SECRET_LENGTH = 64
"""Longest secret any suite uses (SHA-512 would be 64; SHA-384 is 48)."""

MAX_LINE_LENGTH = 1024
"""Longer lines are garbage by construction (label + 64 + 128 hex digits + spaces)."""

MAX_FILE_BYTES = 1 << 30
"""A key log file larger than this (1 GiB, ~5 million TLS 1.3 sessions) is refused:
bounds the read of a wrong path (``/dev/zero``, a capture passed as ``--keylog``)."""

READ_BLOCK = 1 << 20  # key log bytes read at a time; lines are cut out of each block


class KeyLog:
    """Secrets from NSS key log text, looked up by client random."""

    __slots__ = ("_origin", "_secrets", "_source", "bad_lines", "comment_lines", "lines",
                 "search_cache", "sources")

    def __init__(self) -> None:
        self._secrets: dict[bytes, dict[str, bytes]] = {}
        self._origin: dict[bytes, int] = {}
        """client random -> index in ``sources`` of the last source that logged it."""
        self._source: int | None = None  # index of the source being read
        self.lines = 0
        """Key lines accepted (also tells a cache built from them that it is stale)."""
        self.bad_lines = 0
        """Lines neither a comment, blank, nor a well-formed key line."""
        self.comment_lines = 0
        self.sources: list[str] = []
        """Where the lines came from: file names, ``pcapng DSB`` (for messages)."""
        self.search_cache: object | None = None
        """Keys derived from these secrets by the TLS 1.3 key search (``keysearch``),
        kept here so that every connection of an ingest shares them."""

    # -- construction ---------------------------------------------------------
    @classmethod
    def from_text(cls, text: str | bytes) -> KeyLog:
        """Parse key log text (``str`` or ``bytes``, e.g. a pcapng DSB payload)."""
        log = cls()
        log.add_text(text)
        return log

    @classmethod
    def from_files(cls, paths: Iterable[str | PathLike[str]]) -> KeyLog:
        """Read and merge key log files (the only I/O in this package).

        Raises ``ConfigError`` (code ``keylog_unreadable``) if a file cannot be read.
        """
        log = cls()
        for path in paths:
            log.sources.append(str(path))
            log._source = len(log.sources) - 1
            try:
                with open(path, "rb") as fh:
                    log._read_stream(fh, path)
            except OSError as err:
                raise ConfigError(
                    f"cannot read key log file {path}: {err.strerror}", code="keylog_unreadable"
                ) from err
        log._source = None
        return log

    def _read_stream(self, fh: BinaryIO, path: str | PathLike[str]) -> None:
        """Parse a file block by block: memory is one block plus one line, whatever it holds."""
        tail = b""
        total = 0
        while block := fh.read(READ_BLOCK):
            total += len(block)
            if total > MAX_FILE_BYTES:
                raise ConfigError(
                    f"key log file {path} is larger than {MAX_FILE_BYTES >> 20} MiB: "
                    "is it really a key log?", code="keylog_too_large",
                )  # fmt: skip
            lines = (tail + block).splitlines(keepends=True)
            tail = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
            if len(tail) > MAX_LINE_LENGTH:  # a line this long is garbage: keep its start only
                tail = tail[: MAX_LINE_LENGTH + 1]
            for raw in lines:
                self._add_line(raw.strip())
        if tail:
            self._add_line(tail.strip())

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> KeyLog:
        """Read one key log file; see ``from_files``."""
        return cls.from_files([path])

    def add_text(self, text: str | bytes, source: str | None = None) -> None:
        """Merge more key log text; later lines win for the same (label, random).

        ``source`` names where it came from (e.g. ``pcapng DSB``), for messages."""
        if source is not None and source not in self.sources:
            self.sources.append(source)
        self._source = None if source is None else self.sources.index(source)
        if isinstance(text, str):
            text = text.encode("utf-8", "replace")
        for raw in text.splitlines():
            self._add_line(raw.strip())
        self._source = None

    def _add_line(self, line: bytes) -> None:
        if not line:
            return
        if line.startswith(b"#"):
            self.comment_lines += 1
            return
        parts = line.split()
        if len(line) > MAX_LINE_LENGTH or len(parts) != 3:
            self.bad_lines += 1
            return
        label = parts[0].decode("ascii", "replace")
        try:
            random = binascii.unhexlify(parts[1])
            secret = binascii.unhexlify(parts[2])
        except (binascii.Error, ValueError):
            self.bad_lines += 1
            return
        if (
            label not in LABELS
            or len(random) != CLIENT_RANDOM_LENGTH
            or not 0 < len(secret) <= MAX_SECRET_LENGTH
        ):
            self.bad_lines += 1
            return
        self._secrets.setdefault(random, {})[label] = secret
        if self._source is not None:
            self._origin[random] = self._source
        self.lines += 1

    # -- lookup -----------------------------------------------------------------
    def get(self, client_random: bytes, label: str) -> bytes | None:
        """The secret ``label`` logged for ``client_random``, or ``None``."""
        entry = self._secrets.get(bytes(client_random))
        return None if entry is None else entry.get(label)

    def entries(self, label: str) -> list[tuple[bytes, bytes]]:
        """Every ``(client_random, secret)`` logged under ``label``, in log order."""
        return [(r, e[label]) for r, e in self._secrets.items() if label in e]

    def source_of(self, client_random: bytes) -> str | None:
        """Which source (file name as given, or the capture's Decryption Secrets Block)
        logged this client random's secrets (the last one, if several did)."""
        i = self._origin.get(bytes(client_random))
        return None if i is None else self.sources[i]

    def has(self, client_random: bytes) -> bool:
        """Whether any secret was logged for this client random."""
        return bytes(client_random) in self._secrets

    def __len__(self) -> int:
        """Number of distinct client randoms with at least one secret."""
        return len(self._secrets)

    def __repr__(self) -> str:  # never show secrets
        return (
            f"KeyLog(sessions={len(self._secrets)}, lines={self.lines}, bad_lines={self.bad_lines})"
        )
