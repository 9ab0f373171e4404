"""The server addresses a capture set's named flows went to, kept with the set's resume
state: what ``pcapflow.venues.known_addresses`` reads of a set, in O(its distinct
addresses) instead of O(its parts).

How this works. ``known_addresses`` gives a server address (ip, port) the venue every
named flow (one with an SNI or a Host, and a venue) of the dataset to it agrees on.
Read from the ``flows`` parts themselves, that is a Parquet read per part of every
capture: a rotation's set has one or two parts a file, so each fresh process (a
``pcapflow watch`` worker) read thousands of them (~1.4 ms of CPU a part) and kept a
few hundred bytes a part, and every command listed them all. So each command that
keeps state for its set also stages ``KNOWN`` (``known.arrow``) in it: per distinct
(server ip, server port, venue) of the set's named flows, how many of the set's
``flows`` parts hold it. It is the previous command's, minus the triples of the set's
parts this command's commit drops (its provisional ``part-t*``, a final part written
again: ``store.APPEND``), plus those of the parts it staged: this command's parts are
read, not the set's. The commit swaps it in with the parts it counts, so it is always
the set's parts' as they are. A set whose state has none (written by an earlier
version, or dropped by ``pcapflow match``, which rewrites the set's ``flows``:
``drop``) has its parts counted once by its next command; until then, and for a
capture that keeps no state (one ingest), readers read the parts.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from .. import store

KNOWN = "known.arrow"
"""In a set's state: its named flows' distinct (server ip, port, venue), each with the
number of its ``flows`` parts that hold it (``parts``)."""

Triple = tuple[str, int, str]


def part_triples(path: str | os.PathLike[str]) -> list[Triple]:
    """The distinct (server ip, port, venue) of one ``flows`` part's named flows (an
    SNI or a Host, a venue, a server address): what ``known_addresses`` counts."""
    # (pyarrow, not DuckDB: a new DuckDB connection alone costs ~15 ms of CPU)
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    have = set(f.schema_arrow.names)
    names = [c for c in ("sni", "http_host") if c in have]
    if not names or not {"server_ip", "server_port", "venue"} <= have:
        return []  # (a column missing: null in every row)
    t = f.read(columns=["server_ip", "server_port", "venue", *names])
    named = pc.is_valid(t.column(names[0]))
    for c in names[1:]:
        named = pc.or_(named, pc.is_valid(t.column(c)))
    keep = pc.and_(pc.and_(named, pc.is_valid(t.column("venue"))), pc.and_(
        pc.is_valid(t.column("server_ip")), pc.is_valid(t.column("server_port"))))
    t = t.filter(keep).group_by(["server_ip", "server_port", "venue"]).aggregate([])
    return [(str(ip), int(port), str(venue)) for ip, port, venue in zip(
        t.column("server_ip").to_pylist(), t.column("server_port").to_pylist(),
        t.column("venue").to_pylist(), strict=True)]


def read(path: str | os.PathLike[str]) -> list[Triple]:
    """The triples of a set's ``KNOWN`` held by at least one part."""
    import pyarrow as pa

    with pa.memory_map(os.fspath(path)) as src:
        t = pa.ipc.open_file(src).read_all()
    return [(str(ip), int(port), str(venue)) for ip, port, venue, n in zip(
        t.column("server_ip").to_pylist(), t.column("server_port").to_pylist(),
        t.column("venue").to_pylist(), t.column("parts").to_pylist(), strict=True) if n > 0]


def _counts(path: Path) -> dict[Triple, int]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as src:
        t = pa.ipc.open_file(src).read_all()
    return {(str(ip), int(port), str(venue)): int(n) for ip, port, venue, n in zip(
        t.column("server_ip").to_pylist(), t.column("server_port").to_pylist(),
        t.column("venue").to_pylist(), t.column("parts").to_pylist(), strict=True)}


def stage(stage_dir: Path, root: Path, capture_id: str | None) -> None:
    """Stage ``KNOWN`` in ``stage_dir``'s state (which must be staged): the set's
    (``capture_id``: the set continued, None: a set begun) after this command's
    commit. Call once every part of the command is staged and its commit plan is
    final."""
    counts: dict[Triple, int] = {}
    if capture_id is not None:
        part = store.partition_dir(root, "flows", capture_id)
        plan = json.loads((stage_dir / store.APPEND).read_text())
        drop = set(plan["drop"].get("flows", []))
        was = store.partition_dir(root, store.STATE, capture_id) / KNOWN
        if was.is_file():  # the previous command's, less the parts this commit drops
            counts = _counts(was)
            for name in drop:
                if (part / name).is_file():
                    for k in part_triples(part / name):
                        counts[k] = counts.get(k, 0) - 1
        if not was.is_file() or min(counts.values(), default=0) < 0:
            # (none kept, or not the set's parts: counted once from the parts)
            counts = {}
            try:
                with os.scandir(part) as it:
                    kept = sorted(e.path for e in it if e.name.endswith(".parquet")
                                  and e.name not in drop)
            except FileNotFoundError:
                kept = []
            for path in kept:
                for k in part_triples(path):
                    counts[k] = counts.get(k, 0) + 1
    for staged in sorted((stage_dir / "flows").glob("*.parquet")):
        for k in part_triples(staged):
            counts[k] = counts.get(k, 0) + 1
    write(stage_dir / store.STATE / KNOWN, counts)


def write(out: Path, counts: dict[Triple, int]) -> None:
    """``KNOWN`` of ``counts`` (the triples held by at least one part) at ``out``."""
    import pyarrow as pa

    rows = sorted((k, n) for k, n in counts.items() if n > 0)
    t = pa.table({"server_ip": pa.array([k[0] for k, _ in rows], pa.string()),
                  "server_port": pa.array([k[1] for k, _ in rows], pa.int64()),
                  "venue": pa.array([k[2] for k, _ in rows], pa.string()),
                  "parts": pa.array([n for _, n in rows], pa.int64())})
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, t.schema) as writer:
        writer.write_table(t)


def drop(root: Path, capture_id: str) -> None:
    """The set's ``flows`` are rewritten outside its commands (``pcapflow match``): its
    ``KNOWN`` goes, and its next command counts its parts again."""
    with contextlib.suppress(FileNotFoundError):
        (store.partition_dir(root, store.STATE, capture_id) / KNOWN).unlink()
