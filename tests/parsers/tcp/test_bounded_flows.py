"""Memory follows the flows held, not the capture's total (issue 6, "bounded resources").

The flow tracker retires flows (ended a grace period ago, replaced on their
ports, or evicted when the table is full), frees their slots and hash entries,
and the ingest writes their ``flows`` rows in batches. Checked here:

- the hash table's backward-shift deletion on forced collisions (real 63-bit
  hashes practically never collide, so nothing else would reach that code);
- retiring early changes nothing a packet is given (flow id, flags, offsets) nor
  any flow's columns, on tiny connections and on the public corpus;
- an ingest with small caps keeps the application layer's per-flow state small,
  writes one row per flow with the right packet counts, and still gets venues
  from the matcher;
- a million tiny connections ingest in the memory two hundred thousand take.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.paths import PUBLIC, SAMPLES
from helpers.tiny_flows import packets_per_flow, write
from pcapflow.parsers.capture import open_capture
from pcapflow.parsers.decode import decode_chunk
from pcapflow.parsers.tcp import analysis
from pcapflow.parsers.tcp.analysis import (
    C_FREE,
    F_HOME,
    F_SLOT,
    N_FSTATE,
    SLOT_LIVE,
    FlowTracker,
    _rehash,
    _release,
    _table_size,
)
from pcapflow.pipelines import store

import pcapflow

UNBOUNDED = {"room_flows": 1 << 40, "max_flows": 1 << 40, "grace_ns": 1 << 62}


# --- the hash table --------------------------------------------------------------

def _insert(table, fkey_hash, fstate, slot: int, home: int) -> None:
    """What the kernel does for a new flow: linear probing from its home."""
    mask = len(table) - 1
    probe = home & mask
    while table[probe] >= 0:
        probe = (probe + 1) & mask
    table[probe] = slot
    fkey_hash[slot] = probe
    fstate[slot, F_HOME] = home
    fstate[slot, F_SLOT] = SLOT_LIVE


def _findable(table, fkey_hash, fstate, slot: int) -> bool:
    """Probing from the slot's home reaches it before an empty position."""
    mask = len(table) - 1
    probe = int(fstate[slot, F_HOME]) & mask
    for _ in range(len(table) + 1):
        if table[probe] < 0:
            return False
        if table[probe] == slot:
            return fkey_hash[slot] == probe
        probe = (probe + 1) & mask
    return False


@pytest.mark.parametrize("seed", range(20))
def test_deleting_from_colliding_chains_keeps_every_key_findable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    table = np.full(_table_size(n), -1, np.int64)
    top = len(table) - 1
    # few homes, some at the top of the table (and full 63-bit hashes that land
    # there), so chains collide and wrap
    homes = [top - 3, top, 0, 2, 7, 9, (1 << 62) | top, (1 << 40) + 1]
    fkey_hash = np.full(n, -1, np.int64)
    fstate = np.zeros((n, N_FSTATE), np.int64)
    free = np.zeros(n, np.int64)
    counters = np.zeros(3, np.int64)
    for s in range(n):
        _insert(table, fkey_hash, fstate, s, int(rng.choice(homes)))
    live = set(range(n))
    for victim in rng.permutation(n)[: n - 5].tolist():
        _release(np.array([victim], np.int64), table, fkey_hash, fstate, free, counters)
        live.discard(victim)
        assert int((table >= 0).sum()) == len(live)
        assert all(_findable(table, fkey_hash, fstate, s) for s in live)
        if rng.random() < 0.3:  # a new key reuses the hole, as the kernel would
            s = int(free[counters[C_FREE] - 1])
            counters[C_FREE] -= 1
            _insert(table, fkey_hash, fstate, s, int(rng.choice(homes)))
            live.add(s)
    assert all(_findable(table, fkey_hash, fstate, s) for s in live)
    # growing rebuilds the table: every live slot findable in the bigger one
    bigger = np.full(2 * len(table), -1, np.int64)
    _rehash(bigger, fkey_hash, fstate, n)
    assert int((bigger >= 0).sum()) == len(live)
    assert all(_findable(bigger, fkey_hash, fstate, s) for s in live)


