"""Link/IP/TCP/UDP header decoding, checked against dpkt and hand-built frames."""

from __future__ import annotations

import ipaddress
import json
import struct

import dpkt
import pytest
from helpers.dpkt_chunk import chunk_of, records
from helpers.paths import PUBLIC, SAMPLES
from pcapflow.parsers import decode as D
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw


def dec1(frame: bytes, linktype: int, wirelen: int | None = None) -> dict[str, object]:
    c = chunk_of([(0, frame)], linktype)
    if wirelen is not None:
        c.wirelen[:] = wirelen
    d = D.decode_chunk(c)
    return {k: getattr(d, k)[0] for k in d.__dataclass_fields__}


TCP_PKT = IP(src="10.0.0.1", dst="10.0.0.2", ttl=7) / TCP(
    sport=40000, dport=443, seq=123456789, ack=987654321, flags="PA", window=501,
    options=[("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""),
             ("Timestamp", (11, 22))],
) / Raw(b"hello world")


@pytest.mark.parametrize("name,frame,linktype", [
    ("ethernet", bytes(Ether() / TCP_PKT), D.LINKTYPE_ETHERNET),
    ("802.1q", bytes(Ether() / Dot1Q(vlan=42) / TCP_PKT), D.LINKTYPE_ETHERNET),
    ("qinq", bytes(Ether() / Dot1AD(vlan=7) / Dot1Q(vlan=42) / TCP_PKT), D.LINKTYPE_ETHERNET),
    ("sll", bytes(CookedLinux(proto=0x0800) / TCP_PKT), D.LINKTYPE_LINUX_SLL),
    ("sll2", struct.pack("!HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\0" * 8) + bytes(TCP_PKT),
     D.LINKTYPE_LINUX_SLL2),
    ("null-le", struct.pack("<I", 2) + bytes(TCP_PKT), D.LINKTYPE_NULL),
    ("null-be", struct.pack(">I", 2) + bytes(TCP_PKT), D.LINKTYPE_NULL),
    ("loop", struct.pack(">I", 2) + bytes(TCP_PKT), D.LINKTYPE_LOOP),
    ("raw", bytes(TCP_PKT), D.LINKTYPE_RAW),
])
def test_tcp_over_every_link_type(name: str, frame: bytes, linktype: int) -> None:
    d = dec1(frame, linktype)
    assert D.STATUS[d["status"]] == "ok", name
    assert d["ip_version"] == 4 and d["proto"] == 6 and d["ttl"] == 7
    assert D.ip_to_str(d["src_hi"], d["src_lo"]) == "10.0.0.1"
    assert D.ip_to_str(d["dst_hi"], d["dst_lo"]) == "10.0.0.2"
    assert (d["sport"], d["dport"], d["seq"], d["ack"]) == (40000, 443, 123456789, 987654321)
    assert d["tcp_flags"] == D.PSH | D.ACK and d["window"] == 501
    assert (d["mss"], d["wscale"], d["sack_permitted"], d["tsval"], d["tsecr"]) == (
        1460, 7, True, 11, 22)
    assert d["payload_len"] == d["payload_caplen"] == 11
    start = d["payload_offset"]
    assert frame[start : start + 11] == b"hello world"
    assert d["vlan"] == {"802.1q": 42, "qinq": 7}.get(name, -1)


def test_ipv4_options_udp_and_ethernet_padding() -> None:
    pkt = Ether() / IP(src="1.2.3.4", dst="5.6.7.8", options=b"\x94\x04\x00\x00") / UDP(
        sport=5000, dport=6000) / Raw(b"ab")
    frame = bytes(pkt) + b"\0" * 10  # trailer padding must not count as payload
    d = dec1(frame, D.LINKTYPE_ETHERNET)
    assert d["status"] == D.OK and d["proto"] == 17
    assert (d["sport"], d["dport"], d["payload_len"]) == (5000, 6000, 2)


def test_ipv6_extension_headers() -> None:
    pkt = (Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
           / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=[]) / IPv6ExtHdrFragment(m=0,
           offset=0) / TCP(sport=1, dport=2, flags="S") / Raw(b"xyz"))
    d = dec1(bytes(pkt), D.LINKTYPE_ETHERNET)
    assert d["status"] == D.OK and d["ip_version"] == 6 and d["proto"] == 6
    assert D.ip_to_str(d["src_hi"], d["src_lo"]) == "2001:db8::1"
    assert d["payload_len"] == 3 and d["tcp_flags"] == D.SYN


