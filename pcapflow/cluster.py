"""``pcapflow ingest --cluster ADDRESS``: capture sets spread over Dask workers.

How this works. The unit of work is a capture set (``api.capture_sets``): TCP, TLS
and inflate state run across a set's files, so a set is never cut, and no file is
cut by byte ranges. Each set becomes one Dask task, ``_stage_on_worker``: the worker
ingests the set into a staging directory of the shared dataset directory
(``driver.stage_capture``: the same code as a local ingest, stopped before the
commit), fsyncs it and returns the result and the directory. The client commits each
staged set under the dataset's lock as it arrives (``store.Staging.adopt(...).commit``:
the journal and atomic swap of a local ingest), so sets appear one at a time and a
reader sees a set either not at all or whole.

Resume across commands works as for a local ingest (``pipelines.ingest.resume``): the
worker finds the set a rotation's files continue, carries its parts over and stages
the new state (the connections still open) with the set's parts, so the client's
commit swaps tables and state together; a later command, local or on the cluster,
continues from it. The commit expects the continued set as the worker read it
(``store.fingerprint``): a set changed meanwhile is not overwritten (``StaleCapture``).
Each set is one task in one single-threaded worker process: ``--jobs`` and
``--workers`` (local process pools) are refused with ``--cluster``; the cluster's
parallelism is its workers (``dask worker --nworkers``).

A worker lost mid-task (killed, its host gone) leaves only its staging directory:
nothing was committed, and Dask's scheduler runs the task again on another worker
(up to ``distributed.scheduler.allowed-failures`` times). The staging directories are
named after the client (``store.cluster_owner``: ``c<pid>@<host>-w<worker pid>-...``);
``store.recover`` keeps them while the client lives, and the client removes those of
lost attempts when it ends (or, if the client dies too, the next ingest on its host).

The dataset directory, the captures and the key logs must be at the same paths on
every worker (shared storage: NFS, Lustre, a bind mount); the paths are made absolute
on the client. ``local:N`` starts a ``LocalCluster`` of N single-threaded worker
processes on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .parsers.errors import PcapflowError
from .pipelines import interrupts, store
from .pipelines.ingest import IngestResult

INSTALL_HINT = ("--cluster needs dask.distributed: pip install 'pcapflow[live]' "
                "(or pip install 'dask[distributed]')")

STAGED_MARK = "STAGED"
"""A file a worker leaves in its staging directory once every table is fsynced."""


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise PcapflowError(INSTALL_HINT) from None
    return distributed


def connect(address: str) -> tuple[Any, Any]:
    """(client, cluster started here or None) for ``address``: a scheduler's
    ``tcp://host:port``, or ``local:N`` (N worker processes on this machine)."""
    distributed = require_distributed()
    if address.startswith("local:") or address == "local":
        n = address.partition(":")[2] or str(os.cpu_count() or 1)
        if not n.isdigit() or int(n) < 1:
            raise PcapflowError(f"--cluster {address}: local:N needs a number of workers")
        cluster = distributed.LocalCluster(
            n_workers=int(n), threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR)
        return distributed.Client(cluster), cluster
    try:
        return distributed.Client(address, timeout="15s"), None
    except (OSError, TimeoutError) as err:
        raise PcapflowError(f"--cluster {address}: no Dask scheduler answers there "
                            f"({' '.join(str(err).split())})") from None


def _stage_on_worker(files: list[str], root: str, owner: str, packets: bool, app: bool,
                     keylog: list[str], venues: str | None, limits: dict[str, int | str],
                     chunk_bytes: int | None, resume: bool = True,
                     siblings: list[str] | None = None) -> tuple[IngestResult, str, str | None]:
    """The task: one capture set staged into the shared dataset, with its resume state
    (module docstring)."""
    from . import api
    from .pipelines.ingest import stage_capture
    from .pipelines.ingest.driver import DEFAULT_CHUNK_BYTES

    result, staged, expect = stage_capture(
        files, Path(root), owner=owner, packets_table=packets,
        app_layer=api._app_factory(keylog, limits) if app else None,
        matcher=api._matcher(venues, root) if app else None,
        chunk_bytes=chunk_bytes or DEFAULT_CHUNK_BYTES, resume=resume,
        siblings=siblings or ())
    (staged / STAGED_MARK).touch()
    return result, str(staged), expect


