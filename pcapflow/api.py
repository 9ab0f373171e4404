"""Library entry points the CLI and notebooks share."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .dataset import data_dir
from .parsers.capture.capset import expand, group, rotation_named
from .parsers.errors import PcapflowError
from .pipelines import interrupts
from .pipelines.ingest import IngestResult, can_shard, ingest_capture

if TYPE_CHECKING:
    from .pipelines.ingest import AppFactory
    from .pipelines.match import Matcher

Capture = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""A capture file, or the files of one capture set (``capture_sets``)."""

AUTO_MAX_WORKERS = 4
"""``workers="auto"`` uses at most this many processes per capture."""
AUTO_MIN_BYTES = 16 << 20
"""``workers="auto"``: a smaller capture is ingested in one process (a fork and a
second read of the file cost more than sharding it gains)."""


def _files(capture: Capture) -> list[str]:
    if isinstance(capture, (str, os.PathLike)):
        return [os.fspath(capture)]
    return [os.fspath(p) for p in capture]


def capture_sets(paths: Sequence[Capture], *, sets: bool = True) -> list[list[str]]:
    """The captures to ingest, each a list of files read as one recording.

    Directories give the capture files in them and quoted glob patterns the files
    they match (``parsers.capture.capset.expand``). With ``sets``, files named
    together that are parts of one recording (same directory, names differing only
    in digits: a ``tcpdump -G/-C`` rotation, a ring buffer, an ``editcap`` split)
    form one capture set (``parsers.capture.capset.group``); without, every file
    is a capture of its own. An item that is itself a list is one set, as given.
    """
    out: list[list[str]] = []
    loose: list[str] = []
    for p in paths:
        if isinstance(p, (str, os.PathLike)):
            loose.append(os.fspath(p))
            continue
        out.extend(group(expand(loose)) if sets else [[f] for f in expand(loose)])
        loose = []
        out.append(expand(_files(p)))
    out.extend(group(expand(loose)) if sets else [[f] for f in expand(loose)])
    return [s for s in out if s]


def auto_workers(path: Capture, *, app: bool = True, jobs: int = 1,
                 load: float | None = None) -> int:
    """Processes ``workers="auto"`` gives one capture: the usable CPUs not already
    busy (at most ``AUTO_MAX_WORKERS``), or 1 for a small or unshardable capture
    (stdin), for ``app=False`` (the TCP layer alone runs in every process anyway), and
    when ``jobs > 1`` already ingests captures in parallel.

    Busy CPUs are the 1-minute load average (``load``: ``os.getloadavg``), rounded, as
    ``make -l`` weighs it: every worker reads and tracks the whole file, so a worker
    without a core of its own adds CPU time and saves no wall time (session 13: two
    workers on a 2-core machine at load ~5 took 2.37 s of CPU against 1.83 s for one,
    the same wall time), and on a capture host it takes the core from the trading
    process or the capture itself."""
    files = _files(path)
    if (not app or jobs > 1 or not can_shard(files)
            or sum(os.path.getsize(p) for p in files) < AUTO_MIN_BYTES):
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # (no load average on this platform: every CPU counts as free)
            load = 0.0
    busy = min(cpus, max(0, round(load)))
    return max(1, min(cpus - busy, AUTO_MAX_WORKERS))


def _workers(path: Capture, workers: int | str, *, app: bool, jobs: int,
             resume: bool = False) -> int:
    """The processes one capture gets: ``workers``, or ``auto_workers`` for "auto"
    (one for a rotation's files when resuming is on: only one process keeps the state
    of the connections they leave open)."""
    if workers == "auto" and resume and all(rotation_named(p) for p in _files(path)):
        return 1
    return auto_workers(path, app=app, jobs=jobs) if workers == "auto" else int(workers)


def _app_factory(keylog: Sequence[str | os.PathLike[str]] | None,
                 limits: Mapping[str, int | str] | None = None) -> AppFactory:
    """The application-layer stage of an ingest (key logs loaded here, once)."""
    from .parsers.limits import Limits
    from .pipelines.ingest.app_layer import AppLayer  # lazy: the parsers load on first use

    return AppLayer.factory(keylog=[str(k) for k in keylog or []],
                            limits=Limits().with_overrides(limits or {}))


def _matcher(venues: str | os.PathLike[str] | None,
             data: str | os.PathLike[str] | None = None) -> Matcher:
    """Order/ack matching with the venue registry (and the map in ``venues``; the
    dataset ``data`` names the server addresses of connections without a name)."""
    from .venues import make_matcher  # lazy: DuckDB loads when a capture is matched

    return make_matcher(venues, data)


def _one(args: tuple[list[str], str, bool, bool, list[str], str | None,
                     dict[str, int | str], int, bool, list[str]]) -> IngestResult:
    path, data, packets, app, keylog, venues, limits, workers, resume, siblings = args
    return ingest_capture(
        path, Path(data), packets_table=packets,
        app_layer=_app_factory(keylog, limits) if app else None,
        matcher=_matcher(venues, data) if app else None,
        workers=workers, resume=resume, siblings=siblings,
    )


def _siblings(plan: list[list[str]], k: int) -> list[str]:
    """Files of the plan's capture sets other than set ``k`` (never resumed into)."""
    return [f for j, s in enumerate(plan) if j != k for f in s]