# --- the tracker -----------------------------------------------------------------

def _track(path: Path, chunk_bytes: int, **kw: int) -> tuple[dict, dict, int, FlowTracker]:
    """Per-packet output and per-flow columns of a whole capture."""
    tracker = FlowTracker(capacity=1, **kw)
    out: dict[str, list[np.ndarray]] = {"flow_id": [], "flags": [], "stream_offset": [],
                                        "ack_offset": [], "direction": []}
    parts, early, held = [], 0, 0
    with open_capture(str(path), chunk_bytes=chunk_bytes) as cap:
        for chunk in cap:
            pf = tracker.process(decode_chunk(chunk), chunk.ts_ns, chunk.wirelen, chunk.index)
            held = max(held, tracker.n_held)
            for k in out:
                out[k].append(getattr(pf, k))
            cols = tracker.take_retired()
            if cols is not None:
                early += cols["flow_id"].size
                parts.append(cols)
    last = tracker.finish()
    if last is not None:
        parts.append(last)
    packets = {k: np.concatenate(v) for k, v in out.items()}
    if not parts:  # no flow at all
        parts.append({**tracker._columns(np.zeros(0, np.int64)), "evicted": np.zeros(0, bool)})
    flows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(flows["flow_id"])
    return packets, {k: v[order] for k, v in flows.items()}, early, tracker


def test_retiring_early_changes_no_packet_and_no_flow(tmp_path: Path) -> None:
    """Tiny connections have no late packets: retiring each as soon as the table
    needs room (a 256-slot table) gives exactly what an unbounded table gives."""
    cap = tmp_path / "tiny.pcap"
    n = 3000
    write(cap, n)
    ref_pk, ref_fl, ref_early, _ = _track(cap, 1 << 30, **UNBOUNDED)
    pk, fl, early, tracker = _track(cap, 20_000, room_flows=64, max_flows=256)
    assert ref_early == 0 and early > n // 2  # most were retired while the capture went on
    assert tracker.capacity <= 256 and tracker.n_flows == n
    for k in ref_pk:
        assert np.array_equal(pk[k], ref_pk[k]), k
    assert np.array_equal(fl["flow_id"], np.arange(n))
    for k in ref_fl:
        if k != "evicted":
            assert np.array_equal(fl[k], ref_fl[k]), k
    assert not fl["evicted"].any()
    out, back = packets_per_flow(np.arange(n))
    assert np.array_equal(fl["packets_out"], out) and np.array_equal(fl["packets_in"], back)


def test_open_flows_past_the_cap_are_evicted_oldest_first(tmp_path: Path) -> None:
    """Connections that never close fill the table; the least recently active go."""
    cap = tmp_path / "open.pcap"
    n = 2000
    write(cap, n, close=False)
    _, fl, early, tracker = _track(cap, 10_000, room_flows=16, max_flows=64)
    assert tracker.capacity == 64 and early > 0
    # Each connection is over (idle) long before 64 newer ones start: no packet of
    # an evicted flow comes later, so ids and counts are as without a cap.
    assert np.array_equal(fl["flow_id"], np.arange(n))
    assert fl["evicted"].sum() == early  # every early one was evicted: none had ended
    assert (fl["end"] == analysis.END_NONE).all()
    out, back = packets_per_flow(np.arange(n), close=False)
    assert np.array_equal(fl["packets_out"], out) and np.array_equal(fl["packets_in"], back)


