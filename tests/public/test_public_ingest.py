"""Every third-party capture ingests through the whole product, with tshark's counts.

The corpus holds the odd ones on purpose: 22-interface pcapng, big-endian, SLL/SLL2,
QinQ, MPLS, IPv6 extension headers, TSO-sized frames, snaplen 96, mid-connection
starts, 2038/2106 timestamps. None may raise; each must report the packet count and
TCP connection count tshark reported (analysis.json), except the decapsulation
limits named in helpers.public_corpus.TCP_KNOWN.
"""

from __future__ import annotations

import json

import pytest
from golden import regen
from helpers.paths import PUBLIC
from helpers.public_corpus import TCP_KNOWN

import pcapflow

ENTRIES = json.loads((PUBLIC / "analysis.json").read_text()) if PUBLIC.exists() else []


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[int, int]]:
    """Capture path -> (packets, TCP connections), read in one query from the corpus
    ingested once per test run (with its key logs and the packets table, which change
    neither count), shared with ``test_golden_public.py``."""
    data = regen.public_dataset(PUBLIC)
    assert len(regen.public_inputs(PUBLIC)[0]) == len(ENTRIES)  # every capture is in it
    with pcapflow.open(data) as ds:
        rows = ds.fetchall(
            "SELECT c.path, c.packets, count(f.flow_id) FILTER (WHERE f.transport = 'tcp') "
            "FROM captures c LEFT JOIN flows f USING (capture_id) GROUP BY ALL")
    return {path: (int(packets), int(tcp)) for path, packets, tcp in rows}


@pytest.mark.skipif(not ENTRIES, reason="public capture corpus not present")
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["path"] for e in ENTRIES])
def test_counts_equal_tshark(counts: dict[str, tuple[int, int]], entry: dict) -> None:
    packets, tcp = counts[str(PUBLIC / entry["path"])]
    assert packets == int(entry["cap"]["packets"])
    known = TCP_KNOWN.get(entry["path"])
    expected = known[1][1] if known and known[1] else entry["tcp_streams"]
    assert tcp == expected
