"""Retransmissions inside batch runs: same tables as the per-packet path.

``segments.simple_prefix`` lets a run go on across a copy of bytes the run already
delivered, when the copy is equal byte for byte (the reassembler would drop it
silently). Real captures have such copies every few hundred packets; before, each
one ended the run. Here the sample captures get copies inserted: whole and partial
equal copies, 1-byte keep-alive style copies, copies of bytes from long before (the
run may not hold them) and copies with a byte changed (a ``overlap_conflict``
anomaly, only the per-packet path may report it). Both paths must write the same
tables, and the equal copies must not end runs.
"""

from __future__ import annotations

from pathlib import Path

import dpkt
import pyarrow.parquet as pq
import pytest
from helpers.path_compare import assert_same_tables, ingest_counting_runs, read_tables
from helpers.paths import SAMPLES
from pcapflow.pipelines.ingest import app_layer as connections

CAPTURES = ["binance_wsapi_tls13", "okx_ws_tls12", "fix44_plain"]


def _with_copies(src: Path, dst: Path) -> dict[str, int]:
    """``src`` with copies of earlier TCP data segments inserted; counts by kind."""
    kinds = {"equal": 0, "partial": 0, "one_byte": 0, "old": 0, "changed": 0}
    data_packets: list[tuple[float, bytes]] = []
    with src.open("rb") as f, dst.open("wb") as g:
        reader = dpkt.pcap.Reader(f)
        writer = dpkt.pcap.Writer(g, linktype=reader.datalink(), nano=True)
        for n, (ts, buf) in enumerate(reader):
            writer.writepkt(buf, ts)
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            if not ip.data.data:
                continue
            data_packets.append((ts, buf))
            k = len(data_packets)
            if k % 5 == 0:  # the previous data segment again, whole
                writer.writepkt(data_packets[-2][1], ts)
                kinds["equal"] += 1
            if k % 7 == 0:  # this one, its first half only
                writer.writepkt(_copy(buf, lambda p: p[: max(1, len(p) // 2)]), ts)
                kinds["partial"] += 1
            if k % 11 == 0:  # its last byte (as a keep-alive probe carries)
                writer.writepkt(_copy(buf, lambda p: p[-1:], seq_plus=-1), ts)
                kinds["one_byte"] += 1
            if k % 13 == 0 and k > 40:  # a segment from long before
                writer.writepkt(data_packets[-40][1], ts)
                kinds["old"] += 1
            if k % 17 == 0:  # this one with a byte changed: a conflicting copy
                writer.writepkt(_copy(buf, lambda p: bytes([p[0] ^ 0xFF]) + p[1:]), ts)
                kinds["changed"] += 1
            assert n < 1_000_000
    return kinds


def _copy(buf: bytes, edit, seq_plus: int = 0) -> bytes:  # type: ignore[no-untyped-def]
    eth = dpkt.ethernet.Ethernet(buf)
    ip, tcp = eth.data, eth.data.data
    old = tcp.data
    tcp.data = edit(old)
    if seq_plus < 0:  # the copy starts len(new) bytes before the original's end
        tcp.seq = (tcp.seq + len(old) - len(tcp.data)) & 0xFFFFFFFF
    tcp.sum = 0
    ip.len = len(ip) - len(old) + len(tcp.data)
    ip.sum = 0
    return bytes(eth)


@pytest.mark.parametrize("name", CAPTURES)
def test_runs_cross_equal_copies_and_tables_stay_the_same(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = tmp_path / f"{name}.pcap"
    kinds = _with_copies(SAMPLES / f"{name}.pcap", cap)
    assert all(kinds.values()), kinds
    keys = [SAMPLES / f"{name}.keylog"] if (SAMPLES / f"{name}.keylog").exists() else []
    assert ingest_counting_runs([cap], keys, tmp_path / "slow", False, monkeypatch) == 0
    fast_runs = ingest_counting_runs([cap], keys, tmp_path / "fast", True, monkeypatch)
    assert fast_runs > 0
    assert_same_tables(read_tables(tmp_path / "slow"), read_tables(tmp_path / "fast"))
    # the changed copies were noticed (by the per-packet path, in both ingests)
    anomalies = pq.read_table(tmp_path / "fast" / "anomalies").to_pylist()
    assert sum(a["code"] == "overlap_conflict" for a in anomalies) == kinds["changed"]
    # equal copies do not end runs: only the changed and the far-back ones may
    # equal copies no longer end runs: fewer runs than when every copy ended one
    monkeypatch.setattr(connections, "simple_prefix", _in_order_prefix)
    old_runs = ingest_counting_runs([cap], keys, tmp_path / "old", True, monkeypatch)
    assert_same_tables(read_tables(tmp_path / "slow"), read_tables(tmp_path / "old"))
    assert fast_runs < old_runs


def _in_order_prefix(d, off, plen, cap, flags, start, next0, next1, buf, pos):  # type: ignore[no-untyped-def]
    """The run rule before copies were allowed: in-order data and ACKs only."""
    nxt = [next0, next1]
    i = start
    while i < d.shape[0]:
        if flags[i] & 0x05:  # FIN, RST
            break
        c = int(cap[i])
        if c > 0:
            k = int(d[i])
            if c != plen[i] or off[i] != nxt[k]:
                break
            nxt[k] += c
        i += 1
    return i