def test_udp_flows_go_before_open_tcp_flows_are_evicted(tmp_path: Path) -> None:
    """UDP has no end: past the room, idle UDP flows are retired like ended TCP ones
    (no eviction, no anomaly); each query/response pair stays one flow."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter

    cap = tmp_path / "dns.pcap"
    n = 400
    with PcapWriter(str(cap), linktype=1) as w:
        for k in range(n):
            port = 30000 + k
            for src, dst, sport, dport, dt in (("10.0.0.9", "192.0.2.53", port, 53, 0),
                                               ("192.0.2.53", "10.0.0.9", 53, port, 300)):
                pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                       / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / b"q")
                pkt.time = 1_700_000_000 + k * 0.001 + dt * 1e-6
                w.write(pkt)
    _, fl, early, tracker = _track(cap, 4096, room_flows=16, max_flows=64)
    assert early > n // 2 and tracker.capacity == 16
    assert np.array_equal(fl["flow_id"], np.arange(n))
    assert (fl["packets_out"] == 1).all() and (fl["packets_in"] == 1).all()
    assert not fl["evicted"].any()


def _public_and_samples() -> list[Path]:
    paths = sorted(SAMPLES.glob("*.pcap*"))
    if PUBLIC.exists():
        paths += [PUBLIC / e["path"] for e in json.loads((PUBLIC / "analysis.json").read_text())]
    return paths


# Late packets of a connection more than 1 s after its RST (tshark keeps them on it).
SHORT_GRACE_DIFFERS = {"base64-decode-5885__input.pcap"}


def test_retired_flows_keep_ids_and_flags_on_real_captures() -> None:
    """Every public capture and sample in 2 kB chunks with a 1 s grace period (flows
    are retired between chunks and their slots reused) against one chunk and no
    retiring, whose flow count and flags test_tcp_analysis checks against tshark."""
    retired, checked = 0, 0
    for path in _public_and_samples():
        ref, ref_fl, _, _ = _track(path, 1 << 30, **UNBOUNDED)
        pk, fl, early, _ = _track(path, 2048, room_flows=1 << 40, max_flows=1 << 40,
                                  grace_ns=1_000_000_000)
        same = all(np.array_equal(pk[k], ref[k]) for k in ref)
        if path.name in SHORT_GRACE_DIFFERS:
            assert not same, path  # a flow retired, then its late packets: a new id
            continue
        assert same, path
        assert np.array_equal(fl["flow_id"], ref_fl["flow_id"]), path
        assert np.array_equal(fl["packets_out"], ref_fl["packets_out"]), path
        retired += early
        checked += 1
    assert checked > 250 and retired > 50


# --- the ingest ------------------------------------------------------------------

def _ingest(cap: Path, data: Path, venues: Path | None, keylog: list[Path],
            chunk_bytes: int) -> None:
    from pcapflow.pipelines.ingest import ingest_capture
    from pcapflow.pipelines.ingest.app_layer import AppLayer

    from pcapflow.venues import make_matcher

    ingest_capture(str(cap), data, app_layer=AppLayer.factory([str(k) for k in keylog]),
                   matcher=make_matcher(venues), chunk_bytes=chunk_bytes)


def test_ingest_with_small_caps_keeps_state_small_and_rows_right(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 connections through a 256-slot table in 100 kB chunks: the
    application layer's per-flow state stays small, every flow gets one row with
    its packet counts, and the matcher's venue (an address rule) is on each."""
    from pcapflow.pipelines.ingest import flow_rows
    from pcapflow.pipelines.ingest.app_layer import AppLayer

    monkeypatch.setattr(analysis, "ROOM_FLOWS", 64)
    monkeypatch.setattr(analysis, "MAX_FLOWS", 256)
    monkeypatch.setattr(flow_rows, "FLOW_BATCH_ROWS", 1000)
    # each batch its own row group (the writer groups small batches: ``store.GROUP_ROWS``),
    # so the row groups below tell how the rows were handed over
    monkeypatch.setattr(store, "GROUP_ROWS", 1)
    held: list[int] = []
    retire = AppLayer.retire

    def spy(self: AppLayer, flow_ids: list[int], staging: object, add: object) -> dict:
        held.append(max(len(self.info), len(self.done), len(self.conns)))
        return retire(self, flow_ids, staging, add)  # type: ignore[arg-type]

    monkeypatch.setattr(AppLayer, "retire", spy)
    cap, venues, data = tmp_path / "tiny.pcap", tmp_path / "venues.toml", tmp_path / "data"
    n = 20_000
    write(cap, n)
    venues.write_text('[[venue]]\nname = "gw1"\naddresses = ["192.0.2.1/32"]\n')
    _ingest(cap, data, venues, [], 100_000)

    assert len(held) > 50 and max(held) < 1000  # not 20,000
    ds = pcapflow.open(data)
    rows = ds.fetchall("SELECT flow_id, packets_out, packets_in, end_reason, server_ip, venue "
                       "FROM flows ORDER BY flow_id")
    k = np.arange(n)
    out, back = packets_per_flow(k)
    assert [r[0] for r in rows] == k.tolist()
    assert [(r[1], r[2]) for r in rows] == list(zip(out.tolist(), back.tolist(), strict=True))
    reset = k % 5 == 4
    assert [r[3] for r in rows] == np.where(reset, "rst", "fin").tolist()
    assert all((r[5] == "gw1") == (r[4] == "192.0.2.1") for r in rows)
    assert sum(r[5] == "gw1" for r in rows) == n // 4
    assert ds.scalar("SELECT flows FROM captures") == n
    assert ds.scalar("SELECT count(*) FROM tcp_rtt") == n  # each data byte, ACKed
    groups = sum(pq.ParquetFile(f).num_row_groups for f in (data / "flows").rglob("*.parquet"))
    assert groups >= 10  # written in batches of about 1000 rows, not at the end