@pytest.mark.parametrize("pkt,code", [
    (Ether() / IP(flags="MF") / TCP() / Raw(b"x" * 8), "ip_fragment"),
    (Ether() / IP(frag=10) / Raw(b"x" * 8), "ip_fragment"),
    (Ether() / IPv6() / IPv6ExtHdrFragment(offset=5, m=1) / Raw(b"x" * 8), "ip_fragment"),
])
def test_fragments_are_anomalies(pkt, code: str) -> None:
    assert D.STATUS[dec1(bytes(pkt), D.LINKTYPE_ETHERNET)["status"]] == code


def test_broken_headers() -> None:
    good = bytes(Ether() / IP() / TCP() / Raw(b"payload"))
    # IHL < 5
    bad = bytearray(good)
    bad[14] = 0x43
    assert D.STATUS[dec1(bytes(bad), 1)["status"]] == "bad_ip_header"
    # TCP data offset < 5
    bad = bytearray(good)
    bad[14 + 20 + 12] = 0x30
    assert D.STATUS[dec1(bytes(bad), 1)["status"]] == "bad_tcp_data_offset"
    # truncated everywhere: never raises, always a status
    for cut in range(len(good)):
        d = dec1(good[:cut], 1, wirelen=len(good))
        assert d["status"] in D.STATUS
    # snaplen cut inside the payload: the payload length is known, the bytes are not
    d = dec1(good[:-3], 1, wirelen=len(good))
    assert d["status"] == D.OK and d["payload_len"] == 7 and d["payload_caplen"] == 4
    # total length beyond the wire length
    bad = bytearray(good)
    bad[16:18] = (2000).to_bytes(2, "big")
    assert D.STATUS[dec1(bytes(bad), 1)["status"]] == "ip_length_past_wire_length"
    # ARP and friends are not IP, and not an anomaly
    assert dec1(bytes(Ether(type=0x0806) / Raw(b"x" * 28)), 1)["status"] == D.NOT_IP
    assert D.STATUS[dec1(b"\x01\x02", 1)["status"]] == "truncated_link_header"
    assert D.STATUS[dec1(b"\x00" * 40, 147)["status"]] == "unsupported_linktype"


def _dpkt_ip(buf: bytes, linktype: int):
    if linktype == 1:
        eth = dpkt.ethernet.Ethernet(buf)
        return eth.data
    if linktype == 113:
        return dpkt.sll.SLL(buf).data
    if linktype == 276:
        return dpkt.sll2.SLL2(buf).data
    if linktype in (0, 108):
        return dpkt.loopback.Loopback(buf).data
    if linktype in (12, 14, 101):
        return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    return None


def _public_files(linktypes: set[str]) -> list[str]:
    if not PUBLIC.exists():
        return []
    entries = json.loads((PUBLIC / "analysis.json").read_text())
    return [e["path"] for e in entries
            if any(t in (e.get("cap") or {}).get("encap", "") for t in linktypes)]


SAMPLE_FILES = sorted(str(p) for p in SAMPLES.glob("*.pcap*"))


@pytest.mark.parametrize("rel", _public_files({"Ethernet", "Linux cooked", "Raw IP", "NULL"})
                         + SAMPLE_FILES)
def test_every_tcp_header_matches_dpkt(rel: str) -> None:
    path = PUBLIC / rel  # an absolute sample path stays as it is
    try:
        recs, lt = records(str(path))
    except Exception as err:  # dpkt cannot read it: not an oracle for this file
        pytest.skip(f"dpkt cannot read {rel}: {err}")
    if lt not in (0, 1, 12, 14, 101, 108, 113, 276) or not recs:
        pytest.skip(f"link type {lt} not compared")
    d = D.decode_chunk(chunk_of(recs, lt))
    compared = 0
    for i, (_, buf) in enumerate(recs):
        try:
            ip = _dpkt_ip(buf, lt)
        except Exception:
            continue
        if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        if isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset):  # a fragment (`off`: deprecated)
            continue
        if d.status[i] != D.OK:
            continue  # our stricter checks (e.g. lengths) are tested above
        tcp = ip.data
        src = ipaddress.ip_address(ip.src)
        assert D.ip_to_str(d.src_hi[i], d.src_lo[i]) == str(src), i
        assert (d.sport[i], d.dport[i], d.seq[i], d.ack[i]) == (
            tcp.sport, tcp.dport, tcp.seq, tcp.ack), i
        assert d.tcp_flags[i] & 0xFF == tcp.flags, i
        assert d.window[i] == tcp.win, i
        assert d.payload_caplen[i] == len(tcp.data), i
        compared += 1
    if compared == 0 and ((d.status == D.OK) & (d.proto == 6)).any():
        pytest.skip("dpkt decodes no TCP here (e.g. PBB, LLC/SNAP); tshark's check covers it")
