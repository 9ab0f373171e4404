"""Capture files in, ``PacketChunk``s out: pcap (µs/ns), pcapng, gzip/zstd, stdin.

    with open_capture("trading.pcap.zst") as cap:
        for chunk in cap:
            ...  # chunk.ts_ns, chunk.offset, chunk.caplen, ... (NumPy columns)

See ``reader.py`` for how the chunked, compiled scan works.
"""

from ._scan import MAX_BLOCK_LEN, MAX_CAPLEN
from .chunk import PacketChunk
from .reader import DEFAULT_CHUNK_BYTES, CaptureReader, open_capture

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_BLOCK_LEN",
    "MAX_CAPLEN",
    "CaptureReader",
    "PacketChunk",
    "open_capture",
]
