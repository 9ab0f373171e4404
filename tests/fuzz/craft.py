"""Hand-built captures for the robustness tests: exact bytes, one defect each.

Headers are packed field by field (RFC 791 IPv4, RFC 9293 TCP, pcap file and
record headers as in draft-ietf-opsawg-pcap), so a test can break exactly one
field (IHL, data offset, caplen, block length) and know what pcapflow must say.
"""

from __future__ import annotations

import struct

PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
ETH_HEADER = b"\x00" * 12 + b"\x08\x00"  # zero MACs, EtherType IPv4
TCP_ACK, TCP_PSH, TCP_SYN = 0x10, 0x08, 0x02


def pcap_header(snaplen: int = 65535, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(data: bytes, ts_us: int, *, caplen: int | None = None,
                wirelen: int | None = None) -> bytes:
    """A record header (ts, incl_len, orig_len) and the data; lengths can lie."""
    cap = len(data) if caplen is None else caplen
    wire = len(data) if wirelen is None else wirelen
    return struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, cap, wire) + data


def ipv4(payload: bytes, *, src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = 6,
         ihl: int = 5, total_length: int | None = None) -> bytes:
    tl = 20 + len(payload) if total_length is None else total_length
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tl, 1, 0x4000, 64, proto, 0,
                      bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return hdr + payload


def tcp(payload: bytes, *, sport: int = 50000, dport: int = 443, seq: int = 1000,
        ack: int = 0, flags: int = TCP_ACK | TCP_PSH, data_offset: int = 5) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      data_offset << 4, flags, 65535, 0, 0)
    return hdr + b"\x00" * max(0, (data_offset - 5) * 4) + payload


def packet(payload: bytes = b"", *, out: bool = True, **kw: int) -> bytes:
    """Ethernet + IPv4 + TCP between 10.0.0.1:50000 (client) and 10.0.0.2:port."""
    src, dst = ("10.0.0.1", "10.0.0.2") if out else ("10.0.0.2", "10.0.0.1")
    sport, dport = (50000, kw.pop("port", 443)) if out else (kw.pop("port", 443), 50000)
    return ETH_HEADER + ipv4(tcp(payload, sport=sport, dport=dport, **kw), src=src, dst=dst)


def pcap(packets: list[bytes], *, start_us: int = 1_700_000_000_000_000) -> bytes:
    """A pcap file of ``packets`` 10 µs apart."""
    return pcap_header() + b"".join(
        pcap_record(p, start_us + 10 * i) for i, p in enumerate(packets))


def handshake(port: int = 443, seq: int = 1000, peer_seq: int = 5000) -> list[bytes]:
    """SYN, SYN/ACK, ACK of one connection (client seq ``seq``, server ``peer_seq``)."""
    return [
        packet(seq=seq - 1, flags=TCP_SYN, port=port),
        packet(out=False, seq=peer_seq - 1, ack=seq, flags=TCP_SYN | TCP_ACK, port=port),
        packet(seq=seq, ack=peer_seq, flags=TCP_ACK, port=port),
    ]


# --- pcapng ------------------------------------------------------------------------
def pcapng_block(btype: int, body: bytes, *, length: int | None = None) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body) if length is None else length
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def pcapng(packets: list[bytes], *, bad_length_at: int | None = None,
           bad_length: int = 7) -> bytes:
    """SHB, one Ethernet IDB, one EPB per packet; EPB ``bad_length_at`` lies."""
    shb = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = pcapng_block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 65535))
    out = shb + idb
    for i, p in enumerate(packets):
        ts = 1_700_000_000_000_000 + 10 * i
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(p), len(p)) + p
        out += pcapng_block(6, body, length=bad_length if i == bad_length_at else None)
    return out
