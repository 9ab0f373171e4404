"""Flows and TCP analysis flags, frame by frame, against tshark's tcp.analysis.*.

The oracle is tshark 4.0 (installed by .ci/run). For every capture of the
third-party corpus and every committed sample, each packet's flags must equal
tshark's, and the number of TCP connections must equal tshark's tcp.stream count.

Known, deliberate differences (``helpers.public_corpus.TCP_KNOWN``, each asserted
exactly, so that a change shows):
- GRE/ERSPAN tunnels and IPv6 fragment reassembly are not decoded (anomaly rows
  instead), so those flows are missing.
- Three captures with port reuse after RST or ACKs of unseen data differ on one
  to five frames: Wireshark's port-reuse bookkeeping differs between versions and
  we follow the simpler rule documented in ``parsers/tcp/analysis.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.paths import PUBLIC
from helpers.public_corpus import TCP_KNOWN
from helpers.tshark_util import ANALYSIS_FIELDS, CORPUS_FIELDS, corpus_fields, need_tshark
from pcapflow.parsers.capture import open_capture
from pcapflow.parsers.decode import IPPROTO_TCP, decode_chunk
from pcapflow.parsers.tcp.analysis import EVENT_KINDS, FlowTracker

SAMPLES = Path(__file__).resolve().parents[3] / "sample_pcaps"
BIT = {k: b for b, k in EVENT_KINDS.items()}
ANY_RETRANSMISSION = (BIT["retransmission"] | BIT["fast_retransmission"]
                      | BIT["spurious_retransmission"])

def ours(path: Path) -> tuple[np.ndarray, int]:
    tracker = FlowTracker()
    flags, tcp_flows = [], set()
    with open_capture(str(path)) as cap:
        for chunk in cap:
            dec = decode_chunk(chunk)
            pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
            flags.append(pf.flags)
            tcp_flows.update(pf.flow_id[(dec.proto == IPPROTO_TCP) & (pf.flow_id >= 0)].tolist())
    return (np.concatenate(flags) if flags else np.zeros(0, np.int32)), len(tcp_flows)


# tcp.stream, then ANALYSIS_FIELDS, in tshark's run shared with test_clock_steps
FIRST = CORPUS_FIELDS.index("tcp.stream")
assert CORPUS_FIELDS[FIRST:] == ["tcp.stream", *ANALYSIS_FIELDS.values()]


def compare(path: Path, cache: Path) -> tuple[int, int, int, list[str]]:
    need_tshark()
    flags, n_flows = ours(path)
    rows = corpus_fields(str(path), cache)  # tcp.reassemble_out_of_order:FALSE
    if rows is None:
        raise RuntimeError(f"tshark failed on {path}")
    rows = [r[FIRST:] for r in rows]
    assert len(rows) == len(flags), "packet counts differ"
    streams = {r[0] for r in rows if r and r[0]}
    differing, examples = 0, []
    for i, r in enumerate(rows):
        bad = []
        for k, kind in enumerate(ANALYSIS_FIELDS):
            theirs = 1 + k < len(r) and bool(r[1 + k])
            mask = ANY_RETRANSMISSION if kind == "retransmission" else BIT[kind]
            if theirs != bool(flags[i] & mask):
                bad.append(f"{kind}: tshark {theirs}")
        if bad:
            differing += 1
            examples.append(f"frame {i + 1}: " + ", ".join(bad))
    return differing, len(streams), n_flows, examples


def _public() -> list[str]:
    if not PUBLIC.exists():
        return []
    return [e["path"] for e in json.loads((PUBLIC / "analysis.json").read_text())]


@pytest.mark.parametrize("rel", _public())
def test_public_capture_matches_tshark(rel: str, tshark_cache: Path) -> None:
    differing, theirs, n, examples = compare(PUBLIC / rel, tshark_cache)
    if rel in TCP_KNOWN:
        frames, streams, _why = TCP_KNOWN[rel]
        assert differing == frames, examples[:5]
        if streams is not None:
            assert (theirs, n) == streams
        return
    assert differing == 0, examples[:5]
    assert n == theirs


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.pcap*")))
def test_sample_capture_matches_tshark(name: str, tshark_cache: Path) -> None:
    differing, theirs, n, examples = compare(SAMPLES / name, tshark_cache)
    assert differing == 0, examples[:5]
    assert n == theirs


def test_lossy_sample_has_real_tcp_events() -> None:
    flags, _ = ours(SAMPLES / "lossy_rest_tls13.pcap")
    assert (flags & ANY_RETRANSMISSION).sum() > 0
    assert (flags & BIT["duplicate_ack"]).sum() > 0


def test_per_packet_callees_skip_reference_counting() -> None:
    """The kernels the flow tracker calls for each packet are compiled without Numba's
    reference counting (``_nrt=False``: half the tracker's CPU was increfs and decrefs
    of the arrays passed to them); the tables above are the proof that nothing else
    changed."""
    from pcapflow.parsers.tcp import analysis

    for k in (analysis._analyze, analysis._timestamps, analysis._ts_clock):
        assert k.targetoptions.get("_nrt") is False, k
    assert analysis._kernel.targetoptions.get("_nrt", True) is not False  # (it is the entry)
