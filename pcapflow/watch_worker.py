"""``pcapflow watch``'s ingests run in a worker process that is replaced every
``WORKER_FILES`` files: what a process's age adds to a watch's memory bounded by
construction, and an ingest's crash isolated.

Why a worker. A watch ingests a file a second to a file an hour, for days, in one
process. What the process holds on purpose is bounded (``pcapflow.watch``'s
docstring), but its RSS still grew, +0.005-0.008 MB per file over 700-800 one-second
files (``benchmarks/watch_memory.py``, sessions 14-15), while glibc's bytes in use
(``mallinfo2``), Python's live objects, DuckDB's jemalloc, Arrow's pool (the system
allocator) and glibc's thread arenas (one arena) stayed flat, and ``malloc_trim(0)``
runs after each file: pages the allocators keep at a high-water mark. A process's age
adds to that (a worker's RSS grows over its first files), and a native crash or an
out-of-memory kill in an ingest should cost a file's retry, not the service.

So, as long-running services do (gunicorn's ``max_requests``, Celery's
``worker_max_tasks_per_child`` and ``worker_max_memory_per_child``), each file's ingest
runs in a child process that is replaced after ``WORKER_FILES`` files, or sooner when
its RSS has grown ``WORKER_GROWTH_MB`` over its RSS after its first file. Everything a
file's ingest needs from earlier files is on disk (the set's resume state, under the
dataset's lock), so a new worker continues the set as the old one would have: the
tables do not depend on where workers are replaced. The worker also does the
status's reads of the dataset (``watch.file_note``); the watch process keeps the
directory's bookkeeping, the status and the metrics (whose state per capture is a few
numbers: ``metrics.ReadParts``). Not ``ProcessPoolExecutor(max_tasks_per_child=N)``:
a worker killed mid-file breaks the whole pool (``BrokenProcessPool``), its pid, which
Ctrl-C must kill at once, is private, and its default start method on Linux forks a
process that runs Arrow's, DuckDB's and the metrics server's threads. Not the whole
watch re-executed every N files either: the metrics endpoint and the status would
go away for its start each time.

What a worker does not bound (session 15, ``benchmarks/README.md``): a fresh worker
starts ~0.011 MB higher per file already in the set, as each command's peak grows
with the set (the state's header lists every file, the ``captures`` rows are written
whole), which only making those O(the file) per command ends.

Cost: a worker's start (interpreter, imports, the Numba kernels loaded from their
cache, its first DuckDB database; measured 1.2-2.2 CPU seconds more than the file it
ingests first) once per ``WORKER_FILES`` files, begun as the old one retires so that
it loads while the watch waits for the next file: ~0.2-0.4% at one-second files
(~1 CPU s each), and the RSS a worker gains in its life on top of a fresh one's
(measured: 4-6 MB over its first 100 files, +0.035-0.04 MB a file). The watch
process itself holds ~90 MB more than a process that only ingests (its own
interpreter, Arrow, Numba for ``peek``).

How this works. The worker is ``python -m pcapflow.watch_worker``; the watch writes
length-prefixed pickles to its stdin (first the ingest's arguments, then one path per
file, ``None`` to stop) and reads one reply per file from a private copy of its
stdout (the worker points its own stdout at stderr, so nothing an ingest prints can
corrupt the protocol): ``("committed", None)`` as the ingest returns, then
``("ok", (result, the status's reads: watch.file_note))`` (the result without its
``paths`` and ``sha256s``: every file of the set, which the watch does not read),
``("error", message)`` (a
``PcapflowError``: the file is not ingested, as before), ``("crash", message)`` (a
bug), each with the worker's RSS and CPU seconds. Safety:

- A worker that dies mid-file (killed, out of memory) leaves the dataset as it was:
  the commit is atomic and ``store`` rolls back what a dead process staged. The watch
  starts a new worker and ingests the file again, unless the dataset already holds it
  (the worker died after its commit, before its reply); a second death on the same
  file is reported as the file's error.
- Ctrl-C (SIGINT/SIGTERM): the worker runs in a session of its own (the terminal's
  Ctrl-C does not reach it); the watch acts on them. It stops waiting at once
  (``interrupts.check`` every 0.1 s) and sends the worker a SIGINT, which stops its
  ingest at the next safe point as in one process (a commit under way completes);
  the worker replies ``("interrupted", committed)`` and ends. After
  ``COMMIT_WAIT_S`` the watch kills it anyway, and exits 130 with its one line: the
  file in progress is left to the next run (the dataset as before), or counted among
  those kept if the worker said it committed it or the ``captures`` table holds it.
- The worker dies with the watch (``PR_SET_PDEATHSIG``), and ends on its own when its
  stdin closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .parsers.errors import PcapflowError

WORKER_FILES = 500
"""Files a worker ingests before the watch replaces it (``--worker-files``)."""

WORKER_GROWTH_MB = 256.0
"""RSS a worker may gain over its RSS after its first file before it is replaced
(sooner than ``WORKER_FILES``: large files, or memory grown for another reason)."""

COMMIT_WAIT_S = 0.5
"""Seconds a Ctrl-C waits for the worker to stop at a safe point and say whether it
committed its file, before killing it (well within ``interrupts.GRACE``, 1.2 s, after
which the command's one line is written as it stands)."""

STOP_WAIT_S = 5.0
"""Seconds a retiring worker gets to exit before it is killed."""

_HEAD = struct.Struct("<Q")


def _send(fh: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEAD.pack(len(data)) + data)
    fh.flush()


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            raise EOFError
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _recv(fd: int) -> Any:
    (n,) = _HEAD.unpack(_read_exact(fd, _HEAD.size))
    return pickle.loads(_read_exact(fd, n))


def rss_kb(pid: int | str = "self") -> int:
    """A process's resident set size (``VmRSS``), kB; 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class WorkerLost(Exception):
    """The worker ended without a reply (killed, out of memory, crashed)."""


@dataclass
class Held:
    """The result for a file whose worker died after committing it (no reply): what
    the dataset's ``captures`` row says."""

    path: str
    capture_id: str
    packets: int = 0
    seconds: float = 0.0
    resumed_from: str | None = None
    replaced: list[str] = field(default_factory=list)
    anomaly_codes: dict[str, int] = field(default_factory=dict)


class Ingested:
    """A worker's ``IngestResult`` (its attributes) with what the status reads of the
    dataset (``watch_note``: ``watch.file_note``, read by the worker)."""

    def __init__(self, result: object, note: object) -> None:
        self.result, self.watch_note = result, note

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


class _Worker:
    """One worker process and its pipes."""

    def __init__(self, args: tuple[object, ...],
                 on_commit: Callable[[str], None] | None = None) -> None:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # (the worker's imports: as the CLI's)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pcapflow.watch_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, start_new_session=True)
        from .pipelines import interrupts

        interrupts.track(self.proc.pid)  # a forced exit kills it first
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.out = self.proc.stdout.fileno()
        self.files = 0
        self.first_rss_kb = 0
        self.rss_kb = 0
        self.cpu_s = 0.0
        self.committed = False
        """The file asked for is in the dataset (its reply may not have come yet)."""
        self.on_commit = on_commit
        _send(self.stdin, args)

    def ask(self, path: str) -> tuple[str, object]:
        """Ingest ``path``; the reply (``WorkerLost`` if the worker ends first). Waits
        in steps of 0.1 s, acting on a Ctrl-C at once (``interrupts.check``)."""
        from .pipelines import interrupts

        self.committed = False
        try:
            _send(self.stdin, path)
        except (BrokenPipeError, OSError):
            raise WorkerLost(self.exit_text()) from None
        while True:
            while True:
                try:
                    interrupts.check()
                except KeyboardInterrupt:
                    self._drain()  # (a commit it said before the signal counts)
                    raise
                ready, _, _ = select.select([self.out], [], [], 0.1)
                if ready:
                    break
            try:
                kind, value, rss, cpu = _recv(self.out)
            except (EOFError, OSError, pickle.UnpicklingError):
                raise WorkerLost(self.exit_text()) from None
            if kind != "committed":
                break
            self.committed = True  # (its reply, with the status's reads, follows)
            if self.on_commit is not None:
                self.on_commit(path)
        self.files += 1
        self.rss_kb, self.cpu_s = rss, cpu
        if self.files == 1:
            self.first_rss_kb = rss
        return kind, value

    def _drain(self, wait: float = COMMIT_WAIT_S) -> None:
        """Ctrl-C: ask the worker to stop at its ingest's next safe point (SIGINT: a
        commit under way completes, as in one process) and read its replies for up to
        ``wait`` seconds, until it says whether it committed the file."""
        with contextlib.suppress(OSError):
            os.kill(self.proc.pid, signal.SIGINT)
        end = time.monotonic() + wait
        with contextlib.suppress(EOFError, OSError, pickle.UnpicklingError, ValueError):
            while True:
                left = end - time.monotonic()
                if not select.select([self.out], [], [], max(0.0, left))[0]:
                    return
                kind, value, _, _ = _recv(self.out)
                # ("committed"), ("interrupted", committed), or its reply to the file
                self.committed = kind in ("committed", "ok") or (
                    kind == "interrupted" and bool(value))
                if self.committed or kind != "committed":
                    return

    def exit_text(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=2.0)
        rc = self.proc.returncode
        if rc is None:
            return "no reply"
        return f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"

    def stop(self, kill: bool = False) -> None:
        """End the worker: ask it to (``kill``: at once), killed if it has not after
        ``STOP_WAIT_S``."""
        from .pipelines import interrupts

        if not kill:
            with contextlib.suppress(OSError, ValueError):
                _send(self.stdin, None)
        with contextlib.suppress(OSError, ValueError):
            self.stdin.close()
        if kill:
            with contextlib.suppress(OSError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdout.close()  # type: ignore[union-attr]
        interrupts.untrack(self.proc.pid)


class WorkerIngest:
    """``pcapflow watch``'s ingest of one file (a ``Callable[[str], object]`` for
    ``watch.Watcher``) in a worker process replaced every ``files`` files (module
    docstring). ``close`` ends the worker."""

    def __init__(self, data: Path, keylog: Sequence[str | os.PathLike[str]] | None,
                 venues: str | os.PathLike[str] | None,
                 limits: dict[str, int | str] | None = None, *,
                 files: int = WORKER_FILES, growth_mb: float = WORKER_GROWTH_MB,
                 on_commit: Callable[[str], None] | None = None) -> None:
        if files < 1:
            raise ValueError(f"{files}: a worker ingests at least one file")
        self.root = Path(data)
        self.args = (str(data), [os.fspath(k) for k in keylog or []],
                     os.fspath(venues) if venues is not None else None, limits)
        self.files, self.growth_mb = files, growth_mb
        self.on_commit = on_commit
        """Called with a file's path as soon as its worker says it committed it (before
        the reply: ``pcapflow watch``'s one line for a Ctrl-C counts it from then on)."""
        self.worker: _Worker | None = None
        self.started = 0
        """Workers started so far."""
        self.lost = 0
        """Workers that ended without a reply (each file they held ingested again)."""
        self.retired_cpu_s = 0.0
        """CPU seconds of the workers that ended (their last reply's)."""

    def __call__(self, path: str) -> object:
        lost = ""
        for _ in range(2):
            w = self._worker()
            try:
                kind, value = w.ask(path)
            except WorkerLost as err:
                lost = str(err)
                self.lost += 1
                self._drop(kill=True)
                held = _held(self.root, path)
                if held is not None:
                    return held
                continue
            except BaseException:  # Ctrl-C while it works: the next run takes the file
                self._drop(kill=True)
                # unless its commit came first: the watch's one line counts it (said by
                # the worker, or, killed between its commit and saying so, in the table)
                said = w.committed
                if not said:
                    with contextlib.suppress(Exception):
                        said = _held(self.root, path) is not None
                if said:
                    from .pipelines import interrupts

                    interrupts.done(path)
                raise
            self._maybe_retire()
            if kind == "ok":
                done: tuple[object, object] = value  # type: ignore[assignment]
                return Ingested(*done)
            if kind == "error":
                raise PcapflowError(str(value))
            raise PcapflowError(f"the ingest failed: {value} (a bug: please report it)")
        raise PcapflowError(f"the ingest worker ended twice on this file ({lost}); "
                            "the dataset is as before")

    @property
    def cpu_s(self) -> float:
        """CPU seconds of every worker so far (the live one's as of its last reply)."""
        return self.retired_cpu_s + (self.worker.cpu_s if self.worker is not None else 0.0)

    @property
    def pid(self) -> int | None:
        return self.worker.proc.pid if self.worker is not None else None

    def rss_kb(self) -> int:
        """The live worker's resident set size now, kB (0: none)."""
        return rss_kb(self.worker.proc.pid) if self.worker is not None else 0

    def _worker(self) -> _Worker:
        if self.worker is None or self.worker.proc.poll() is not None:
            if self.worker is not None:
                self._drop(kill=True)
            self.worker = _Worker(self.args, self.on_commit)
            self.started += 1
        return self.worker

    def _maybe_retire(self) -> None:
        w = self.worker
        if w is None:
            return
        grown = (w.rss_kb - w.first_rss_kb) / 1024
        if w.files >= self.files or grown > self.growth_mb:
            self._drop()
            self._worker()  # the next one loads while the watch waits for a file

    def _drop(self, kill: bool = False) -> None:
        w, self.worker = self.worker, None
        if w is not None:
            self.retired_cpu_s += w.cpu_s
            w.stop(kill=kill)

    def close(self) -> None:
        self._drop()


def _held(root: Path, path: str) -> Held | None:
    """``path``'s ``captures`` row, if the dataset holds it now (a dead worker's commit
    may have landed before its reply): its first packet within the row's range."""
    from .parsers.capture.capset import peek
    from .watch import strip_compression

    part = root / "captures"
    if not part.is_dir():
        return None
    try:
        first = peek(path).first_ts
    except (PcapflowError, OSError, EOFError, ValueError):
        first = None
    import pyarrow as pa
    import pyarrow.dataset as pads

    hive = pads.HivePartitioning(pa.schema([("capture_id", pa.string())]))
    want = strip_compression(os.path.abspath(path))
    t = pads.dataset(part, format="parquet", partitioning=hive).to_table(
        columns=["capture_id", "path", "first_ts", "last_ts", "packets"])
    cols = [t.column("capture_id").to_pylist(), t.column("path").to_pylist(),
            t.column("first_ts").cast(pa.int64()).to_pylist(),
            t.column("last_ts").cast(pa.int64()).to_pylist(), t.column("packets").to_pylist()]
    for cid, p, a, b, n in zip(*cols, strict=True):
        if p is None or strip_compression(os.path.abspath(p)) != want:
            continue
        if first is None or (a or 0) <= first <= (b or 0):
            return Held(path=path, capture_id=cid, packets=int(n or 0), resumed_from=path)
    return None


# -- the worker ---------------------------------------------------------------------


def _serve() -> int:
    """The worker's loop (``python -m pcapflow.watch_worker``; module docstring)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)  # the watch stops it
    with contextlib.suppress(OSError, AttributeError):  # die with the watch (Linux)
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # what an ingest prints goes to stderr, not into the replies
    sys.stdout = sys.stderr
    reply = os.fdopen(reply_fd, "wb")
    inp = sys.stdin.fileno()
    from . import watch
    from .pipelines import interrupts
    from .pipelines.match import close_database

    watch.ALLOCATOR.for_a_long_run()  # before the first ingest starts Arrow's threads
    from .pipelines.ingest import driver

    driver.SET_LISTS = False  # (the set's paths: O(set), and dropped below)
    try:
        data, keylog, venues, limits = _recv(inp)
    except EOFError:
        return 0
    ingest = watch.watch_ingest(Path(data), keylog or None, venues, limits)
    n = 0
    while True:
        try:
            path = _recv(inp)
        except EOFError:
            return 0
        if path is None:
            return 0
        out: tuple[str, object]
        started = time.time_ns()
        try:
            result = ingest(path)
            _send(reply, ("committed", None, rss_kb(), time.process_time()))
            note = watch.file_note(Path(data), result, path, started)
            with contextlib.suppress(TypeError, ValueError):  # (not an IngestResult)
                # every file of the set and its hash: O(set), and the watch reads neither
                result = dataclasses.replace(result, paths=[], sha256s=[])  # type: ignore[type-var]
            out = ("ok", (result, note))
        except KeyboardInterrupt:  # the watch's Ctrl-C (or a signal sent to it alone)
            with contextlib.suppress(OSError, ValueError):
                _send(reply, ("interrupted", bool(interrupts.committed), rss_kb(),
                              time.process_time()))
            os._exit(interrupts.EXIT_CODE)
        except PcapflowError as err:
            out = ("error", str(err))
        except Exception as err:  # a bug: said as such by the watch, not a dead worker
            out = ("crash", f"{type(err).__name__}: {err}")
        interrupts.committed.clear()
        n += 1
        if n % watch.RECYCLE_FILES == 0:
            close_database()  # (before the trim: what it held goes back too)
        watch.ALLOCATOR.release()
        _send(reply, (*out, rss_kb(), time.process_time()))


if __name__ == "__main__":
    sys.exit(_serve())
