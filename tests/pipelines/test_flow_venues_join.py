"""Venues of flows without application-layer data: resolved once per distinct server
address at the end of an ingest and joined on their rows (``FlowRows``), for the
flows of every worker process too; never by matcher calls on empty directories.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers.tiny_flows import write
from pcapflow.pipelines.ingest import ingest_capture
from pcapflow.pipelines.ingest.app_layer import AppLayer
from pcapflow.pipelines.ingest.flow_rows import _with_address_venues
from pcapflow.pipelines.match import ADDRESS_VENUES, MatchOutput, address_venues

import pcapflow
from pcapflow.venues import IngestMatcher, registry


class _Spy(IngestMatcher):
    """The ingest's matcher, logging each call (process, kind, rows) to a file:
    worker processes are forked, so a list in memory would not see theirs."""

    log: Path

    def __call__(self, stage_dir: Path, flows: pa.Table,
                 capture_id: str | None = None) -> MatchOutput:
        with self.log.open("a") as f:
            f.write(f"{os.getpid()} match {flows.num_rows} {capture_id is not None}\n")
        return super().__call__(stage_dir, flows, capture_id)

    def venues(self, addresses: pa.Table) -> pa.Table:
        with self.log.open("a") as f:
            f.write(f"{os.getpid()} venues {addresses.num_rows}\n")
        return super().venues(addresses)


def _spy(tmp_path: Path, venues_toml: str) -> _Spy:
    path = tmp_path / "venues.toml"
    path.write_text(venues_toml)
    spy = _Spy(registry(path))
    spy.log = tmp_path / "calls.log"
    return spy


@pytest.mark.parametrize("workers", [1, 2])
def test_one_lookup_per_distinct_address_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """3,000 tiny connections to 4 server addresses, read back in batches of 500:
    the registry is asked once, in the parent, for 4 addresses; the matcher runs once
    (the final match); every flow to the mapped address has its venue, no other has."""
    from pcapflow.pipelines.ingest import flow_rows

    monkeypatch.setattr(flow_rows, "FLOW_BATCH_ROWS", 500)
    cap, data = tmp_path / "tiny.pcap", tmp_path / "data"
    n = 3000
    write(cap, n)
    spy = _spy(tmp_path, '[[venue]]\nname = "gw1"\naddresses = ["192.0.2.1/32"]\n')
    ingest_capture(str(cap), data, app_layer=AppLayer.factory([]), matcher=spy,
                   chunk_bytes=1 << 16, workers=workers)

    calls = [line.split() for line in spy.log.read_text().splitlines()]
    parent = str(os.getpid())
    assert [c[1:] for c in calls] == [["venues", "4"], ["match", "0", "True"]]
    assert all(c[0] == parent for c in calls)
    ds = pcapflow.open(data)
    rows = ds.fetchall("SELECT server_ip, venue, venue_source, count(*) FROM flows "
                       "GROUP BY ALL ORDER BY ALL")
    assert rows == [("192.0.2.1", "gw1", "map", n // 4), ("192.0.2.2", None, None, n // 4),
                    ("192.0.2.3", None, None, n // 4), ("192.0.2.4", None, None, n // 4)]
    assert ds.scalar("SELECT count(DISTINCT flow_id) FROM flows") == n
    assert not any((data / ".staging").iterdir())  # no side file left behind
    worker_parts = list(data.glob("tcp_events/capture_id=*/part-w*.parquet"))
    assert bool(worker_parts) == (workers > 1)  # the second process did take flows
    assert not list(data.glob("flows/capture_id=*/part-w*.parquet"))  # the parent wrote them


def test_address_venues_resolves_each_address_as_a_flow_with_nothing_else() -> None:
    """A map entry by address and port names only that address and port; an address
    the registry does not know stays NULL, with no source."""
    reg = registry()
    addresses = pa.table({
        "server_ip": ["192.0.2.1", "192.0.2.1", "198.51.100.7"],
        "server_port": pa.array([443, 80, 443], pa.int32()),
        "app_protocol": [None, "unknown", "unknown"],
    })
    from pcapflow.venues import MapEntry, _entry

    entry = _entry("test", {"name": "gw", "addresses": ["192.0.2.0/24"], "ports": [443]})
    assert isinstance(entry, MapEntry)
    reg.entries = [entry]
    out = address_venues(addresses, reg)
    assert out.schema == ADDRESS_VENUES
    assert out.column("venue").to_pylist() == ["gw", None, None]
    assert out.column("venue_source").to_pylist() == ["map", None, None]


def test_the_join_matches_address_port_and_protocol_null_included() -> None:
    """``_with_address_venues``: each row gets its own key's venue, a NULL protocol
    is a key of its own (not the text of any protocol), unknown keys get NULL."""
    venues = pa.table({
        "server_ip": ["10.0.0.1", "10.0.0.1", "10.0.0.2"],
        "server_port": pa.array([443, 443, 80], pa.int32()),
        "app_protocol": [None, "unknown", None],
        "venue": ["a", "b", "c"], "venue_source": ["map", "address", "dataset"],
    }, schema=ADDRESS_VENUES)
    rows = pa.table({
        "flow_id": pa.array(np.arange(5), pa.int64()),
        "server_ip": ["10.0.0.2", "10.0.0.1", "10.0.0.1", "10.0.0.3", "10.0.0.2"],
        "server_port": pa.array([80, 443, 443, 443, 443], pa.int32()),
        "app_protocol": [None, "unknown", None, None, None],
        "venue": pa.nulls(5, pa.string()), "venue_source": pa.nulls(5, pa.string()),
    })
    out = _with_address_venues(rows, venues)
    assert out.column("venue").to_pylist() == ["c", "b", "a", None, None]
    assert out.column("venue_source").to_pylist() == ["dataset", "address", "map", None, None]
    assert out.column("flow_id").to_pylist() == list(range(5))
