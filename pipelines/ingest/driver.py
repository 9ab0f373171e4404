"""Capture file -> Parquet tables of one capture, committed atomically: the driver.

How this works: the capture is read in bounded chunks; each chunk is decoded
(``parsers.decode``), assigned to flows and analysed (``parsers.tcp.analysis``)
with compiled kernels, and its per-packet results become rows of
``tcp_events``, ``anomalies`` and (opt-in) ``packets`` through NumPy masks, never
a Python loop over packets. TCP payload of each connection goes to the
application layer (``app_layer``), which reassembles and parses it.
One ``captures`` row is written at the end; ``store.Staging.commit`` then swaps
the capture's partitions in.

The driver sits above the stages it drives and passes their outputs on:
``packet_rows`` (per-packet tables), ``app_layer`` (reassembly and the protocol
sessions), ``flow_rows`` (the ``flows`` table and the matcher's run at the end),
``shards`` (several processes on one capture). See ``docs/architecture.md``.
"""


from __future__ import annotations

import functools
import hashlib
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ... import __version__
from ...parsers.capture import open_capture
from ...parsers.capture.capset import CaptureSet, open_set
from ...parsers.capture.reader import DEFAULT_CHUNK_BYTES, KEPT_CODES
from ...parsers.decode import decode_chunk
from ...parsers.errors import PcapflowError
from ...parsers.events import Anomaly
from ...parsers.limits import Limits
from ...parsers.protocols.columns import ts_array
from ...parsers.tcp.analysis import END_NONE, FlowTracker
from .. import feed_scan, interrupts, store
from ..prefilter import CANDIDATES_DIR, stage_ws_candidates
from ..tables.rows import RowBuffers
from . import known
from . import resume as resume_state
from .app_layer import AppLayer
from .flow_rows import FlowRows
from .packet_rows import anomaly_rows, decode_anomaly_rows, packet_rows, tcp_event_rows
from .resume import Previous
from .shards import ChildLink, ParentLink, Shard, Unshardable, Worker, can_shard, one_line

if TYPE_CHECKING:
    from ...parsers.tls import KeyLog
    from ..match import Matcher

__all__ = ["AppFactory", "IngestResult", "ProgressFn", "can_shard", "ingest_capture",
           "stage_capture"]

ProgressFn = Callable[[int, int], None]
"""Called after each chunk with (capture bytes read so far, packets so far)."""
AppFactory = Callable[[FlowTracker], AppLayer]
"""Makes the application layer of one ingest (``AppLayer.factory``)."""
_Args = tuple[list[str], bool, "AppFactory | None", "Matcher | None", "ProgressFn | None"]
"""``_run``'s arguments after the reader and the staging (what a worker inherits)."""


@dataclass(slots=True)
class IngestResult:
    """What one capture's ingest produced (also printed by the CLI)."""

    path: str
    """The capture's file (a set: its first file; ``paths`` has them all)."""
    capture_id: str
    sha256: str
    format: str
    packets: int
    bytes: int
    flows: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    anomaly_codes: dict[str, int] = field(default_factory=dict)
    capture_problems: list[str] = field(default_factory=list)
    """Capture-file problems (truncated record, corrupt block...), one line each."""
    paths: list[str] = field(default_factory=list)
    """Every file of the capture, in set order (``parsers.capture.capset``)."""
    sha256s: list[str] = field(default_factory=list)
    """Each file's SHA-256, in set order."""
    replaced: list[str] = field(default_factory=list)
    """Other captures this ingest replaced: they shared a file with it."""
    resumed: int = 0
    """Connections resumed from the set's previous file (``resume``)."""
    resumed_from: str | None = None
    """That file (None: this ingest began a capture)."""
    compacted: list[Any] = field(default_factory=list)
    """The set's parts merged after this command's commit (``pipelines.compact.Change``
    each: what the watch's metrics follow)."""

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0