def test_ingest_evicts_open_connections_with_an_anomaly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_FLOWS open connections, the idle ones are retired with a
    ``flow_evicted`` anomaly each (their application-layer state is finished
    early); every connection still gets exactly one row."""
    monkeypatch.setattr(analysis, "ROOM_FLOWS", 16)
    monkeypatch.setattr(analysis, "MAX_FLOWS", 64)
    cap, data = tmp_path / "open.pcap", tmp_path / "data"
    n = 3000
    write(cap, n, close=False)
    _ingest(cap, data, None, [], 20_000)
    ds = pcapflow.open(data)
    evicted = [r[0] for r in ds.fetchall(
        "SELECT flow_id FROM anomalies WHERE code = 'flow_evicted' ORDER BY 1")]
    assert len(evicted) > n // 2 and len(set(evicted)) == len(evicted)
    assert ds.fetchall("SELECT count(*), count(DISTINCT flow_id), sum(packets_out), "
                       "sum(packets_in) FROM flows") == [(n, n, 3 * n, n)]
    assert ds.scalar("SELECT count(*) FROM flows WHERE end_reason <> 'capture_end'") == 0


def test_samples_retired_mid_capture_give_the_same_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples with two connections and a FIX one, in 8 kB chunks, flows
    retired 50 ms after they end and a 2-slot table before early retiring: flows
    (with venues), orders, acks and latency equal a default ingest's (flows with
    messages reach the matcher at the end, the others in batches). A 0 ms grace
    would not do: a connection's last ACK comes after both FINs."""
    caps = [SAMPLES / f"{name}.pcap" for name in (
        "binance_rest_tls13", "binance_wsapi_tls13", "lossy_rest_tls13", "fix44_plain")]
    venues = tmp_path / "venues.toml"
    venues.write_text('[[venue]]\nname = "mockfix"\nsender_comp_id = "PCFTRADER1"\n'
                      'target_comp_id = "MOCKEX"\n')
    keylog = sorted(SAMPLES.glob("*.keylog"))
    for cap in caps:
        _ingest(cap, tmp_path / "ref", venues, keylog, 32 << 20)
    monkeypatch.setattr(analysis, "GRACE_NS", 50_000_000)
    monkeypatch.setattr(analysis, "ROOM_FLOWS", 2)
    held_at_end: list[tuple[int, int]] = []
    finish = FlowTracker.finish

    def spy(self: FlowTracker) -> dict | None:
        held_at_end.append((self.n_held, self.n_flows))
        return finish(self)

    monkeypatch.setattr(FlowTracker, "finish", spy)
    for cap in caps:
        _ingest(cap, tmp_path / "small", venues, keylog, 8192)
    assert any(held < n for held, n in held_at_end)  # some flows went before the end
    queries = {
        "flows": "SELECT * EXCLUDE (capture_id) FROM flows",
        "orders": "SELECT * EXCLUDE (capture_id) FROM orders",
        "acks": "SELECT * EXCLUDE (capture_id) FROM acks",
        "latency": "SELECT * EXCLUDE (capture_id) FROM latency",
    }
    ref, small = pcapflow.open(tmp_path / "ref"), pcapflow.open(tmp_path / "small")
    for name, q in queries.items():
        a, b = ref.fetchall(q + " ORDER BY ALL"), small.fetchall(q + " ORDER BY ALL")
        assert a == b, name
    assert ref.scalar("SELECT count(*) FROM latency") > 0
    assert ref.scalar("SELECT count(DISTINCT venue) FROM flows") == 2  # binance, mockfix