def ingest(
    paths: Capture | Sequence[Capture],
    *,
    keylog: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    data: str | os.PathLike[str] | None = None,
    venues: str | os.PathLike[str] | None = None,
    packets: bool = False,
    app: bool = True,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    limits: Mapping[str, int | str] | None = None,
    workers: int | str = 1,
    sets: bool = True,
    resume: bool = True,
    cluster: str | None = None,
) -> list[IngestResult]:
    """Ingest captures into a dataset; returns one ``IngestResult`` per capture.

    >>> import pcapflow
    >>> results = pcapflow.ingest(["capture.pcap"], keylog=["keys.log"])  # doctest: +SKIP
    >>> pcapflow.open().sql("SELECT count(*) FROM flows").fetchall()  # doctest: +SKIP

    Re-ingesting a capture (same sha256) replaces its rows and touches nothing
    else. ``venues`` is a TOML venue map (see ``pcapflow.venues``). ``jobs > 1``
    ingests several captures in parallel processes. ``limits`` overrides resource
    caps by name (``parsers.limits.Limits``, e.g. ``{"ws_max_message": "32M"}``).
    ``workers > 1`` ingests each capture with that many processes, its connections
    sharded across them (same tables; a regular file and the application layer
    only, else one process); ``"auto"``: ``auto_workers`` per capture.

    ``paths`` and ``keylog`` may each be one path (``pcapflow.ingest("a.pcap",
    keylog="keys.log")``): a string is a path, never a sequence of one-letter paths.

    Files of one recording (a rotation, a ring buffer, a split) are one capture,
    read as one stream: ``capture_sets`` says which (``sets=False``: each file on
    its own); ``progress`` is called with the first file of each.

    A file of a rotation ingested in a later command than the files before it
    (as each ``tcpdump -G`` file closes) continues their capture: the connections
    they left open resume, and the rows are those of one ingest of all the files
    (``docs/resume.md``; ``IngestResult.resumed``). ``resume=False`` (the CLI's
    ``--new-set``) ingests it as a capture of its own.

    ``cluster``: a Dask scheduler's address (``tcp://host:port``) or ``local:N``; each
    capture set is ingested on a worker and committed here (``pcapflow.cluster``; the
    dataset, captures and key logs on storage every worker sees).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(keylog, (str, os.PathLike)):
        keylog = [keylog]
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or workers < 1):
        raise ValueError(f"workers must be a positive int or 'auto', not {workers!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, not {jobs!r}")
    # Ctrl-C and SIGTERM take effect between chunks, never inside a compiled kernel
    # (pipelines.interrupts): KeyboardInterrupt, and the dataset as it was.
    interrupts.committed.clear()
    with interrupts.deferred():
        if cluster is not None:
            from .cluster import ingest_on_cluster

            if jobs > 1 or workers not in (1, "auto"):
                raise PcapflowError(
                    f"--cluster runs each capture set as one task in one worker process: "
                    f"{'--jobs' if jobs > 1 else '--workers'} does not apply (the cluster's "
                    "parallelism is its workers: dask worker --nworkers N)")
            return ingest_on_cluster(
                capture_sets(paths, sets=sets), data_dir(data), cluster,
                keylog=[str(k) for k in keylog or []],
                venues=str(venues) if venues is not None else None, packets=packets,
                app=app, limits=limits, progress=progress, resume=resume)
        return _ingest(paths, keylog, data, venues, packets, app, jobs, progress, limits,
                       workers, sets, resume)


def _pool_worker_init() -> None:
    """A ``--jobs`` worker leaves SIGINT/SIGTERM to its parent, which kills it."""
    for s in interrupts.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _in_pool(work: list[tuple], jobs: int) -> list[IngestResult]:
    """``_one`` over ``work`` in ``jobs`` processes, waiting in steps so an interrupt
    is seen at once (then the workers are killed: their staging dies with them)."""
    # (here, not at the top: multiprocessing's import is ~10 ms of every command's start)
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_pool_worker_init)
    try:
        futures = [pool.submit(_one, w) for w in work]
        for p in list(pool._processes or {}):  # started by submit
            interrupts.track(p)
        seen: set[int] = set()
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
            for k, f in enumerate(futures):
                if k not in seen and f.done() and f.exception() is None:
                    seen.add(k)
                    interrupts.done(work[k][0][0])  # a set: its first file
            interrupts.check()
            if any(f.done() and f.exception() is not None for f in futures):
                break
        results = [f.result() for f in futures]
        pool.shutdown(wait=True)
        return results
    except BaseException:
        for proc in list((pool._processes or {}).values()):
            with contextlib.suppress(OSError):
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        for p in list(pool._processes or {}):
            interrupts.untrack(p)


def _ingest(paths, keylog, data, venues, packets, app, jobs, progress, limits,
            workers, sets, resume) -> list[IngestResult]:
    root = data_dir(data)
    keys = [str(k) for k in keylog or []]
    venues_s = str(venues) if venues is not None else None
    plan = capture_sets(paths, sets=sets)
    if jobs > 1 and len(plan) > 1:
        work = [(p, str(root), packets, app, keys, venues_s, dict(limits or {}),
                 _workers(p, workers, app=app, jobs=jobs, resume=resume), resume,
                 _siblings(plan, k))
                for k, p in enumerate(plan)]
        return _in_pool(work, jobs)
    results = []
    app_factory = _app_factory(keys, limits) if app else None
    matcher = _matcher(venues_s, root) if app else None
    for k, p in enumerate(plan):
        cb = None
        if progress is not None:
            def cb(nbytes: int, npk: int, _p: str = p[0]) -> None:
                progress(_p, nbytes, npk)
        n = _workers(p, workers, app=app, jobs=1, resume=resume)  # one capture at a time
        results.append(ingest_capture(
            p, root, packets_table=packets, app_layer=app_factory,
            matcher=matcher, progress=cb, workers=n, resume=resume,
            siblings=_siblings(plan, k),
        ))
        interrupts.done(p[0])
        if results[-1].resumed_from is not None:  # a set's next file: its parts merged
            from .pipelines import compact

            results[-1].compacted = compact.after_ingest(root, results[-1].capture_id)
    return results
