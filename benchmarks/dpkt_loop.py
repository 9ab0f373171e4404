"""The dpkt peer: the per-packet Python loop most teams write first.

Reads a pcap/pcapng with dpkt, decodes Ethernet, IPv4/IPv6 and TCP for every
packet, reads the same fields the tshark peer prints (time, addresses, ports,
seq, ack, payload length, flags) and keeps a dict flow table keyed by the
canonical 5-tuple with packets, bytes, first/last time and a highest-sequence
retransmission count per direction. Prints one JSON line (packets, flows,
retransmissions) so the runner can check it saw the whole capture.

Usage: python dpkt_loop.py CAPTURE
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import dpkt


def _reader(f: BinaryIO) -> dpkt.pcap.Reader | dpkt.pcapng.Reader:
    head = f.read(4)
    f.seek(0)
    return dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)


def run(path: str) -> dict[str, int]:
    """Decode every packet of ``path``; returns counts."""
    flows: dict[tuple, list] = {}
    packets = tcp_packets = retrans = 0
    with open(path, "rb") as f:
        for ts, buf in _reader(f):
            packets += 1
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
                continue
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            tcp_packets += 1
            src, dst, sport, dport = ip.src, ip.dst, tcp.sport, tcp.dport
            seq, ack, flags, plen = tcp.seq, tcp.ack, tcp.flags, len(tcp.data)
            fwd = (src, sport) <= (dst, dport)
            key = (src, sport, dst, dport) if fwd else (dst, dport, src, sport)
            st = flows.get(key)
            if st is None:
                # packets, bytes, first_ts, last_ts, highest seq end per direction, last ack
                st = flows[key] = [0, 0, ts, ts, {}, {}]
            st[0] += 1
            st[1] += len(buf)
            st[3] = ts
            d = 0 if fwd else 1
            if plen:
                hi = st[4].get(d)
                end = (seq + plen) & 0xFFFFFFFF
                if hi is not None and (end == hi or ((end - hi) & 0xFFFFFFFF) >= 0x80000000):
                    retrans += 1
                else:
                    st[4][d] = end
            if flags & dpkt.tcp.TH_ACK:
                st[5][d] = ack
    return {"packets": packets, "tcp_packets": tcp_packets, "flows": len(flows),
            "retransmissions": retrans}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
