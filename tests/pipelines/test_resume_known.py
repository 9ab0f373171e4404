"""A capture set's named server addresses kept in its state (``pipelines.ingest.known``):
after every command they are its ``flows`` parts' (counted per part), a command reads
the parts it writes and drops, never the set's others, and ``known_addresses`` reads
the set's ``known.arrow``, not its parts, with the same answer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers.capture_split import split
from pcapflow.pipelines.ingest import known
from pcapflow.pipelines.match import rematch

import pcapflow
from pcapflow import venues
from pcapflow.venues import registry
from pcapflow.why import rederive

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAP = SAMPLES / "binance_rest_h2_curl.pcap"
PART_TRIPLES = known.part_triples


def _parts(ds: Path) -> list[Path]:
    return sorted((ds / "flows").glob("capture_id=*/*.parquet"))


def _recount(ds: Path) -> Counter[known.Triple]:
    out: Counter[known.Triple] = Counter()
    for p in _parts(ds):
        out.update(PART_TRIPLES(p))
    return out


def test_a_sets_known_addresses_are_its_parts_and_a_command_reads_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = pcapflow.ingest([CAP], keylog=[CAP.with_suffix(".keylog")], data=tmp_path / "one")[0]
    files = split(CAP, [r.packets * k // 4 for k in range(1, 4)], tmp_path)
    read: list[Path] = []
    real = known.part_triples
    monkeypatch.setattr(known, "part_triples", lambda p: (read.append(Path(p)), real(p))[1])
    ds = tmp_path / "ds"
    for k, f in enumerate(files):
        before = {p for p in _parts(ds) if not p.name.startswith("part-t")}
        read.clear()
        pcapflow.ingest([f], keylog=[CAP.with_suffix(".keylog")], data=ds)
        kept = list((ds / "_state").glob(f"capture_id=*/{known.KNOWN}"))
        assert len(kept) == 1
        assert known._counts(kept[0]) == _recount(ds)  # the set's parts, as they are
        # of the set's earlier final parts, none the command kept was read
        assert not [p for p in read if p in before and p.exists()], k
        venues._KNOWN.clear()
        read.clear()
        got = venues.known_addresses(ds)
        assert read == []  # the set's summary, not its parts
        by: dict[tuple[str, int], set[str]] = {}
        for ip, port, venue in _recount(ds):
            by.setdefault((ip, port), set()).add(venue)
        assert got == {a: v.pop() for a, v in by.items() if len(v) == 1}
    assert got  # (named addresses: the check is not of empty sets)
    assert sum(1 for _ in _parts(ds)) >= 4

    # ``pcapflow match`` rewrites the set's flows: the summary goes, the parts are read
    rematch(ds, registry(None, ds), rederive(ds))
    assert not list((ds / "_state").glob(f"capture_id=*/{known.KNOWN}"))
    venues._KNOWN.clear()
    read.clear()
    assert venues.known_addresses(ds) == got
    assert read