def _paths(path: str | os.PathLike[str] | Sequence[str]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    return [os.fspath(p) for p in path]


def ingest_capture(
    path: str | Sequence[str],
    data_dir: Path,
    *,
    packets_table: bool = False,
    app_layer: AppFactory | None = None,
    matcher: Matcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: ProgressFn | None = None,
    workers: int = 1,
    shard_rule: str = "balanced",
    resume: bool = False,
    siblings: Sequence[str] = (),
) -> IngestResult:
    """Ingest one capture into ``data_dir``; replaces that capture's partitions.

    ``path`` is one file, or the files of one recording (a capture set:
    ``parsers.capture.capset``), read as one capture: connections run on across
    the files. Captures ingested before that share a file with this one are
    replaced too (``IngestResult.replaced``). ``app_layer`` is a factory
    ``(flow_tracker) -> AppLayer`` (see ``pipelines.ingest.app_layer``); ``None``
    stops at the TCP layer. ``workers > 1`` shards the capture's connections
    across that many processes (module docstring) when the application layer is
    on and the files are regular files; the tables are the same.

    ``resume``: files named as a rotation's keep the state of the connections
    they leave open, and files that continue a set the dataset holds state for
    resume it (``pipelines.ingest.resume``; both in one process: ``workers`` is
    ignored when resuming, and a rotation's file sharded keeps no state).
    ``siblings``: the files of the command's other capture sets, never resumed into.
    """
    t0 = time.perf_counter()
    paths = _paths(path)
    args: _Args = (paths, packets_table, app_layer, matcher, progress)
    # (the commit of a resumed set appends to it: it expects the set as it was read)
    prev, expect = _find_with_fingerprint(data_dir, paths, siblings) if resume else (None, None)
    keep = resume and all(resume_state.rotation_named(p) for p in paths)
    if prev is None and workers > 1 and app_layer is not None and can_shard(paths):
        try:
            return _ingest_sharded(args, data_dir, chunk_bytes, workers, shard_rule, t0)
        except Unshardable:
            pass  # too many open connections to shard: one process, from the start
    staging = store.Staging(data_dir)
    try:
        result = _stage_set(staging, args, _Resume(prev, keep, data_dir), chunk_bytes)
        result.seconds = time.perf_counter() - t0
        interrupts.check()
        result.replaced = staging.commit(result.capture_id, supersede=result.sha256s,
                                         expect=expect)
        result.seconds = time.perf_counter() - t0
        return result
    except BaseException:
        staging.abort()
        raise


def _stage_set(staging: store.Staging, args: _Args, resume: _Resume,
               chunk_bytes: int) -> IngestResult:
    """Read the set ``args[0]`` into ``staging`` (one process): continuing
    ``resume.prev``'s set (its final parts carried over, packets and files numbered
    on) and keeping state for the next file when ``resume.keep``."""
    prev = resume.prev
    first_index = int(prev.header["packets"]) if prev is not None else 0
    first_file = prev.n_files if prev is not None else 0
    if prev is not None:
        resume_state.carry(prev, resume.root, staging.dir)  # (the commit appends)
        resume_state.carry_candidates(prev, resume.root, staging.dir, CANDIDATES_DIR)
        staging.part_prefix = f"f{first_file}-"
    with open_set(args[0], chunk_bytes=chunk_bytes, as_set=resume.keep,
                  first_index=first_index, first_file=first_file) as reader:
        result = _parent_result(_run(reader, staging, *args, resume=resume))
    if (staging.dir / store.STATE / resume_state.STATE_FILE).is_file():
        staging.close_writers()  # (every part staged: what the set's addresses count)
        known.stage(staging.dir, resume.root, prev.capture_id if prev is not None else None)
    return result


def stage_capture(
    path: str | Sequence[str],
    data_dir: Path,
    *,
    owner: str,
    packets_table: bool = False,
    app_layer: AppFactory | None = None,
    matcher: Matcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    resume: bool = False,
    siblings: Sequence[str] = (),
) -> tuple[IngestResult, Path, str | None]:
    """Ingest one capture into a staging directory of ``data_dir`` and stop before the
    commit: the tables of ``ingest_capture`` (one process), written and fsynced, in
    a directory another process (``owner``, ``store.cluster_owner``) commits with
    ``store.Staging.adopt(data_dir, dir).commit(..., expect=...)`` (``pcapflow.cluster``:
    a Dask worker stages, the client commits under the dataset's lock). Until then
    nothing is visible; a process killed here leaves only the staging directory, which
    its owner (or ``store.recover`` once the owner is gone) removes.

    ``resume`` and ``siblings`` as for ``ingest_capture``: the set's resume state is
    staged with its parts, so it is committed with them. Returns the result, the
    staging directory and, when the set continues one the dataset holds, that set's
    ``store.fingerprint`` as read (the commit's ``expect``: a set changed meanwhile
    is not overwritten)."""
    t0 = time.perf_counter()
    paths = _paths(path)
    prev, expect = _find_with_fingerprint(data_dir, paths, siblings) if resume else (None, None)
    keep = resume and all(resume_state.rotation_named(p) for p in paths)
    staging = store.Staging(data_dir, owner=owner)
    try:
        result = _stage_set(staging, (paths, packets_table, app_layer, matcher, None),
                            _Resume(prev, keep, data_dir), chunk_bytes)
        staging.close_writers()
        staging._fsync_all()
        result.seconds = time.perf_counter() - t0
        return result, staging.dir, expect
    except BaseException:
        staging.abort()
        raise


def _find_with_fingerprint(root: Path, paths: list[str], siblings: Sequence[str]
                           ) -> tuple[Previous | None, str | None]:
    """``resume.find``, and the fingerprint of the set found as its state was read
    (a commit of that set between the two, seen by its state's header changing,
    makes a second look)."""
    for _ in range(5):
        prev = resume_state.find(root, paths, siblings)
        if prev is None:
            return None, None
        expect = store.fingerprint(root, prev.capture_id)
        try:
            again = resume_state.read_header(prev.path)
        except (OSError, PcapflowError):
            continue
        if again == prev.header:
            return prev, expect
    raise store.StaleCapture(f"{paths[0]}: the capture set it continues is being "
                             "re-ingested meanwhile; run the command again")


def _parent_result(result: IngestResult | None) -> IngestResult:
    """``_run``'s result in the process that commits (only a worker's is None)."""
    if result is None:
        raise PcapflowError("the ingest ended without a result")
    return result


WARM_UP_BYTES = 1 << 18
"""Capture bytes the parent of a sharded ingest parses before it forks (``_warm_up``)."""


class _Discard:
    """A staging stand-in that keeps nothing (``_warm_up``)."""

    dir = None

    def write(self, table: str, batch: pa.Table | dict[str, Any]) -> None:
        pass


def _warm_up(path: list[str], app_factory: AppFactory) -> None:
    """Parse the start of the capture, keeping nothing, before forking: Numba sets
    itself up and loads each compiled kernel from its cache once per process, on
    first use (about half a second in all); done here, the workers inherit them
    instead of each paying it again. No thread is started, no file written; a
    failure here is left for the ingest itself to meet and report."""
    tracker = FlowTracker()
    app = app_factory(tracker)
    try:
        with open_capture(path[0], chunk_bytes=WARM_UP_BYTES, hash=False) as reader:
            for chunk in reader:
                if len(chunk):
                    dec = decode_chunk(chunk)
                    pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
                    app.process(chunk, dec, pf, _Discard(), lambda items: None)
                break
    except Exception:  # only an optimisation
        pass


def _ingest_sharded(args: _Args, data_dir: Path, chunk_bytes: int, workers: int,
                    rule: str, t0: float) -> IngestResult:
    path, app_factory = args[0], args[2]
    if app_factory is not None:
        _warm_up(path, app_factory)
    staging = store.Staging(data_dir)
    link = ParentLink(path[0], workers)
    ok = False
    try:
        for k in range(1, workers):
            link.workers.append(_fork(k, workers, rule, args, staging, chunk_bytes, link))
        with open_set(path, chunk_bytes=chunk_bytes) as reader:
            result = _parent_result(
                _run(reader, staging, *args, shard=Shard(0, workers, rule), link=link))
        result.seconds = time.perf_counter() - t0
        interrupts.check()
        result.replaced = staging.commit(result.capture_id, supersede=result.sha256s)
        result.seconds = time.perf_counter() - t0
        ok = True
        return result
    except BaseException:
        link.close(kill=True)  # first: no worker writes into what abort removes
        staging.abort()
        raise
    finally:
        if ok:
            link.close(kill=False)


def _fork(k: int, count: int, rule: str, args: _Args, staging: store.Staging,
          chunk_bytes: int, link: ParentLink) -> Worker:
    """Start worker ``k``; in the child, ingest its shard and exit (never return)."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers
            os.close(up_r)
            os.close(down_w)
            for w in link.workers:  # the other workers' pipes: theirs and the parent's
                os.close(w.up.fileno())
                os.close(w.down.fileno())
            up = os.fdopen(up_w, "wb")
            child = ChildLink(up, os.fdopen(down_r, "rb"))
            try:
                staging.part_prefix = f"w{k}-"
                # the parent hashes the file: the workers only read it
                with open_set(args[0], chunk_bytes=chunk_bytes, hash=False) as reader:
                    _run(reader, staging, *args[:4], None, shard=Shard(k, count, rule),
                         link=child)
                code = 0
            except Unshardable as err:
                child.send({"fallback": str(err)})
            except BaseException as err:
                child.send({"error": one_line(err)})
        except BaseException:
            pass
        finally:
            os._exit(code)
    interrupts.track(pid)
    os.close(up_w)
    os.close(down_r)
    return Worker(pid, k, os.fdopen(up_r, "rb"), os.fdopen(down_w, "wb"))


@dataclass(slots=True)
class _Resume:
    """An ingest's part in resuming across commands (``resume``): the set it
    continues (None: it begins one), and whether it keeps state for the next."""

    prev: Previous | None
    keep: bool
    root: Path


def _after_ws_flush(stage_dir: Path, rows: pa.Table) -> None:
    stage_ws_candidates(stage_dir, rows)
    feed_scan.stage(stage_dir, rows)


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _run(reader: CaptureSet, staging: store.Staging, path: list[str], packets_table: bool,
         app_factory: AppFactory | None, matcher: Matcher | None, progress: ProgressFn | None,
         shard: Shard | None = None,
         link: ParentLink | ChildLink | None = None,
         resume: _Resume | None = None) -> IngestResult | None:
    tracker = FlowTracker()
    app = app_factory(tracker) if app_factory is not None else None
    prev = resume.prev if resume is not None else None
    resumed_events: list = []
    resumed = 0
    if prev is not None:
        prev.load(app.keylog if app is not None else None,
                  app.limits if app is not None else Limits())
        tracker = prev.core["tracker"]
        if app is not None:
            app.tracker = tracker
            resumed_events, resumed = resume_state.restore(prev, app)
    if app is not None and staging.dir is not None:
        # the matcher's first pass over WebSocket payloads and the market-data ids of
        # the feed rules, while the payloads are in memory
        app.after_flush["ws_messages"] = functools.partial(_after_ws_flush, staging.dir)
    anomaly_codes: dict[str, int] = {}
    first_shard = shard is None or shard.index == 0
    max_open = app.limits.max_open_connections if app is not None else None
    parent = os.getppid() if isinstance(link, ChildLink) else None

    def add_anomalies(items: list[Anomaly]) -> None:
        if items:
            staging.write("anomalies", anomaly_rows(items))
            for a in items:
                anomaly_codes[a.code] = anomaly_codes.get(a.code, 0) + 1

    flows = FlowRows(staging, matcher)
    # (resume) the ended flows the previous command left held, whose rows are final: one
    # retired here without a packet since (past the grace) keeps its row (``_unchanged``)
    before = (_stable_before(prev, resume.root)  # type: ignore[union-attr]
              if prev is not None and matcher is not None and shard is None else None)

    def write_retired(cols: dict[str, np.ndarray] | None,
                      same: np.ndarray | None = None) -> None:
        """``same``: the flows whose ``flows`` rows the set holds already, unchanged
        (``_stable``): retired from the application layer, no row written."""
        if cols is None:
            return
        if same is None and before is not None:
            same = _unchanged(cols, before)
        if shard is not None:
            keep = shard.retire(cols["flow_id"])
            if not keep.all():
                if not keep.any():
                    return
                cols = {k: v[keep] for k, v in cols.items()}
        evicted = np.flatnonzero(cols["evicted"])
        add_anomalies([Anomaly(
            ts=int(cols["last_ts"][k]), flow_id=int(cols["flow_id"][k]), direction=None,
            layer="tcp", code="flow_evicted",
            detail=f"more than {tracker.max_flows} flows held: this idle one was retired "
            "early; a later packet of it starts a new flow") for k in evicted.tolist()])
        fids = cols["flow_id"].tolist()
        info = app.retire(fids, staging, add_anomalies) if app is not None else {}
        if same is not None and same.any():
            if same.all():  # (a chunk's flows retired past the grace: often all of them)
                return
            cols = {k: v[~same] for k, v in cols.items()}
        flows.add(cols, info)

    if prev is not None and app is not None:
        rows0 = RowBuffers(staging.write, app.after_flush)
        app._dispatch(resumed_events, rows0, add_anomalies)
        rows0.flush()
    capture_problems: list[str] = []
    for chunk in reader:
        if first_shard:
            add_anomalies(chunk.anomalies)
            capture_problems += [f"{a.code}: {a.detail}" for a in chunk.anomalies
                                 if a.layer == "capture" and a.code not in KEPT_CODES]
        if len(chunk) == 0:
            continue
        dec = decode_chunk(chunk)
        pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
        steps = tracker.take_clock_steps()  # every process finds them; one writes them
        if first_shard:
            add_anomalies(steps)
        mine = None
        if shard is not None:
            mine = shard.packets(dec, pf)
            if max_open is not None and shard.peak > max_open:
                raise Unshardable(f"more than {max_open} connections with payload held")
            if parent is not None and os.getppid() != parent:
                raise PcapflowError("the parent process went away")
        rows = tcp_event_rows(pf, dec, chunk, mine)
        if rows:
            staging.write("tcp_events", rows)
        rows = decode_anomaly_rows(dec, chunk, pf, mine)
        if rows:
            staging.write("anomalies", rows)
            for code in rows["code"].to_pylist():
                anomaly_codes[code] = anomaly_codes.get(code, 0) + 1
        if packets_table:
            rows = packet_rows(pf, dec, chunk)
            if mine is not None:
                keep = pa.array(mine)
                rows = {k: v.filter(keep) for k, v in rows.items()}
            staging.write("packets", rows)
        if app is not None:
            app.process(chunk, dec, pf, staging, add_anomalies, mine)
        # after the application layer has seen this chunk's packets of them
        write_retired(tracker.take_retired())
        if progress is not None:
            progress(reader.bytes_read, reader.packets)
        interrupts.check()  # between chunks: no kernel is running (see pipelines.interrupts)
    # the last chunk, its decoded columns and its rows: not held through the end (the
    # matcher and the derive, where the ingest peaks)
    chunk = dec = pf = rows = mine = None  # type: ignore[assignment]
    held: np.ndarray | None = None  # (the flows whose rows are provisional)
    if resume is not None and resume.keep:
        # the state of what is still open, for the next file's ingest; then what the
        # end of this file writes is provisional (``resume``: ``part-t*``)
        held = _keep_state(resume, reader, staging, tracker, app, add_anomalies,
                           anomaly_codes)
    if app is not None:
        if link is not None:  # the connections still open close at the same time everywhere
            app.last_ts = link.agree_last(app.last_packet, app.last_ts)
        app.finish(staging, add_anomalies)
    end = tracker.finish()
    same = None
    if held is not None and end is not None and matcher is not None and shard is None:
        # (resume: ``same``) the ended flows' rows are final; only the others provisional
        same, held = _stable(staging.dir, end, before)
    write_retired(end, same)
    end = None
    # every connection is closed and written: the tracker's and the parsers' state goes
    # before the matcher and the derive (only these two are read past here)
    n_flows, keylog = tracker.n_flows, getattr(app, "keylog", None)
    tracker = app = None  # type: ignore[assignment]
    if isinstance(link, ChildLink):
        sides = flows.finish(final=False)
        staging.close_writers()
        link.send({"done": {"rows": staging.rows, "anomaly_codes": anomaly_codes,
                            "pending": _text(sides.with_app),
                            "without_app": _text(sides.without_app)}})
        return None
    more: list[Path] = []
    more_without_app: list[Path] = []
    child_rows: dict[str, int] = {}
    if link is not None:
        for part in link.collect():
            if part["pending"] is not None:
                more.append(Path(part["pending"]))
            if part["without_app"] is not None:
                more_without_app.append(Path(part["without_app"]))
            for name, n in part["anomaly_codes"].items():
                anomaly_codes[name] = anomaly_codes.get(name, 0) + n
            for name, n in part["rows"].items():
                child_rows[name] = child_rows.get(name, 0) + n
    interrupts.check()
    old_anomalies = 0
    old: resume_state.OldFlows | None = None
    if prev is not None:
        old_anomalies = int(prev.header["anomalies"])
        # the set's flows rows: kept where they are but those made again (``OldFlows``)
        old = resume_state.old_flows(prev, resume.root, flows.written(),  # type: ignore[union-attr]
                                     staging.dir)
    read = old
    if old is not None and matcher is None:
        flows.write_final(old.rows.filter(pa.array(old.in_parts(old.rewrite))))
        old = None
    capture_id = reader.content_sha256[:16]  # one id for the capture plain or compressed
    if prev is not None:
        capture_id = prev.capture_id
    flows.finish(more=more, more_without_app=more_without_app, capture_id=capture_id,
                 old=old, held=held)
    if held is not None:  # what the next command reads of the set's flows (O(its file))
        staging.close_writers()
        resume_state.keep_flows(staging.dir, read)
    if flows.anomaly_codes:  # the matcher's (``match_carry.IdBound``): counted in the set's
        for name, n in flows.anomaly_codes.items():
            anomaly_codes[name] = anomaly_codes.get(name, 0) + n
        if held is not None and flows.anomalies_final:  # (the staged state's count of
            # the set's final rows, which the next command adds to)
            resume_state.add_anomalies(staging.dir / store.STATE / resume_state.STATE_FILE,
                                       flows.anomalies_final)
    sha = reader.sha256
    own = [f.sha256 or "" for f in reader.files]
    rows = _capture_rows(_set_captures(resume.root, prev) if resume is not None else None,
                         reader, n_flows,
                         old_anomalies + sum(anomaly_codes.values()), keylog)
    if prev is not None:  # (the set's: of its files' sha256s, sorted and joined, in Arrow)
        sha = hashlib.sha256(_joined_sorted(rows.column("sha256"))).hexdigest()
    staging.write("captures", rows)
    paths = [f.path for f in reader.files]
    if prev is not None and SET_LISTS:
        paths = [str(p) for p in rows.column("path").to_pylist()]
    return IngestResult(
        path=reader.files[0].path, capture_id=capture_id, sha256=sha, format=reader.format,
        packets=reader.packets, bytes=reader.bytes_read, flows=n_flows, seconds=0.0,
        rows={**staging.rows, **{t: staging.rows.get(t, 0) + n for t, n in child_rows.items()}},
        anomaly_codes=anomaly_codes,
        capture_problems=capture_problems,
        paths=paths,
        # (a resumed command's own files: another capture holding one of the set's
        # earlier files was replaced by the command that ingested that file)
        sha256s=own,
        resumed=resumed,
        resumed_from=prev.last_path if prev is not None else None,
    )


SET_LISTS = True
"""Whether a resumed command's ``IngestResult.paths`` names every file of the set (a
Python string per file, O(set)); the watch's worker, which drops them, sets it False
(its result then names the command's own files)."""


def _set_captures(root: Path, prev: Previous | None) -> pa.Table | None:
    """The set's ``captures`` rows so far (the part the previous command wrote), in
    ``file_index`` order; None when the ingest begins a set."""
    if prev is None:
        return None
    import pyarrow.parquet as pq

    part = store.partition_dir(root, "captures", prev.capture_id)
    files = sorted(part.glob("*.parquet"))
    if not files:
        raise PcapflowError(f"{part}: the capture set's captures rows are missing: "
                            "re-ingest the file with --new-set")
    # (ParquetFile: pq.read_table goes through pyarrow.dataset, ~1 ms more a call)
    t = pa.concat_tables([pq.ParquetFile(f).read(columns=_PER_FILE) for f in files])
    return t.sort_by("file_index") if len(files) > 1 else t


_SET_COLUMNS = ("files", "flows", "anomalies", "tls_keys", "keylogs", "ingested_at",
                "pcapflow_version")
"""``captures`` columns of the whole set, repeated on each file's row (each command
writes them anew); the others are the file's own (``_PER_FILE``)."""
_PER_FILE = ["file_index", "path", "sha256", "format", "compression", "link_types",
             "packets", "bytes", "first_ts", "last_ts"]


def _joined_sorted(col: pa.ChunkedArray) -> bytes:
    """The strings of ``col`` (nulls as empty), sorted and joined: Arrow's buffers, no
    Python string per row."""
    import pyarrow.compute as pc

    arr = pc.fill_null(col, "").combine_chunks()
    arr = arr.take(pc.array_sort_indices(arr))
    lists = pa.ListArray.from_arrays(pa.array([0, len(arr)], pa.int32()), arr)
    out = pc.binary_join(lists, "")[0].as_py()
    return str(out).encode()


def _keep_state(resume: _Resume, reader: CaptureSet, staging: store.Staging,
                tracker: FlowTracker, app: AppLayer | None,
                add_anomalies: Callable[[list[Anomaly]], None],
                anomaly_codes: dict[str, int]) -> np.ndarray:
    """Stage the state of the connections still open (``resume.snapshot``), then send
    the rest of the ingest's writes to provisional parts. Returns the ids of the flows
    still held (their ``flows`` rows are provisional)."""
    prev = resume.prev
    content = reader.content_sha256  # (waits for the files' hashes: the state names them)
    capture_id = prev.capture_id if prev is not None else content[:16]
    mine = [resume_state.file_meta(f) for f in reader.files]
    last_files = [*(resume_state.last_files(prev.header) if prev is not None else []), *mine]
    last_key = max([int(prev.header["last_key"]) if prev is not None else 0,
                    *(f.max_ts for f in reader.files if f.max_ts is not None)])
    timed = [f for f in reader.files if f.first_ts is not None or f.min_ts is not None]
    last = max(timed, key=lambda f: f.max_ts or 0) if timed else reader.files[-1]
    rec = resume_state.recording_name(reader.files[0].path)
    limits = app.limits if app is not None else Limits()
    header: dict[str, Any] = {
        "capture_id": capture_id, "recording": [rec[0], rec[1], list(rec[2])],
        "n_files": (prev.n_files if prev is not None else 0) + len(mine),
        "last_files": last_files[-resume_state.LAST_FILES:], "last_key": last_key,
        "link_types": list(last.link_types),
        "packets": (int(prev.header["packets"]) if prev is not None else 0) + reader.packets,
        "resume_pending_s": limits.resume_pending_s,  # (the matcher's: ``match_carry``)
        "resume_order_ids_s": limits.resume_order_ids_s,
        "resume_order_ids": limits.resume_order_ids,
        # (the oldest outbound segment still timed: ``match_carry._cut``)
        "timed_since": resume_state.timed_since(tracker, app)}
    core, dropped = resume_state.snapshot(capture_id, tracker, app, limits)
    add_anomalies(dropped)
    held, ended = tracker.held_flows()
    # anomalies of the set written so far: final (the next ingest keeps them)
    header["anomalies"] = (int(prev.header["anomalies"]) if prev is not None else 0) + sum(
        anomaly_codes.values())
    data = resume_state.pack(header, core)
    out = staging.dir / store.STATE
    out.mkdir(exist_ok=True)
    (out / resume_state.STATE_FILE).write_bytes(data)
    resume_state.save_keys(out, prev, mine)  # (every file's key: O(set) bytes, 40 a file)
    np.save(out / resume_state.HELD, resume_state.carried_flows(held, ended, app))
    staging.close_writers()  # (the scan files of the final rows are written by then)
    resume_state.keep_candidates(staging.dir, CANDIDATES_DIR)
    staging.part_prefix = resume_state.TAIL_PREFIX
    return held.astype(np.int64)


def _stable(stage: Path, end: dict[str, np.ndarray], before: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Of the flows a rotation's file leaves held (``end``: their columns), those that
    have ended (FIN both ways, RST) get final ``flows`` rows: only a late packet (a
    retransmission within the tracker's grace) changes them, and then the next command
    writes the row again (``resume.old_flows``: it goes with its part). Kept in the
    staged state (``resume.STABLE``): each one's id and packet count. Returns which of
    ``end`` the set already holds unchanged (ended by the previous file, no packet
    since: no row written again; ``before``: the previous command's, ``_stable_before``)
    and the ids of the flows still open (provisional)."""
    ids = end["flow_id"].astype(np.int64)
    packets = (end["packets_out"] + end["packets_in"]).astype(np.int64)
    ended = end["end"] != END_NONE
    np.save(stage / store.STATE / resume_state.STABLE,
            np.stack([ids[ended], packets[ended]], axis=1))
    same = _unchanged(end, before) if before is not None else np.zeros(ids.size, bool)
    return same, ids[~ended]


def _stable_before(prev: Previous, root: Path) -> np.ndarray | None:
    """The previous command's ``resume.STABLE`` (flow id, packets), by flow id."""
    was = store.partition_dir(root, store.STATE, prev.capture_id) / resume_state.STABLE
    if not was.is_file():
        return None
    before = np.load(was).reshape(-1, 2)
    return before[np.argsort(before[:, 0], kind="stable")]


def _unchanged(cols: dict[str, np.ndarray], before: np.ndarray) -> np.ndarray:
    """Which of the flows ``cols`` (the tracker's columns) have ended and are in
    ``before`` (``_stable_before``) with as many packets: the set holds their ``flows``
    rows, final and the same (a flow the previous command left held, retired now past
    the grace or at this file's end without a packet since)."""
    ids = cols["flow_id"].astype(np.int64)
    if not len(before):
        return np.zeros(ids.size, bool)
    packets = (cols["packets_out"] + cols["packets_in"]).astype(np.int64)
    hit = before[np.searchsorted(before[:, 0], ids).clip(0, len(before) - 1)]
    return (cols["end"] != END_NONE) & (hit[:, 0] == ids) & (hit[:, 1] == packets)


def _capture_rows(old: pa.Table | None, reader: CaptureSet, flows: int, anomalies: int,
                  keylog: KeyLog | None) -> pa.Table:
    """``captures`` rows: one per file (a capture set has several, one capture_id);
    ``old``: the rows of the files of the set ingested by earlier commands
    (``_set_captures``: their own columns), extended in Arrow (no Python object per
    file of the set) with this command's files, the set's columns on every row."""
    from ..tables.schemas import TABLES

    files = [resume_state.file_meta(f) for f in reader.files]
    first = old.num_rows if old is not None else 0
    n = first + len(files)

    def ts(values: list[int | None]) -> pa.Array:
        return ts_array(np.array([v if v is not None else 0 for v in values], dtype=np.int64))

    schema = pa.schema([f for f in TABLES["captures"] if f.name != "capture_id"])
    own = pa.table({
        "file_index": pa.array(range(first, n), type=pa.int32()),
        "path": pa.array([f["path"] for f in files], type=pa.string()),
        "sha256": pa.array([f["sha256"] for f in files], type=pa.string()),
        "format": pa.array([f["format"] for f in files], type=pa.string()),
        "compression": pa.array([f["compression"] for f in files], type=pa.string()),
        "link_types": pa.array([list(f["link_types"]) for f in files],
                               type=pa.list_(pa.int32())),
        "packets": pa.array([f["packets"] for f in files], type=pa.int64()),
        "bytes": pa.array([f["bytes"] for f in files], type=pa.int64()),
        "first_ts": ts([f["min_ts"] for f in files]),
        "last_ts": ts([f["max_ts"] for f in files]),
    }, schema=pa.schema([schema.field(c) for c in _PER_FILE]))
    if old is not None:
        own = pa.concat_tables([old.select(_PER_FILE).cast(own.schema), own])
    keylogs = list(keylog.sources) if keylog is not None else []
    whole = {
        "files": pa.repeat(pa.scalar(n, pa.int32()), n),
        "flows": pa.repeat(pa.scalar(flows, pa.int64()), n),
        "anomalies": pa.repeat(pa.scalar(anomalies, pa.int64()), n),
        "tls_keys": pa.repeat(pa.scalar(keylog is not None, pa.bool_()), n),
        "keylogs": pa.repeat(pa.scalar(keylogs, pa.list_(pa.string())), n),
        "ingested_at": ts_array(np.full(n, time.time_ns(), dtype=np.int64)),
        "pcapflow_version": pa.repeat(pa.scalar(__version__, pa.string()), n),
    }
    return pa.table([own.column(f.name) if f.name in _PER_FILE else whole[f.name]
                     for f in schema], schema=schema)
