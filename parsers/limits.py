"""Resource limits of an ingest: every cap that bounds memory, in one place.

How this works: ``Limits`` holds the caps with their defaults; the application
layer hands each value to the parser or buffer it bounds. ``pcapflow ingest
--limit NAME=VALUE`` (repeatable) and ``pcapflow.ingest(limits={...})`` override
them; sizes accept ``K``/``M``/``G`` suffixes (powers of 1024). What happens when
a cap is reached is always an ``anomalies`` row, never an error (README, "Limits").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from .errors import ConfigError
from .tls.search_limits import DEFAULT_CHACHA_RECORDS, DEFAULT_GENERATIONS, DEFAULT_RECORDS

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps per ingest (defaults suit a trading host's captures)."""

    max_open_connections: int = 20_000
    """Connections parsed at once; past it the least recently active is finished
    early (``connection_evicted``)."""
    reassembly_held_bytes: int = 8 << 20
    """Out-of-order bytes held per direction before the hole is declared a gap."""
    reassembly_held_segments: int = 4096
    """Out-of-order segments held per direction before the hole is declared a gap."""
    detect_bytes: int = 4096
    """Bytes per direction looked at before a protocol is called unknown."""
    http_max_body: int = 1 << 20
    """HTTP body bytes kept per message (``body_truncated`` past it)."""
    http_max_header: int = 64 << 10
    """Bytes of one HTTP header section."""
    ws_max_message: int = 16 << 20
    """Wire payload bytes of one WebSocket message (``message_too_long`` past it)."""
    ws_max_inflated: int = 64 << 20
    """Bytes of one WebSocket message after inflating (``inflate_bomb`` past it)."""
    fix_max_message: int = 1 << 20
    """Bytes of one FIX message."""
    max_unacked: int = 1000
    """Unacknowledged segments remembered per direction for ``tcp_rtt``."""
    resume_max_bytes: int = 256 << 20
    """State of the connections a rotation file leaves open, kept with the dataset so
    the next file's ingest resumes them (``pipelines.ingest.resume``); past it the
    least recently active ones are dropped from resume (``resume_dropped``)."""
    resume_pending_s: int = 300
    """Seconds a rotation's command waits for an order's reply or engine leg before
    writing its rows as final (``pipelines.match_carry``); a reply later than that
    makes the next command match the whole set again (exact, slower once)."""
    resume_order_ids_s: int = 86_400
    """Seconds of capture time a rotation's matcher state remembers the ids of the
    set's final orders for later messages naming them (a cancel or amend by exchange
    order id, a FIX report, an engine event: ``pipelines.match_carry``); older ones
    are forgotten, and a later message that could name one gets an
    ``order_ids_forgotten`` anomaly instead of a silent mismatch."""
    resume_order_ids: int = 1_000_000
    """Final orders (and FIX orphan replies) whose ids that state remembers at most;
    past it the oldest are forgotten (``order_ids_forgotten``, as above)."""
    tls13_search_records: int = DEFAULT_RECORDS
    """TLS 1.3 session already open when the capture began: record sequence numbers
    the key search covers per key under AES-GCM (free: it computes the number)."""
    tls13_search_chacha_records: int = DEFAULT_CHACHA_RECORDS
    """... and under ChaCha20-Poly1305 (each number tried costs ~0.6 µs per key)."""
    tls13_search_generations: int = DEFAULT_GENERATIONS
    """... and KeyUpdate generations per key log secret (ChaCha20-Poly1305: at most
    2; past any of the three: ``tls13_secret_not_found``)."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def with_overrides(self, overrides: Mapping[str, int | str]) -> Limits:
        """A copy with ``overrides`` (values: ints or size strings like ``32M``)."""
        known = set(self.names())
        values: dict[str, int] = {}
        for name, value in overrides.items():
            key = name.strip().replace("-", "_")
            if key not in known:
                raise ConfigError(f"unknown limit {name!r}; known: {', '.join(sorted(known))}")
            values[key] = parse_size(value, key)
        return replace(self, **values)

    @classmethod
    def parse(cls, items: list[str]) -> Limits:
        """From ``NAME=VALUE`` strings (the ``--limit`` option)."""
        overrides: dict[str, str] = {}
        for item in items:
            name, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"--limit {item!r}: expected NAME=VALUE, e.g. ws_max_message=32M")
            overrides[name] = value
        return cls().with_overrides(overrides)


def parse_size(value: int | str, name: str) -> int:
    """``value`` as a positive int; strings may carry a K/M/G suffix."""
    if isinstance(value, bool):
        raise ConfigError(f"limit {name}: {value!r} is not a number")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if m is None:
            raise ConfigError(f"limit {name}: {value!r} is not a number (e.g. 4096, 64K, 16M)")
        n = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if n <= 0:
        raise ConfigError(f"limit {name}: must be positive, got {value!r}")
    return n
