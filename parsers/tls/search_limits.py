"""How far the TLS 1.3 key search looks (``keysearch``), apart from the search itself:
``parsers.limits`` reads these defaults for every capture, and importing the search
would import its kernels and ``cryptography`` with them."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RECORDS = 1 << 32
"""Record sequence numbers searched per key (AES-GCM): 4.3 billion records, more
than a busy session sends in weeks (RFC 8446 §5.5 asks for a KeyUpdate after
2^24.5 full records under AES-GCM). Costs nothing: the search finds the number."""
DEFAULT_CHACHA_RECORDS = 1 << 8
"""Record sequence numbers tried per key under ChaCha20-Poly1305 (each one costs
about 0.6 µs: a 1,000-session key log, two generations, ~0.3 s per record)."""
DEFAULT_GENERATIONS = 16
"""KeyUpdate generations tried per secret (0 = the logged ``*_TRAFFIC_SECRET_0``)."""


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """How far the search looks (``Limits.tls13_search_*``)."""

    records: int = DEFAULT_RECORDS
    chacha_records: int = DEFAULT_CHACHA_RECORDS
    generations: int = DEFAULT_GENERATIONS