def ingest_on_cluster(
    plan: Sequence[Sequence[str]],
    root: Path,
    address: str,
    *,
    keylog: Sequence[str] = (),
    venues: str | None = None,
    packets: bool = False,
    app: bool = True,
    limits: Mapping[str, int | str] | None = None,
    chunk_bytes: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    resume: bool = True,
) -> list[IngestResult]:
    """Ingest each capture set of ``plan`` on a Dask worker; commit each here as it
    arrives. Returns the results in ``plan``'s order. The first set that fails (bad
    input) stops the rest, as a local ingest does: the sets committed before stay.
    ``resume`` as for a local ingest: a set continues the one the dataset holds state
    for, and a rotation's set keeps state for the next command."""
    if any(f == "-" for s in plan for f in s):
        raise PcapflowError("--cluster reads capture files, not stdin: write the capture "
                            "to storage every worker sees")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = [s[0] for s in plan]  # as given: what ``progress`` and the summary call them
    plan = [[os.path.abspath(f) for f in s] for s in plan]
    keys = [os.path.abspath(k) for k in keylog]
    venues = os.path.abspath(venues) if venues is not None else None
    owner = store.cluster_owner()
    client, cluster = connect(address)
    results: list[IngestResult | None] = [None] * len(plan)
    futures: dict[Any, int] = {}
    try:
        run = uuid.uuid4().hex[:8]
        for i, files in enumerate(plan):
            others = [g for j, s in enumerate(plan) if j != i for g in s]
            f = client.submit(_stage_on_worker, files, str(root), owner, packets, app, keys,
                              venues, dict(limits or {}), chunk_bytes, resume, others,
                              key=f"pcapflow-set-{run}-{i}", pure=False)
            futures[f] = i
        pending = set(futures)
        while pending:
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                i = futures[f]
                if f.status != "finished":
                    err = f.exception()
                    if isinstance(err, PcapflowError):
                        raise err
                    raise PcapflowError(f"{plan[i][0]}: failed on the cluster: "
                                        f"{type(err).__name__}: {err}{_where(f)}")
                result, staged, expect = f.result()
                interrupts.check()
                result.replaced = store.Staging.adopt(root, Path(staged)).commit(
                    result.capture_id, supersede=result.sha256s, expect=expect)
                results[i] = result
                interrupts.done(names[i])
                if progress is not None:
                    progress(names[i], result.bytes, result.packets)
            interrupts.check()
            if pending:
                time.sleep(0.05)
        return [r for r in results if r is not None]
    finally:
        # closing: the workers' heartbeats find their connections gone and log it
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        with contextlib.suppress(Exception):
            client.cancel(list(futures))
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
        _remove_leftovers(root, owner)


def _where(future: Any) -> str:
    """`` (at file:line in function)`` of the innermost frame of a failed task's
    traceback on the worker (a bug report's first clue), or ""."""
    import traceback

    try:
        frames = traceback.extract_tb(future.traceback())
    except Exception:
        return ""
    if not frames:
        return ""
    last = frames[-1]
    if os.environ.get("PCAPFLOW_CLUSTER_TRACEBACK"):  # the whole of it, for debugging
        return "\n" + "".join(traceback.format_list(frames))
    return f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"


def _remove_leftovers(root: Path, owner: str) -> None:
    """Staging directories of this client's lost or cancelled attempts."""
    sdir = root / store.STAGING
    if sdir.is_dir():
        for st in sdir.glob(f"{owner}-*"):
            shutil.rmtree(st, ignore_errors=True)
