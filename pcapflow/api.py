"""Library entry points the CLI and notebooks share."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path

from .dataset import data_dir
from .pipelines import interrupts
from .pipelines.ingest import IngestResult, can_shard, ingest_capture

AUTO_MAX_WORKERS = 4
"""``workers="auto"`` uses at most this many processes per capture."""
AUTO_MIN_BYTES = 16 << 20
"""``workers="auto"``: a smaller capture is ingested in one process (a fork and a
second read of the file cost more than sharding it gains)."""


def auto_workers(path: str | os.PathLike[str], *, app: bool = True, jobs: int = 1) -> int:
    """Processes ``workers="auto"`` gives one capture: the usable CPUs (at most
    ``AUTO_MAX_WORKERS``), or 1 for a small or unshardable capture (stdin), for
    ``app=False`` (the TCP layer alone runs in every process anyway), and when
    ``jobs > 1`` already ingests captures in parallel."""
    p = str(path)
    if not app or jobs > 1 or not can_shard(p) or os.path.getsize(p) < AUTO_MIN_BYTES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, AUTO_MAX_WORKERS))


def _workers(path: str | os.PathLike[str], workers: int | str, *, app: bool, jobs: int) -> int:
    """The processes one capture gets: ``workers``, or ``auto_workers`` for "auto"."""
    return auto_workers(path, app=app, jobs=jobs) if workers == "auto" else int(workers)


def _app_factory(keylog: Sequence[str | os.PathLike[str]] | None,
                 limits: Mapping[str, int | str] | None = None) -> object:
    """The application-layer stage (imported here: a TCP-only ingest never needs it)."""
    from .pipelines.connections import AppLayer
    from .pipelines.limits import Limits

    return AppLayer.factory(keylog=[str(k) for k in keylog or []],
                            limits=Limits().with_overrides(limits or {}))


def _matcher(venues: str | os.PathLike[str] | None) -> object:
    """Order/ack matching with the venue registry."""
    from .venues import make_matcher

    return make_matcher(venues)


def _one(args: tuple[str, str, bool, bool, list[str], str | None, dict[str, int | str], int]
         ) -> IngestResult:
    path, data, packets, app, keylog, venues, limits, workers = args
    return ingest_capture(
        path, Path(data), packets_table=packets,
        app_layer=_app_factory(keylog, limits) if app else None,
        matcher=_matcher(venues) if app else None,  # type: ignore[arg-type]
        workers=workers,
    )


def ingest(
    paths: Sequence[str | os.PathLike[str]],
    *,
    keylog: Sequence[str | os.PathLike[str]] | None = None,
    data: str | os.PathLike[str] | None = None,
    venues: str | os.PathLike[str] | None = None,
    packets: bool = False,
    app: bool = True,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    limits: Mapping[str, int | str] | None = None,
    workers: int | str = 1,
) -> list[IngestResult]:
    """Ingest captures into a dataset; returns one ``IngestResult`` per capture.

    >>> import pcapflow
    >>> results = pcapflow.ingest(["capture.pcap"], keylog=["keys.log"])  # doctest: +SKIP
    >>> pcapflow.open().sql("SELECT count(*) FROM flows").fetchall()  # doctest: +SKIP

    Re-ingesting a capture (same sha256) replaces its rows and touches nothing
    else. ``venues`` is a TOML venue map (see ``pcapflow.venues``). ``jobs > 1``
    ingests several captures in parallel processes. ``limits`` overrides resource
    caps by name (``pipelines.limits.Limits``, e.g. ``{"ws_max_message": "32M"}``).
    ``workers > 1`` ingests each capture with that many processes, its connections
    sharded across them (same tables; a regular file and the application layer
    only, else one process); ``"auto"``: ``auto_workers`` per capture.
    """
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or workers < 1):
        raise ValueError(f"workers must be a positive int or 'auto', not {workers!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, not {jobs!r}")
    # Ctrl-C and SIGTERM take effect between chunks, never inside a compiled kernel
    # (pipelines.interrupts): KeyboardInterrupt, and the dataset as it was.
    interrupts.committed.clear()
    with interrupts.deferred():
        return _ingest(paths, keylog, data, venues, packets, app, jobs, progress, limits,
                       workers)


def _pool_worker_init() -> None:
    """A ``--jobs`` worker leaves SIGINT/SIGTERM to its parent, which kills it."""
    for s in interrupts.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def _in_pool(work: list[tuple], jobs: int) -> list[IngestResult]:
    """``_one`` over ``work`` in ``jobs`` processes, waiting in steps so an interrupt
    is seen at once (then the workers are killed: their staging dies with them)."""
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
                    interrupts.done(work[k][0])
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
            workers) -> list[IngestResult]:
    root = data_dir(data)
    keys = [str(k) for k in keylog or []]
    venues_s = str(venues) if venues is not None else None
    if jobs > 1 and len(paths) > 1:
        work = [(str(p), str(root), packets, app, keys, venues_s, dict(limits or {}),
                 _workers(p, workers, app=app, jobs=jobs))
                for p in paths]
        return _in_pool(work, jobs)
    results = []
    app_factory = _app_factory(keys, limits) if app else None
    matcher = _matcher(venues_s) if app else None
    for p in paths:
        cb = None
        if progress is not None:
            def cb(nbytes: int, npk: int, _p: str = str(p)) -> None:
                progress(_p, nbytes, npk)
        n = _workers(p, workers, app=app, jobs=1)  # one capture at a time here
        results.append(ingest_capture(
            str(p), root, packets_table=packets, app_layer=app_factory,
            matcher=matcher, progress=cb, workers=n,  # type: ignore[arg-type]
        ))
        interrupts.done(str(p))
    return results
