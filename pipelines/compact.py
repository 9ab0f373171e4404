"""Compaction of a dataset's final parts: fewer, larger Parquet files, the same rows.

Why. A rotation ingested file by file (``pcapflow watch``, or one resumed command per
file: ``pipelines.ingest.resume``) adds one final part per file to each table's
partition ``DATA/<table>/capture_id=<id>/``, and DuckDB pays ~0.2-0.4 ms per part per
table a query reads (its footer, its schema, its row groups' statistics): a day of
60-s files added 0.3-0.6 s to every query (``benchmarks/README.md``, session 20).

What. Size-tiered merging, as a log-structured store does: a part's *tier* is
``log_TIER_PARTS`` of its size over ``TIER_BASE_BYTES``; when a partition holds
``TIER_PARTS`` final parts of one tier, they are merged into one part (of the next
tier, about). Each row is then written again once per tier it climbs, O(log) times
over the set's life, and a partition holds at most ~``TIER_PARTS`` parts per tier. A
merge never writes more than ``MAX_MERGE_BYTES``: parts past it stay as they are.
``compact(root, full=True)`` (``pcapflow compact``) merges every partition's final
parts into as few as that allows (a dataset built before this existed).

When. At the end of every resumed command (``pcapflow ingest`` of a set's next file,
and so each file of ``pcapflow watch``), over the set's parts below 256 KB
(``AUTO_MAX_TIER``: a merge's CPU repays itself in queries only for small parts) but
those of that command (which the watch's metrics have not read yet: ``metrics.DatasetMetrics``
follows a set by the parts of the commands it has read); and ``pcapflow compact``.

The rows. A merge streams its inputs row group by row group (bounded memory: one
input row group and one output row group, ``store.GROUP_ROWS``/``GROUP_BYTES``),
in the set's command order (a part's ``part-f<k>-`` number), so the row groups'
statistics stay ranges of time; the same schema and encodings as the ingest's
(``store.dictionary_columns``, ``store.delta_columns``, zstd). A merged part is named
``part-f<last command>-c<first command>-<tag>.parquet``: ``metrics`` reads its
command from it, and resume's provisional parts (``part-t*``) are never merged.
Only ``captures`` (regenerated whole by every command) is left alone.

What resume keeps about parts is kept true by the same commit: the set's
``FlowsIndex`` (the ``flows`` parts and rows of its flows with application-layer
data, and the parts of the ended flows a later packet may rewrite, by name, row
and inode; a part named by ``at`` is merged only into a part of the lowest tier, as
a later command rewrites that part whole) and ``known.arrow`` (how many ``flows``
parts hold each named server address).

Atomic. The merged parts and the state files are staged under
``DATA/.staging/<pid>-<tag>`` and put in place by one journal (``store.commit_moves``:
the inputs to the trash, the merged parts and state files in): a kill at any
moment leaves the dataset as before or, once the journal is written, rolled forward
to after by the next reader or writer. Under the lock the commit checks that its
inputs are the same files (inodes) and that no other process is staging (a
command may be reading the set: compaction waits for another time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store

TIER_PARTS = 8
"""Parts of one tier that are merged into one (the LSM's fan-out)."""
TIER_BASE_BYTES = 32 << 10
"""Parts below ``TIER_BASE_BYTES * TIER_PARTS`` are of the lowest tier (0)."""
MAX_MERGE_BYTES = 256 << 20
"""No merge writes more than this (its inputs' bytes): a larger part costs DuckDB the
same per-part overhead over far more rows, and a merge this size ~5-10 CPU s."""
AUTO_MAX_TIER = 0
"""A resumed command's compaction (``after_ingest``) merges parts of tiers up to this
only, parts below ``TIER_BASE_BYTES * TIER_PARTS`` (256 KB); ``pcapflow compact`` merges
all. Why: a merge re-encodes its rows (~22 ms of CPU per MB of parts), which at
1M-packet rotation files (parts of 0.5-3 MB) cost a resumed command ~0.1 s per tier a
part climbs, 0.2-0.3 s a file over a set's life, 7-10% of an ingest (``benchmarks/
README.md``, "Session 22 (branch `rtt15l`)"), to save DuckDB 0.2-0.4 ms per part per
query: 8 parts of 1 MB repay their merge after ~50 queries, 8 of 10 KB after ~3. Small
parts are where the per-part cost dominates a query (a watch of short files); large
ones cost a query their bytes far more than their count."""
SKIP_TABLES = ("captures",)
"""Tables never compacted (``captures``: written whole by each command of a set)."""

_COMMAND = re.compile(r"part-f(\d+)-(?:c(\d+)-)?")
TAIL = "part-t"
STATS: dict[str, int] = {}
"""Counters of this process (tests): ``merges``, ``parts_in``, ``skipped_busy``..."""


def command_of(name: str) -> tuple[int, int]:
    """(first, last) command of the set that wrote the part ``name``: ``part-f<k>-...``
    (both ``k``), a merged one ``part-f<last>-c<first>-...``, the first command's
    ``part-...`` 0."""
    m = _COMMAND.match(name)
    if m is None:
        return 0, 0
    last = int(m.group(1))
    return (int(m.group(2)) if m.group(2) else last), last


@dataclass(slots=True)
class Part:
    name: str
    size: int
    inode: int
    mtime_ns: int

    @property
    def order(self) -> tuple[int, int, str]:
        first, last = command_of(self.name)
        return first, last, self.name


def tier(size: int) -> int:
    """A part's tier by its bytes (0: below ``TIER_BASE_BYTES * TIER_PARTS``)."""
    if size < TIER_BASE_BYTES:
        return 0
    return int(math.log(size / TIER_BASE_BYTES, TIER_PARTS) + 1e-9)


def final_parts(part_dir: Path) -> list[Part]:
    """A partition's final parts (not resume's provisional ``part-t*``), in command
    order."""
    out: list[Part] = []
    try:
        with os.scandir(part_dir) as it:
            for e in it:
                n = e.name
                if not n.endswith(".parquet") or n.startswith(TAIL):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append(Part(n, st.st_size, st.st_ino, st.st_mtime_ns))
    except FileNotFoundError:
        return []
    return sorted(out, key=lambda p: p.order)


def plan(parts: list[Part], *, full: bool = False, newest: int | None = None,
         low_only: frozenset[str] = frozenset(), max_tier: int | None = None
         ) -> list[list[Part]]:
    """The merges of one partition (groups of parts, each in command order).

    Tiered (default): the parts of a tier that holds ``TIER_PARTS`` or more, merged
    into one (its oldest ones up to ``MAX_MERGE_BYTES``). ``full``: every run of
    parts up to ``MAX_MERGE_BYTES``. ``newest``: parts of this command or later are
    left out; ``low_only``: parts merged only in a merge of tier 0; ``max_tier``
    (tiered only): parts of higher tiers left as they are (``AUTO_MAX_TIER``)."""
    cand = [p for p in parts if newest is None or command_of(p.name)[1] < newest]
    if max_tier is not None and not full:
        cand = [p for p in cand if tier(p.size) <= max_tier]
    groups: list[list[Part]] = []
    if full:  # (the parts ``low_only`` names merged among themselves)
        for some in ([p for p in cand if p.name not in low_only],
                     [p for p in cand if p.name in low_only]):
            run: list[Part] = []
            size = 0
            for p in some:
                if run and size + p.size > MAX_MERGE_BYTES:
                    groups.append(run)
                    run, size = [], 0
                if p.size >= MAX_MERGE_BYTES:
                    continue
                run.append(p)
                size += p.size
            groups.append(run)
        return [g for g in groups if len(g) > 1]
    by_tier: dict[int, list[Part]] = {}
    for p in cand:
        by_tier.setdefault(tier(p.size), []).append(p)
    for t, ps in sorted(by_tier.items()):
        if t > 0:
            ps = [p for p in ps if p.name not in low_only]
        if len(ps) < TIER_PARTS:
            continue
        g: list[Part] = []
        size = 0
        for p in ps:
            if g and size + p.size > MAX_MERGE_BYTES:
                break
            g.append(p)
            size += p.size
        if len(g) > 1:
            groups.append(g)
    return groups


@dataclass(slots=True)
class Change:
    """One partition's parts replaced by a compaction: (name, inode) of each."""

    table: str
    capture_id: str
    removed: list[tuple[str, int]] = field(default_factory=list)
    added: list[tuple[str, int]] = field(default_factory=list)


class Busy(Exception):
    """Another process is staging, or the inputs changed: compaction waits."""


class OtherSchema(Busy):
    """A part of another schema (an older pcapflow's): its capture is left as it is."""


def _merge(inputs: list[Path], out: Path, table: str) -> list[int]:
    """Write the rows of ``inputs`` (in that order) to ``out``, one input row group at
    a time, in row groups of up to ``store.GROUP_ROWS`` rows or ``GROUP_BYTES``
    bytes. Returns each input's row count. Raises ``Busy`` when an input is not of
    the table's schema (a part written by another version: left as it is)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .tables.schemas import TABLES, without_capture_id

    schema = without_capture_id(TABLES[table])
    counts: list[int] = []
    held: list[pa.Table] = []
    rows = size = 0
    with pq.ParquetWriter(out, schema, compression="zstd",
                          use_dictionary=store.dictionary_columns(schema),
                          column_encoding=store.delta_columns(schema)) as w:
        for path in inputs:
            f = pq.ParquetFile(path)
            if not f.schema_arrow.equals(schema, check_metadata=False):
                raise OtherSchema(f"{path}: another schema")
            counts.append(f.metadata.num_rows)
            for g in range(f.num_row_groups):
                t = f.read_row_group(g, use_threads=False)
                held.append(t)
                rows, size = rows + t.num_rows, size + t.nbytes
                if rows >= store.GROUP_ROWS or size >= store.GROUP_BYTES:
                    w.write_table(pa.concat_tables(held), row_group_size=1 << 20)
                    held, rows, size = [], 0, 0
        if held:
            w.write_table(pa.concat_tables(held), row_group_size=1 << 20)
    return counts


def _others_staging(root: Path, mine: str) -> bool:
    """Whether a live process other than this one is staging in ``root`` (this one's
    own leftovers, an ingest's staging its abort could not remove, do not count: its
    commands run one after the other)."""
    sdir = root / store.STAGING
    me = str(os.getpid())
    try:
        with os.scandir(sdir) as it:
            for e in it:
                owner = e.name.split("-", 1)[0]
                if e.name != mine and owner != me and store._owner_alive(owner):
                    return True
    except FileNotFoundError:
        return False
    return False


def _same(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def compact_capture(root: Path, capture_id: str, *, full: bool = False,
                    tables: Iterable[str] | None = None, exclude_newest: bool = False,
                    max_tier: int | None = None) -> list[Change]:
    """Compact one capture's partitions (module docstring); returns what changed
    (nothing when another process is staging or a part changed meanwhile).
    ``max_tier``: see ``plan``."""
    from .tables.schemas import TABLES

    c0 = time.process_time_ns()
    names = [t for t in (TABLES if tables is None else tables) if t not in SKIP_TABLES]
    state = store.partition_dir(root, store.STATE, capture_id)
    index: _Index | None = None
    plans: dict[str, tuple[list[Part], list[list[Part]]]] = {}
    for t in names:
        parts = final_parts(store.partition_dir(root, t, capture_id))
        if len(parts) < 2:
            continue
        newest = max(command_of(p.name)[1] for p in parts) if exclude_newest else None
        groups = plan(parts, full=full, newest=newest, max_tier=max_tier)
        if groups and t == "flows":  # (the index read only when flows parts merge)
            index = _flows_index(root, capture_id)
            if index is not None:
                groups = plan(parts, full=full, newest=newest,
                              low_only=frozenset(index.at_parts), max_tier=max_tier)
        if groups:
            plans[t] = (parts, groups)
    if not plans:
        STATS["cpu_ns"] = STATS.get("cpu_ns", 0) + time.process_time_ns() - c0
        return []
    txn = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    stage = root / store.STAGING / txn
    stage.mkdir(parents=True)
    try:
        return _stage_and_commit(root, capture_id, plans, stage, txn, state, index)
    except OtherSchema:
        STATS["skipped_schema"] = STATS.get("skipped_schema", 0) + 1
        return []
    except Busy:
        STATS["skipped_busy"] = STATS.get("skipped_busy", 0) + 1
        return []
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        STATS["cpu_ns"] = STATS.get("cpu_ns", 0) + time.process_time_ns() - c0


def _stage_and_commit(root: Path, capture_id: str,
                      plans: dict[str, tuple[list[Part], list[list[Part]]]],
                      stage: Path, txn: str, state: Path, index: _Index | None
                      ) -> list[Change]:
    swaps: list[dict[str, str | None]] = []
    trash = root / store.TRASH / txn
    changes: list[Change] = []
    renamed: dict[str, tuple[str, int]] = {}  # flows: input part -> (merged, row offset)
    flows_groups: list[tuple[list[Path], Path]] = []
    inputs_check: list[tuple[Path, int]] = []
    for t, (_parts, groups) in plans.items():
        final = store.partition_dir(root, t, capture_id)
        (stage / t).mkdir()
        ch = Change(t, capture_id)
        for g in groups:
            first, last = command_of(g[0].name)[0], max(command_of(p.name)[1] for p in g)
            name = f"part-f{last}-c{first}-{uuid.uuid4().hex[:8]}.parquet"
            out = stage / t / name
            paths = [final / p.name for p in g]
            counts = _merge(paths, out, t)
            # (the inputs' newest time: a reader of the parts modified since a time,
            # ``watch.file_note``, does not take a merge for a new file's rows)
            newest_mtime = max(p.mtime_ns for p in g)
            os.utime(out, ns=(newest_mtime, newest_mtime))
            with open(out, "rb+") as fh:
                os.fsync(fh.fileno())
            ino = os.stat(out).st_ino  # (the rename into place keeps it)
            off = 0
            for p, n in zip(g, counts, strict=True):
                ch.removed.append((p.name, p.inode))
                inputs_check.append((final / p.name, p.inode))
                swaps.append({"final": str(final / p.name), "staged": None,
                              "trash": str(trash / t / p.name)})
                if t == "flows":
                    renamed[p.name] = (name, off)
                off += n
            ch.added.append((name, ino))
            swaps.append({"final": str(final / name), "staged": str(out),
                          "trash": str(trash / t / name)})
            if t == "flows":
                flows_groups.append((paths, out))
        changes.append(ch)
        STATS["merges"] = STATS.get("merges", 0) + len(groups)
        STATS["parts_in"] = STATS.get("parts_in", 0) + sum(len(g) for g in groups)
        STATS["bytes_in"] = STATS.get("bytes_in", 0) + sum(p.size for g in groups for p in g)
    state_keys: list[tuple[Path, tuple[int, int] | None]] = []
    if flows_groups and state.is_dir():
        sstage = stage / store.STATE
        sstage.mkdir()
        swaps += _stage_flows_state(root, capture_id, state, sstage, trash, index, renamed,
                                    flows_groups, state_keys)

    def still() -> bool:
        if _others_staging(root, txn):
            return False
        if not all(_same(p, ino) for p, ino in inputs_check):
            return False
        return all(_stat_key(p) == k for p, k in state_keys)

    if not store.commit_moves(root, txn, swaps, still):
        raise Busy("another process is staging, or the parts changed")
    return changes


@dataclass(slots=True)
class _Index:
    """The set's ``FlowsIndex`` as read (None: none, or not usable)."""

    index: Any
    at_parts: list[str]


def _flows_index(root: Path, capture_id: str) -> _Index | None:
    from .ingest import resume

    idx = resume.FlowsIndex.load(root, capture_id)
    if idx is None:
        return None
    _tails, finals, inodes = resume._listing(
        store.partition_dir(root, "flows", capture_id), idx.inodes)
    if not idx.usable(finals, inodes):
        return None
    return _Index(idx, sorted(set(idx.at.column(resume._PART).to_pylist())))


def _stage_flows_state(root: Path, capture_id: str, state: Path, sstage: Path, trash: Path,
                       index: _Index | None, renamed: dict[str, tuple[str, int]],
                       groups: list[tuple[list[Path], Path]],
                       keys: list[tuple[Path, tuple[int, int] | None]]
                       ) -> list[dict[str, str | None]]:
    """The set's state files a merge of its ``flows`` parts changes, staged: its
    ``FlowsIndex`` (parts renamed, rows offset; dropped when it was not usable, so
    that it never looks usable again by chance) and ``known.arrow`` (each named server
    address's count of parts)."""
    import numpy as np
    import pyarrow as pa

    from .ingest import known, resume

    swaps: list[dict[str, str | None]] = []
    fdir = state / resume.FLOWS_DIR
    names = (resume.INDEX_APP, resume.INDEX_AT, "meta.json")
    for n in names:
        keys.append((fdir / n, _stat_key(fdir / n)))
    if index is not None:
        idx = index.index
        out = sstage / resume.FLOWS_DIR
        out.mkdir()
        app = idx.app
        if app.num_rows:
            part = np.asarray(app.column(resume._PART).to_pylist(), object)
            row = app.column(resume._ROW).to_numpy().astype(np.int64)
            for i, p in enumerate(part.tolist()):
                hit = renamed.get(p)
                if hit is not None:
                    part[i], row[i] = hit[0], row[i] + hit[1]
            app = app.set_column(app.schema.get_field_index(resume._PART), resume._PART,
                                 pa.array(part.tolist(), pa.string()))
            app = app.set_column(app.schema.get_field_index(resume._ROW), resume._ROW,
                                 pa.array(row, pa.int32()))
        at = idx.at
        if at.num_rows:
            ap = [renamed.get(p, (p, 0))[0] for p in at.column(resume._PART).to_pylist()]
            at = at.set_column(at.schema.get_field_index(resume._PART), resume._PART,
                               pa.array(ap, pa.string()))
        merged = {o.name: o for _, o in groups}
        named = set(app.column(resume._PART).to_pylist()) | set(at.column(resume._PART).to_pylist())
        inodes = {}
        for n in sorted(named):
            inodes[n] = (os.stat(merged[n]).st_ino if n in merged else idx.inodes[n])
        resume._write_ipc(app, out / resume.INDEX_APP)
        resume._write_ipc(at, out / resume.INDEX_AT)
        gone = sum(len(paths) - 1 for paths, _ in groups)
        (out / "meta.json").write_text(json.dumps({
            "version": resume.INDEX_VERSION, "parts": idx.parts - gone, "inodes": inodes}))
        for n in names:
            _fsync(out / n)
            swaps.append({"final": str(fdir / n), "staged": str(out / n),
                          "trash": str(trash / store.STATE / resume.FLOWS_DIR / n)})
    else:
        for n in names:
            if (fdir / n).exists():
                swaps.append({"final": str(fdir / n), "staged": None,
                              "trash": str(trash / store.STATE / resume.FLOWS_DIR / n)})
    kfile = state / known.KNOWN
    keys.append((kfile, _stat_key(kfile)))
    if kfile.is_file():
        counts = known._counts(kfile)
        for paths, _out in groups:
            seen: set[known.Triple] = set()
            for p in paths:
                for k in known.part_triples(p):
                    counts[k] = counts.get(k, 0) - 1
                    seen.add(k)
            for k in seen:
                counts[k] = counts.get(k, 0) + 1
        if min(counts.values(), default=0) < 0:  # not the set's parts: counted again later
            swaps.append({"final": str(kfile), "staged": None,
                          "trash": str(trash / store.STATE / known.KNOWN)})
        else:
            known.write(sstage / known.KNOWN, counts)
            _fsync(sstage / known.KNOWN)
            swaps.append({"final": str(kfile), "staged": str(sstage / known.KNOWN),
                          "trash": str(trash / store.STATE / known.KNOWN)})
    return swaps


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def captures(root: Path) -> list[str]:
    """The ids of the dataset's captures (its ``captures`` partitions)."""
    try:
        with os.scandir(root / "captures") as it:
            return sorted(e.name.split("=", 1)[1] for e in it
                          if e.name.startswith("capture_id=") and e.is_dir())
    except FileNotFoundError:
        return []


def compact(root: Path, capture_ids: Iterable[str] | None = None, *, full: bool = False
            ) -> list[Change]:
    """Compact the dataset's captures (all, or ``capture_ids``); what changed."""
    out: list[Change] = []
    with store.locked(root):
        store.recover(root)
    for cid in (captures(root) if capture_ids is None else capture_ids):
        out += compact_capture(root, cid, full=full)
    return out


def after_ingest(root: Path, capture_id: str) -> list[Change]:
    """A resumed command's compaction of its set (tiered, parts up to ``AUTO_MAX_TIER``;
    its own parts left out: ``metrics`` reads them next). Errors of the disk or of a
    part leave the set as it is (the command's commit stands): compaction tries again
    after the next file."""
    import pyarrow as pa

    try:
        return compact_capture(root, capture_id, exclude_newest=True, max_tier=AUTO_MAX_TIER)
    except (OSError, pa.ArrowException, ValueError) as err:
        STATS["failed"] = STATS.get("failed", 0) + 1
        with contextlib.suppress(Exception):
            import sys

            print(f"pcapflow: compaction of capture {capture_id} skipped: {err}",
                  file=sys.stderr)
        return []


def partition_counts(root: Path, capture_id: str) -> dict[str, int]:
    """Final and provisional parts per table of a capture (benchmarks, ``pcapflow
    compact``'s report)."""
    from .tables.schemas import TABLES

    out = {}
    for t in TABLES:
        try:
            with os.scandir(store.partition_dir(root, t, capture_id)) as it:
                n = sum(1 for e in it if e.name.endswith(".parquet"))
        except FileNotFoundError:
            continue
        out[t] = n
    return out
