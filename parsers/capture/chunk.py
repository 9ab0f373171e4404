"""The columnar packet index every capture reader produces.

How this works: a reader walks a capture file in bounded chunks (tens of MB) and,
for each chunk, returns one ``PacketChunk``: the raw bytes it read plus parallel
NumPy arrays, one entry per packet, saying where each packet's bytes start in
that buffer and what the record header said. Nothing per packet is a Python
object. Memory is bounded by the chunk size, whatever the file size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..events import Anomaly


@dataclass(slots=True, kw_only=True)
class PacketChunk:
    """One bounded run of packets, in capture-file order (never re-sorted)."""

    data: np.ndarray
    """uint8 buffer holding (at least) every packet's captured bytes."""
    offset: np.ndarray
    """int64: start of each packet's captured bytes in ``data``."""
    caplen: np.ndarray
    """int64: captured length (bytes present in ``data``)."""
    wirelen: np.ndarray
    """int64: original length on the wire (>= caplen when snaplen cut it)."""
    ts_ns: np.ndarray
    """int64: capture time, ns since the Unix epoch (UTC), tsresol/tsoffset applied."""
    linktype: np.ndarray
    """int32: LINKTYPE_* of the packet's interface (pcap: the file header's)."""
    interface: np.ndarray
    """int32: pcapng interface id (0 for classic pcap)."""
    index: np.ndarray
    """int64: packet number in the file (in a capture set: in the set, in stream order),
    0-based, counting every packet record."""
    file_offset: np.ndarray
    """int64: byte offset of the packet's record header in the (decompressed) file."""
    file: np.ndarray | None = None
    """int32: the packet's file in a capture set (its position; ``parsers.capture.capset``);
    None: one file, every packet its 0."""
    file_packet: np.ndarray | None = None
    """int64: the packet's number in its own file (None: ``index``, one file)."""
    secrets: list[tuple[int, bytes]] = field(default_factory=list)
    """pcapng Decryption Secrets Blocks seen in this chunk: (secrets_type, data)."""
    anomalies: list[Anomaly] = field(default_factory=list)
    """Capture-layer problems (flow_id -1): truncated record, caplen > snaplen, ..."""

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def packet(self, i: int) -> bytes:
        """Captured bytes of packet ``i`` (for tests and slow paths only)."""
        start = int(self.offset[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()
