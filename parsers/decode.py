"""Link, IP and transport headers of a whole chunk, in one compiled pass.

How this works: ``decode_chunk`` hands the chunk's byte buffer and per-packet
offsets to a Numba kernel that walks each packet's headers (link -> IPv4/IPv6 ->
TCP/UDP) and writes one entry per packet into parallel NumPy columns
(``DecodedChunk``). Nothing per packet becomes a Python object, so a chunk of a
million packets decodes in a few hundredths of a second.

Hand-written instead of dpkt/scapy because those build a Python object per
header (~100k packets/s at best); dpkt is the oracle in the tests instead.

Addresses are kept as two uint64 words (``hi``, ``lo``) per side. IPv4 addresses
are stored IPv4-mapped (``::ffff:a.b.c.d``), so one key shape serves both.

Per-packet problems are codes in ``status`` (see ``STATUS``); the pipeline turns
the non-zero ones into ``anomalies`` rows. Non-IP frames (ARP, LLDP...) are not
anomalies: they get ``proto == 0`` and status ``NOT_IP``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capture.chunk import PacketChunk
from .jitload import kernel
from .prefetch import prefetch

PREFETCH_AHEAD = 16
"""The decode kernel asks for packet ``i + PREFETCH_AHEAD``'s headers while it decodes
packet ``i`` (``parsers.prefetch``)."""

# --- LINKTYPE_* values (tcpdump.org/linktypes.html) --------------------------
LINKTYPE_NULL = 0  # BSD loopback, 4-byte AF_ value in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OLD = 12  # DLT_RAW on some BSDs
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108  # OpenBSD loopback: AF_ value in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_C_HDLC = 104  # Cisco HDLC: address, control, 2-byte protocol (an EtherType)
LINKTYPE_NFLOG = 239  # Linux netfilter log: 4-byte header, then TLVs; TLV 9 is the packet
NFULA_PAYLOAD = 9

# --- EtherTypes ----------------------------------------------------------------
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_QINQ_OLD = 0x9100
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_PBB = 0x88E7  # 802.1ah provider backbone bridge: I-TAG, then a customer frame
ETH_MIN_TYPE = 0x0600  # below this the field is an 802.3 length (LLC follows)
MAX_VLAN_TAGS = 4  # deeper stacks than QinQ-in-QinQ are treated as garbage
MAX_MPLS_LABELS = 8
MAX_ENCAPS = 4  # nested PBB / MPLS-over-Ethernet encapsulations walked

# --- IP protocol numbers and IPv6 extension headers (RFC 8200 §4) ------------
IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_AH = 51
IPPROTO_DSTOPTS = 60
MAX_IPV6_EXT_HEADERS = 8  # bound on the extension-header walk

# --- status codes (stable; names become anomalies.code) ----------------------
OK = 0
NOT_IP = 1
UNSUPPORTED_LINKTYPE = 2
TRUNCATED_LINK = 3
TRUNCATED_IP = 4
BAD_IP_HEADER = 5
IP_FRAGMENT = 6
TRUNCATED_TRANSPORT = 7
BAD_TCP_OFFSET = 8
IP_LENGTH_PAST_WIRE = 9
IPV6_EXT_LIMIT = 10
BAD_IP_VERSION = 11
STATUS: dict[int, str] = {
    OK: "ok",
    NOT_IP: "not_ip",
    UNSUPPORTED_LINKTYPE: "unsupported_linktype",
    TRUNCATED_LINK: "truncated_link_header",
    TRUNCATED_IP: "truncated_ip_header",
    BAD_IP_HEADER: "bad_ip_header",
    IP_FRAGMENT: "ip_fragment",
    TRUNCATED_TRANSPORT: "truncated_transport_header",
    BAD_TCP_OFFSET: "bad_tcp_data_offset",
    IP_LENGTH_PAST_WIRE: "ip_length_past_wire_length",
    IPV6_EXT_LIMIT: "ipv6_extension_header_limit",
    BAD_IP_VERSION: "unsupported_ip_version",
}
STATUS_LAYER: dict[int, str] = {
    s: "link" if s in (UNSUPPORTED_LINKTYPE, TRUNCATED_LINK)
    else "tcp" if s in (TRUNCATED_TRANSPORT, BAD_TCP_OFFSET) else "ip"
    for s in STATUS if s not in (OK, NOT_IP)
}
"""``anomalies.layer`` of each problem status."""

# --- TCP header (RFC 9293 §3.1): field offsets in wire order -----------------
TCP_SRC_PORT = 0  # Source Port (16)
TCP_DST_PORT = 2  # Destination Port (16)
TCP_SEQ = 4  # Sequence Number (32)
TCP_ACK = 8  # Acknowledgment Number (32)
TCP_DATA_OFFSET = 12  # Data Offset (4, in 32-bit words), Reserved (3), NS (1, RFC 3540)
TCP_FLAGS = 13  # CWR ECE URG ACK PSH RST SYN FIN
TCP_WINDOW = 14  # Window (16)
TCP_CHECKSUM = 16  # Checksum (16)
TCP_URGENT_POINTER = 18  # Urgent Pointer (16)
TCP_MIN_HEADER = 20  # then Options, to Data Offset * 4

# --- TCP options (RFC 9293 §3.2; IANA "TCP Option Kind Numbers") ------------
TCPOPT_EOL = 0  # End of Option List (one byte)
TCPOPT_NOP = 1  # No-Operation (one byte)
TCPOPT_MSS = 2  # Maximum Segment Size (RFC 9293), length 4
TCPOPT_WSCALE = 3  # Window Scale (RFC 7323), length 3
TCPOPT_SACK_PERMITTED = 4  # SACK Permitted (RFC 2018), length 2
TCPOPT_SACK = 5  # SACK (RFC 2018): 8-byte blocks after kind and length
TCPOPT_TIMESTAMP = 8  # Timestamps (RFC 7323): TSval, TSecr, length 10
TCPOPT_MSS_LEN = 4
TCPOPT_WSCALE_LEN = 3
TCPOPT_TIMESTAMP_LEN = 10
TCPOPT_HEAD = 2  # kind, length
SACK_BLOCK_LEN = 8  # Left Edge, Right Edge (32 each)

# --- UDP header (RFC 768) -------------------------------------------------------
UDP_SRC_PORT = 0
UDP_DST_PORT = 2
UDP_HEADER = 8  # Source Port, Destination Port, Length, Checksum

# TCP flag bits (RFC 9293 §3.1, plus NS from RFC 3540)
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100

IPV4_MAPPED_HI = np.uint64(0)
IPV4_MAPPED_LO_PREFIX = np.uint64(0xFFFF << 32)


@dataclass(slots=True, kw_only=True)
class DecodedChunk:
    """Parallel per-packet header columns of one ``PacketChunk``."""

    status: np.ndarray  # uint8, see STATUS
    ip_version: np.ndarray  # uint8: 0, 4 or 6
    proto: np.ndarray  # uint8 IP protocol (0 when not IP)
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    sport: np.ndarray  # int32 (-1 when no transport)
    dport: np.ndarray  # int32
    vlan: np.ndarray  # int32 outermost 802.1Q VLAN id, -1 when untagged
    ttl: np.ndarray  # int16 IPv4 TTL / IPv6 hop limit
    tcp_flags: np.ndarray  # int32
    seq: np.ndarray  # int64 (uint32 value)
    ack: np.ndarray  # int64 (uint32 value)
    window: np.ndarray  # int32, unscaled as on the wire
    mss: np.ndarray  # int32, -1 when absent
    wscale: np.ndarray  # int16, -1 when absent
    sack_permitted: np.ndarray  # bool
    sack_blocks: np.ndarray  # int8 number of SACK blocks
    tsval: np.ndarray  # int64, -1 when absent
    tsecr: np.ndarray  # int64, -1 when absent
    l3_offset: np.ndarray  # int64 offset in chunk.data of the IP header, -1 if none
    payload_offset: np.ndarray  # int64 offset in chunk.data of the transport payload
    payload_len: np.ndarray  # int64 payload length per the IP header (on the wire)
    payload_caplen: np.ndarray  # int64 payload bytes actually captured (<= payload_len)

    def __len__(self) -> int:
        return int(self.status.shape[0])


@kernel(cache=True, inline="always")
def _u16(d: np.ndarray, i: int) -> np.int64:
    return (np.int64(d[i]) << 8) | np.int64(d[i + 1])


@kernel(cache=True, inline="always")
def _u32(d: np.ndarray, i: int) -> np.int64:
    return (
        (np.int64(d[i]) << 24) | (np.int64(d[i + 1]) << 16) | (np.int64(d[i + 2]) << 8)
        | np.int64(d[i + 3])
    )


@kernel(cache=True, inline="always")
def _u64(d: np.ndarray, i: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(d[i + k])
    return v


@kernel(cache=True, inline="always")
def _by_version(d, p, end, otherwise):
    """An IP header at ``p`` whose family only its version nibble tells."""
    if p >= end:
        return -1, 0, TRUNCATED_LINK
    v = d[p] >> 4
    if v == 4:
        return p, 4, OK
    if v == 6:
        return p, 6, OK
    return -1, 0, otherwise


@kernel(cache=True)
def _ethertype(d, etype, p, end, out_vlan):
    """Continue after an EtherType at ``p``: VLAN tags, MPLS, PBB, LLC/SNAP, then IP.

    One bounded loop (no recursion: Numba compiles it flat): each step peels one
    encapsulation and reads the next EtherType.
    """
    for _ in range(MAX_VLAN_TAGS + MAX_ENCAPS * (MAX_MPLS_LABELS + 2)):
        if etype == ETH_P_IP:
            return p, 4, OK
        if etype == ETH_P_IPV6:
            return p, 6, OK
        if etype == ETH_P_8021Q or etype == ETH_P_8021AD or etype == ETH_P_QINQ_OLD:
            if p + 4 > end:
                return -1, 0, TRUNCATED_LINK
            if out_vlan[0] < 0:
                out_vlan[0] = _u16(d, p) & 0x0FFF
            etype = _u16(d, p + 2)
            p += 4
        elif etype == ETH_P_MPLS_UC or etype == ETH_P_MPLS_MC:
            # RFC 3032: 4-byte label stack entries until the bottom-of-stack bit
            if p + 4 > end:
                return -1, 0, TRUNCATED_LINK
            bottom = (d[p + 2] & 0x01) != 0
            p += 4
            if bottom:
                # the payload's type is not signalled: look at the version nibble;
                # otherwise an Ethernet pseudowire (RFC 4448) without control word
                q, fam, st = _by_version(d, p, end, NOT_IP)
                if st != NOT_IP:
                    return q, fam, st
                if p + 14 > end:
                    return -1, 0, NOT_IP
                etype = _u16(d, p + 12)
                p += 14
        elif etype == ETH_P_PBB:
            # 802.1ah: 4-byte I-TAG, then the customer frame's MACs and EtherType
            if p + 18 > end:
                return -1, 0, TRUNCATED_LINK
            etype = _u16(d, p + 16)
            p += 18
        elif etype < ETH_MIN_TYPE:
            # 802.3 length field: LLC; with SNAP (AA AA 03 + OUI) an EtherType follows
            if p + 8 <= end and d[p] == 0xAA and d[p + 1] == 0xAA and d[p + 2] == 0x03:
                etype = _u16(d, p + 6)
                p += 8
            else:
                return -1, 0, NOT_IP
        else:
            return -1, 0, NOT_IP
    return -1, 0, TRUNCATED_LINK


@kernel(cache=True)
def _ethernet(d, p, end, out_vlan):
    """An Ethernet frame whose EtherType/length field is at ``p``."""
    if p + 2 > end:
        return -1, 0, TRUNCATED_LINK
    return _ethertype(d, _u16(d, p), p + 2, end, out_vlan)


@kernel(cache=True)
def _link_to_l3(d, start, caplen, linktype, out_vlan):
    """Return (l3_offset, ethertype-ish family, status). family: 4, 6 or 0."""
    end = start + caplen
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet(d, start + 12, end, out_vlan)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        if start + 4 > end:
            return -1, 0, TRUNCATED_LINK
        # AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD/OpenBSD), 28 (FreeBSD),
        # 30 (macOS) or 10 (Linux). The value is in the capturing host's byte order
        # for NULL, so accept it either way round.
        be = _u32(d, start)
        le = (np.int64(d[start + 3]) << 24) | (np.int64(d[start + 2]) << 16) | (
            np.int64(d[start + 1]) << 8) | np.int64(d[start])
        fam = be if be < 256 else le
        if fam == 2:
            return start + 4, 4, OK
        if fam == 24 or fam == 28 or fam == 30 or fam == 10:
            return start + 4, 6, OK
        return -1, 0, NOT_IP
    if linktype == LINKTYPE_RAW or linktype == LINKTYPE_RAW_OLD or (
        linktype == LINKTYPE_RAW_OPENBSD or linktype == LINKTYPE_IPV4
        or linktype == LINKTYPE_IPV6
    ):
        return _by_version(d, start, end, BAD_IP_VERSION)
    if linktype == LINKTYPE_C_HDLC:
        if start + 4 > end:
            return -1, 0, TRUNCATED_LINK
        return _ethertype(d, _u16(d, start + 2), start + 4, end, out_vlan)
    if linktype == LINKTYPE_NFLOG:
        # RFC-less but stable: nflog_hdr (family, version, res_id), then TLVs of
        # (length u16, type u16) in host order (little-endian in practice), 4-aligned.
        p = start + 4
        while p + 4 <= end:
            tlen = np.int64(d[p]) | (np.int64(d[p + 1]) << 8)
            ttype = (np.int64(d[p + 2]) | (np.int64(d[p + 3]) << 8)) & 0x7FFF
            if tlen < 4:
                return -1, 0, TRUNCATED_LINK
            if ttype == NFULA_PAYLOAD:
                return _by_version(d, p + 4, end, NOT_IP)
            p += (tlen + 3) & ~3
        return -1, 0, NOT_IP
    if linktype == LINKTYPE_LINUX_SLL or linktype == LINKTYPE_LINUX_SLL2:
        hdr = 16 if linktype == LINKTYPE_LINUX_SLL else 20
        if start + hdr > end:
            return -1, 0, TRUNCATED_LINK
        # the protocol field is an EtherType (RFC-less, see tcpdump.org/linktypes)
        etype = _u16(d, start + 14) if linktype == LINKTYPE_LINUX_SLL else _u16(d, start)
        return _ethertype(d, etype, start + hdr, end, out_vlan)
    return -1, 0, UNSUPPORTED_LINKTYPE


@kernel(cache=True)
def _decode_kernel(
    d, offset, caplen, wirelen, linktype,
    status, ip_version, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, vlan, ttl,
    tcp_flags, seq, ack, window, mss, wscale, sack_perm, sack_blocks, tsval, tsecr,
    l3_offset, payload_offset, payload_len, payload_caplen,
):
    n = offset.shape[0]
    vl = np.empty(1, np.int64)
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            ahead = offset[i + PREFETCH_AHEAD]
            prefetch(d, ahead)
            prefetch(d, ahead + 63)
        start = offset[i]
        cap = caplen[i]
        end = start + cap
        vl[0] = -1
        # defaults
        ip_version[i] = 0
        proto[i] = 0
        src_hi[i] = 0
        src_lo[i] = 0
        dst_hi[i] = 0
        dst_lo[i] = 0
        sport[i] = -1
        dport[i] = -1
        ttl[i] = -1
        tcp_flags[i] = 0
        seq[i] = 0
        ack[i] = 0
        window[i] = 0
        mss[i] = -1
        wscale[i] = -1
        sack_perm[i] = False
        sack_blocks[i] = 0
        tsval[i] = -1
        tsecr[i] = -1
        payload_offset[i] = end
        payload_len[i] = 0
        payload_caplen[i] = 0
        if linktype[i] == LINKTYPE_ETHERNET and cap >= 14 and d[start + 12] == 0x08 and (
                d[start + 13] == 0x00):
            # untagged Ethernet carrying IPv4: nearly every packet of most captures
            l3, fam, st = start + 14, 4, OK
        else:
            l3, fam, st = _link_to_l3(d, start, cap, linktype[i], vl)
        vlan[i] = vl[0]
        l3_offset[i] = l3
        if st != OK:
            status[i] = st
            continue
        # bytes of the IP datagram on the wire (link header excluded)
        wire_l3 = wirelen[i] - (l3 - start)
        if fam == 4:
            if l3 + 20 > end:
                status[i] = TRUNCATED_IP
                continue
            vihl = d[l3]
            if vihl >> 4 != 4:
                status[i] = BAD_IP_VERSION
                continue
            ihl = (vihl & 0x0F) * 4
            if ihl < 20:
                status[i] = BAD_IP_HEADER
                continue
            total = _u16(d, l3 + 2)
            if total == 0:
                # Linux TSO/BIG TCP writes total length 0 for > 64 KiB super-packets.
                total = wire_l3
            if total < ihl:
                status[i] = BAD_IP_HEADER
                continue
            if total > wire_l3:
                status[i] = IP_LENGTH_PAST_WIRE
                total = wire_l3
            ip_version[i] = 4
            ttl[i] = d[l3 + 8]
            p = d[l3 + 9]
            proto[i] = p
            src_lo[i] = IPV4_MAPPED_LO_PREFIX | np.uint64(_u32(d, l3 + 12))
            dst_lo[i] = IPV4_MAPPED_LO_PREFIX | np.uint64(_u32(d, l3 + 16))
            frag = _u16(d, l3 + 6)
            if (frag & 0x2000) != 0 or (frag & 0x1FFF) != 0:
                status[i] = IP_FRAGMENT
                continue
            if l3 + ihl > end:
                status[i] = TRUNCATED_IP
                continue
            t = l3 + ihl
            tlen = total - ihl
        else:
            if l3 + 40 > end:
                status[i] = TRUNCATED_IP
                continue
            if d[l3] >> 4 != 6:
                status[i] = BAD_IP_VERSION
                continue
            ip_version[i] = 6
            ttl[i] = d[l3 + 7]
            plen = _u16(d, l3 + 4)
            src_hi[i] = _u64(d, l3 + 8)
            src_lo[i] = _u64(d, l3 + 16)
            dst_hi[i] = _u64(d, l3 + 24)
            dst_lo[i] = _u64(d, l3 + 32)
            nh = d[l3 + 6]
            t = l3 + 40
            jumbo = -1
            hops = 0
            bad = 0
            while (
                nh == IPPROTO_HOPOPTS or nh == IPPROTO_ROUTING or nh == IPPROTO_FRAGMENT
                or nh == IPPROTO_DSTOPTS or nh == IPPROTO_AH
            ):
                if hops >= MAX_IPV6_EXT_HEADERS:
                    bad = IPV6_EXT_LIMIT
                    break
                if t + 8 > end:
                    bad = TRUNCATED_IP
                    break
                if nh == IPPROTO_FRAGMENT:
                    fo = _u16(d, t + 2)
                    if (fo & 0xFFF8) != 0 or (fo & 1) != 0:
                        bad = IP_FRAGMENT
                        break
                    hl = 8
                elif nh == IPPROTO_AH:
                    hl = (d[t + 1] + 2) * 4
                else:
                    hl = (d[t + 1] + 1) * 8
                if nh == IPPROTO_HOPOPTS and plen == 0:
                    # RFC 2675 Jumbo Payload option (type 0xC2) in hop-by-hop options.
                    q = t + 2
                    while q + 6 <= t + hl and q + 6 <= end:
                        otype = d[q]
                        if otype == 0:
                            q += 1
                            continue
                        if otype == 0xC2:
                            jumbo = _u32(d, q + 2)
                            break
                        q += 2 + d[q + 1]
                nh = d[t]
                t += hl
                hops += 1
            if bad != 0:
                status[i] = bad
                proto[i] = nh
                continue
            proto[i] = nh
            if plen == 0 and jumbo > 0:
                total6 = 40 + jumbo
            elif plen == 0:
                total6 = wire_l3
            else:
                total6 = 40 + plen
            if total6 > wire_l3:
                status[i] = IP_LENGTH_PAST_WIRE
                total6 = wire_l3
            tlen = total6 - (t - l3)
            if t > end:
                status[i] = TRUNCATED_IP
                continue
        p = proto[i]
        if p == IPPROTO_TCP:
            if t + TCP_MIN_HEADER > end or tlen < TCP_MIN_HEADER:
                status[i] = TRUNCATED_TRANSPORT
                continue
            sport[i] = _u16(d, t + TCP_SRC_PORT)
            dport[i] = _u16(d, t + TCP_DST_PORT)
            seq[i] = _u32(d, t + TCP_SEQ)
            ack[i] = _u32(d, t + TCP_ACK)
            doff = (d[t + TCP_DATA_OFFSET] >> 4) * 4
            tcp_flags[i] = ((d[t + TCP_DATA_OFFSET] & 1) << 8) | d[t + TCP_FLAGS]
            window[i] = _u16(d, t + TCP_WINDOW)
            if doff < TCP_MIN_HEADER or doff > tlen:
                status[i] = BAD_TCP_OFFSET
                continue
            # options (RFC 9293 §3.2): walk what was captured
            q = t + TCP_MIN_HEADER
            oend = min(t + doff, end)
            while q < oend:
                kind = d[q]
                if kind == TCPOPT_EOL:
                    break
                if kind == TCPOPT_NOP:
                    q += 1
                    continue
                if q + 1 >= oend:
                    break
                olen = d[q + 1]
                if olen < TCPOPT_HEAD or q + olen > oend:
                    break
                if kind == TCPOPT_MSS and olen == TCPOPT_MSS_LEN:
                    mss[i] = _u16(d, q + TCPOPT_HEAD)
                elif kind == TCPOPT_WSCALE and olen == TCPOPT_WSCALE_LEN:
                    wscale[i] = d[q + TCPOPT_HEAD]
                elif kind == TCPOPT_SACK_PERMITTED:
                    sack_perm[i] = True
                elif kind == TCPOPT_SACK:
                    sack_blocks[i] = (olen - TCPOPT_HEAD) // SACK_BLOCK_LEN
                elif kind == TCPOPT_TIMESTAMP and olen == TCPOPT_TIMESTAMP_LEN:
                    tsval[i] = _u32(d, q + TCPOPT_HEAD)
                    tsecr[i] = _u32(d, q + TCPOPT_HEAD + 4)
                q += olen
            if t + doff > end:
                # header cut by snaplen: payload length known, none captured
                payload_offset[i] = end
                payload_len[i] = tlen - doff
                payload_caplen[i] = 0
                status[i] = TRUNCATED_TRANSPORT
                continue
            po = t + doff
            payload_offset[i] = po
            payload_len[i] = tlen - doff
            payload_caplen[i] = max(0, min(tlen - doff, end - po))
        elif p == IPPROTO_UDP:
            if t + UDP_HEADER > end or tlen < UDP_HEADER:
                status[i] = TRUNCATED_TRANSPORT
                continue
            sport[i] = _u16(d, t + UDP_SRC_PORT)
            dport[i] = _u16(d, t + UDP_DST_PORT)
            po = t + UDP_HEADER
            payload_offset[i] = po
            payload_len[i] = tlen - UDP_HEADER
            payload_caplen[i] = max(0, min(tlen - UDP_HEADER, end - po))
        status[i] = OK if status[i] != IP_LENGTH_PAST_WIRE else IP_LENGTH_PAST_WIRE


def decode_chunk(chunk: PacketChunk) -> DecodedChunk:
    """Decode link, IP and TCP/UDP headers of every packet in ``chunk``."""
    n = len(chunk)
    cols = DecodedChunk(
        status=np.zeros(n, np.uint8),
        ip_version=np.empty(n, np.uint8),
        proto=np.empty(n, np.uint8),
        src_hi=np.empty(n, np.uint64),
        src_lo=np.empty(n, np.uint64),
        dst_hi=np.empty(n, np.uint64),
        dst_lo=np.empty(n, np.uint64),
        sport=np.empty(n, np.int32),
        dport=np.empty(n, np.int32),
        vlan=np.empty(n, np.int32),
        ttl=np.empty(n, np.int16),
        tcp_flags=np.empty(n, np.int32),
        seq=np.empty(n, np.int64),
        ack=np.empty(n, np.int64),
        window=np.empty(n, np.int32),
        mss=np.empty(n, np.int32),
        wscale=np.empty(n, np.int16),
        sack_permitted=np.empty(n, np.bool_),
        sack_blocks=np.empty(n, np.int8),
        tsval=np.empty(n, np.int64),
        tsecr=np.empty(n, np.int64),
        l3_offset=np.empty(n, np.int64),
        payload_offset=np.empty(n, np.int64),
        payload_len=np.empty(n, np.int64),
        payload_caplen=np.empty(n, np.int64),
    )
    if n == 0:
        return cols
    _decode_kernel(
        chunk.data, chunk.offset.astype(np.int64, copy=False),
        chunk.caplen.astype(np.int64, copy=False), chunk.wirelen.astype(np.int64, copy=False),
        chunk.linktype.astype(np.int64, copy=False),
        cols.status, cols.ip_version, cols.proto, cols.src_hi, cols.src_lo, cols.dst_hi,
        cols.dst_lo, cols.sport, cols.dport, cols.vlan, cols.ttl, cols.tcp_flags, cols.seq,
        cols.ack, cols.window, cols.mss, cols.wscale, cols.sack_permitted, cols.sack_blocks,
        cols.tsval, cols.tsecr, cols.l3_offset, cols.payload_offset, cols.payload_len,
        cols.payload_caplen,
    )
    return cols


def ip_to_str(hi: int, lo: int) -> str:
    """Text form of an address column pair (IPv4-mapped addresses print as IPv4)."""
    import ipaddress

    hi, lo = int(hi), int(lo)
    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))
