"""TCP timestamps RTT samples (``tcp_rtt`` method ``tsecr``, RFC 7323) against tshark.

tshark decodes every sample capture's TSval/TSecr, sequence numbers and
retransmission analysis; this module computes the samples from those fields
alone, by the rule ``parsers/tcp/analysis._timestamps`` states (one value timed
at a time per side, from the first segment carrying a TSval above every earlier
one of that side, SYNs and retransmissions excepted, to the first segment of the
other side whose TSecr echoes it; an echo of a later value drops the timed one; a
retransmission meanwhile marks it), and the ingest's rows must be the same, row
for row, to the nanosecond.
"""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

import pcapflow

SAMPLES = Path(__file__).resolve().parents[3] / "sample_pcaps"
CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
FIELDS = ("frame.time_epoch", "tcp.stream", "tcp.srcport", "tcp.dstport", "tcp.flags.syn",
          "tcp.flags.ack", "tcp.seq", "tcp.len", "tcp.options.timestamp.tsval",
          "tcp.options.timestamp.tsecr", "tcp.analysis.retransmission",
          "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission")

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def _newer(a: int, b: int) -> bool:
    """a after b in 32-bit timestamp arithmetic (RFC 7323 §5.2)."""
    return 0 < (a - b) % 2**32 < 2**31


def tshark_samples(path: Path, clients: dict[int, int]) -> set[tuple]:
    """(flow, direction, ts_sent, ts_ack, end_offset, retransmitted, piggybacked) per
    sample, from tshark's fields; ``clients``: client port by tcp.stream."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "separator=|",
         *[x for f in FIELDS for x in ("-e", f)]],
        capture_output=True, text=True, check=True).stdout
    highest: dict[tuple[int, int], int] = {}
    timed: dict[tuple[int, int], list] = {}  # [value, ts, end, data, retransmitted]
    got = set()
    for line in out.splitlines():
        t, stream, sport, dport, syn, ack, seq, ln, tsval, tsecr, r1, r2, r3 = line.split("|")
        if not tsval or int(stream) not in clients:
            continue
        flow, length = int(stream), int(ln)
        ts = int(Decimal(t) * 10**9)
        d = 0 if int(sport) == clients[flow] and int(dport) != clients[flow] else 1
        other = timed.get((flow, 1 - d))
        if ack == "1" and other is not None:
            if int(tsecr) == other[0]:
                got.add((flow, "out" if d == 1 else "in", other[1], ts, other[2], other[4],
                         other[3] and length > 0))
                del timed[(flow, 1 - d)]
            elif _newer(int(tsecr), other[0]):
                del timed[(flow, 1 - d)]
        v = int(tsval)
        new = (flow, d) not in highest or _newer(v, highest[(flow, d)])
        if r1 or r2 or r3:
            if (flow, d) in timed:
                timed[(flow, d)][4] = True
        elif new and (flow, d) not in timed and syn != "1":
            timed[(flow, d)] = [v, ts, int(seq) - 1 + length, length > 0, False]
        if new:
            highest[(flow, d)] = v
    return got


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_tsecr_samples_are_tsharks(samples_dataset: pcapflow.Dataset, capture: Path) -> None:
    ds = samples_dataset
    cid = ds.fetchall("SELECT capture_id FROM captures WHERE path LIKE ?",
                      [f"%{capture.name}"])[0][0]
    clients = dict(ds.fetchall("SELECT flow_id, client_port FROM flows "
                               "WHERE capture_id = ? AND transport = 'tcp'", [cid]))
    rows = ds.fetchall(
        "SELECT flow_id, direction, epoch_ns(ts_sent), epoch_ns(ts_ack), end_offset, "
        "retransmitted, piggybacked, rtt_ns = epoch_ns(ts_ack) - epoch_ns(ts_sent) "
        "FROM tcp_rtt WHERE capture_id = ? AND method = 'tsecr'", [cid])
    assert all(r[-1] for r in rows)
    got = [r[:-1] for r in rows]
    want = tshark_samples(capture, clients)
    assert len(got) == len(set(got))
    assert set(got) == want
    # every sample capture's hosts send timestamps: both directions are timed
    assert {r[1] for r in got} == {"out", "in"}
    # every connection's ack samples are untouched: ``ack`` rows still there
    assert ds.fetchall("SELECT count(*) FROM tcp_rtt WHERE capture_id = ? AND method = 'ack'",
                       [cid])[0][0] > 0


def test_tsecr_samples_of_the_lossy_sample_mark_retransmissions(
        samples_dataset: pcapflow.Dataset) -> None:
    """Through the relay (drops, duplicates, reordering): some samples are marked
    by a retransmission (Karn); none of those is used for an estimate."""
    n, marked = samples_dataset.fetchall(
        "SELECT count(*), count(*) FILTER (retransmitted) FROM tcp_rtt r "
        "JOIN captures c USING (capture_id) "
        "WHERE c.path LIKE '%lossy_rest_tls13.pcap' AND method = 'tsecr'")[0]
    assert n > 100 and marked > 0
