"""A flow's venue changed by a later file of the set, in a ``flows`` part the resumed
command did not read (``FlowRows._write_old`` with ``OldFlows.partial`` and ``moved``:
the set's ``FlowsIndex`` gave the matcher that flow's row, and the command reads the
rest of its part to write the part again).

The curl HTTP/2 sample: the first file holds one order connection cut after its
handshake (no SNI: its venue comes from what it sent, ``content``) and the last
packets of the connection before (no payload: a row without application-layer data
in the same part, which the index does not keep), the second,
two minutes later (the tracker has let it go: its part is not written again for it),
the sample's later connections to the same server, with SNI: the set's connections to
that address name the venue now (``address``, which ranks above ``content``). Checked:
the flow's row is written again with its new venue and its old part dropped (once,
not twice), the part read for it, and the tables equal one ingest of the two files.
(A first command writes its rows without application-layer data to parts of their
own, so the moved part has none here: the branch that keeps them is not exercised;
a part that mixes both is one an earlier ``_write_old`` wrote.)
"""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

import pcapflow

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAP = SAMPLES / "binance_rest_h2_curl.pcap"
KEYS = [CAP.with_suffix(".keylog")]
CUT_PORT = 35758
"""The sample's busiest order connection (``test_venue_infer``'s ``_busiest_port``)."""
PLAIN_PORT = 35746
"""The connection before it."""


def _files(tmp: Path) -> list[Path]:
    with CAP.open("rb") as fh:
        packets = [(ts, buf) for ts, buf in dpkt.pcap.Reader(fh)]

    def port(buf: bytes) -> tuple[int, int]:
        tcp = dpkt.ethernet.Ethernet(buf).data.data
        return tcp.sport, tcp.dport

    mine = [i for i, (_, b) in enumerate(packets) if CUT_PORT in port(b)]
    # before it, the last packets without payload of the connection before: a flow
    # without application-layer data in the same part (the rows the index does not keep)
    before = [(ts, b) for ts, b in packets[:mine[0]] if PLAIN_PORT in port(b)
              and not dpkt.ethernet.Ethernet(b).data.data.data][-2:]
    first = [*before, *(packets[i] for i in mine[len(mine) * 2 // 5:])]
    end = first[-1][0]
    later = [(ts + 120, b) for ts, b in packets if ts > end and CUT_PORT not in port(b)]
    out = []
    for name, rows in (("cap-20260101120000.pcap", first), ("cap-20260101120200.pcap", later)):
        path = tmp / name
        with path.open("wb") as fh:
            w = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
            for ts, b in rows:
                w.writepkt(b, ts)
        out.append(path)
    return out


def test_a_venue_changed_in_a_part_not_read_is_written_with_its_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.dataset_compare import assert_same_rows
    from pcapflow.pipelines.ingest import flow_rows, resume

    files = _files(tmp_path)
    read: list[list[str]] = []
    real = flow_rows.read_parts_rows
    monkeypatch.setattr(flow_rows, "read_parts_rows",
                        lambda root, cid, names: (read.append(list(names)),
                                                  real(root, cid, names))[1])
    ds = tmp_path / "ds"
    pcapflow.ingest([[files[0]]], keylog=KEYS, data=ds)
    with pcapflow.open(ds) as d:
        assert d.fetchall("SELECT venue, venue_source FROM flows WHERE client_port = ?",
                          [CUT_PORT]) == [("binance", "content")]
    whole = resume.STATS.get("old_flows_whole", 0)
    r = pcapflow.ingest([[files[1]]], keylog=KEYS, data=ds)[0]
    assert r.resumed_from == str(files[0])
    assert resume.STATS.get("old_flows_whole", 0) == whole  # (read with the index)
    assert read, "the moved part's other rows were not read"
    with pcapflow.open(ds) as d:  # (the part's row without application-layer data)
        assert d.fetchall("SELECT count(*) FROM flows WHERE client_port = ?",
                          [PLAIN_PORT]) == [(1,)]
    with pcapflow.open(ds) as d:
        assert d.fetchall("SELECT venue, venue_source FROM flows WHERE client_port = ?",
                          [CUT_PORT]) == [("binance", "address")]
    pcapflow.ingest([[str(f) for f in files]], keylog=KEYS, data=tmp_path / "ref")
    assert_same_rows(tmp_path / "ref", ds)
    # the set's named server addresses (``pipelines.ingest.known``) count its parts as
    # they are after the part was written again
    from collections import Counter

    from pcapflow.pipelines.ingest import known

    kept = next((ds / "_state").glob(f"capture_id=*/{known.KNOWN}"))
    assert known._counts(kept) == Counter(t for p in (ds / "flows").glob("capture_id=*/*.parquet")
                                          for t in known.part_triples(p))