# --- the pathological capture, end to end ----------------------------------------

def _peak_rss_mb(args: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``pcapflow`` in a child; its peak resident set (MB) and wall time (s)."""
    # A child forked from this (large, late in a suite) pytest process starts with its
    # resident set: ru_maxrss would report that. A small Python in between forks the
    # ingest and reports the ingest's own peak.
    runner = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
              "_, s, u = os.wait4(p.pid, 0); print(u.ru_maxrss); "
              "sys.exit(os.waitstatus_to_exitcode(s))")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", runner, sys.executable, "-m", "pcapflow.cli",
                           *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    maxrss_kb = int(proc.stdout.strip().splitlines()[-1])
    return maxrss_kb / 1024, time.perf_counter() - t0  # ru_maxrss is in kB on Linux


@pytest.mark.slow
def test_a_million_tiny_connections_take_the_memory_of_200k(tmp_path: Path) -> None:
    """The acceptance test of issue 6: 1M tiny TCP connections (handshake, one data
    byte, FIN/FIN/ACK or RST) ingest in the peak memory 200k take, give one flows
    row per connection with its packet counts, and no flow is evicted. TCP layer
    only (``--tcp-only``) to keep it under a minute; test_ingest_with_small_caps_*
    covers the application layer's side at a smaller scale."""
    peaks = {}
    for n in (200_000, 1_000_000):
        cap, data = tmp_path / f"tiny{n}.pcap", tmp_path / f"data{n}"
        write(cap, n)
        peaks[n], _secs = _peak_rss_mb(["ingest", "--tcp-only", str(cap), "--data", str(data)],
                                       tmp_path)
        cap.unlink()
        files = sorted((data / "flows").rglob("*.parquet"))
        flows = pq.ParquetDataset(files).read(columns=["flow_id", "packets_out", "packets_in",
                                                       "end_reason"]).sort_by("flow_id")
        k = np.arange(n)
        out, back = packets_per_flow(k)
        assert np.array_equal(flows.column("flow_id").to_numpy(), k)
        assert np.array_equal(flows.column("packets_out").to_numpy(), out)
        assert np.array_equal(flows.column("packets_in").to_numpy(), back)
        assert flows.column("end_reason").to_pylist().count("rst") == n // 5
        assert not list((data / "anomalies").rglob("*.parquet"))  # no flow_evicted
    assert peaks[1_000_000] - peaks[200_000] < 100, peaks
    assert peaks[1_000_000] < 1000, peaks
