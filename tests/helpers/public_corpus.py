"""What the tests know about the third-party capture corpus (``paths.PUBLIC``):
the TLS captures with key logs, and the deliberate differences from tshark's
TCP analysis. Empty when the corpus is absent."""

from __future__ import annotations

import json

from helpers.paths import PUBLIC as ROOT

# file -> (frames whose flags differ, (tshark tcp streams, ours)) and why
TCP_KNOWN: dict[str, tuple[int, tuple[int, int] | None, str]] = {
    "linklayer/zeek/erspan.pcap": (26, (5, 0), "GRE/ERSPAN tunnel not decoded"),
    "linklayer/suricata-verify/defrag__bug-6887-defrag-eth-vlan-ipv6-tcp__frag-eth-vlan-ipv6-tcp"
    ".pcap": (0, (1, 0), "IPv6 fragments are anomalies, not reassembled"),
    "http/suricata-verify/base64-decode-5885__input.pcap": (
        6, None, "port reuse after RST with a retransmitted SYN"),
    "linklayer/zeek/ipv6-http-atomic-frag.pcap": (1, None, "ACKed-unseen bookkeeping"),
    "linklayer/zeek/tcp_reassembly.pcap": (1, None, "ACKed-unseen bookkeeping"),
}


def _entries() -> list[dict]:
    if not (ROOT / "analysis.json").exists():
        return []
    data = json.loads((ROOT / "analysis.json").read_text())
    return [e for e in data if e.get("key") and e.get("dec_key")]


TLS_KEYED_ENTRIES = _entries()
"""Corpus entries with a key log that tshark decrypts: ``path``, ``key``, ``dec_key`` =
[records, bytes] of tshark's "Decrypted TLS" tabs, versions and suites."""
