"""``pcapflow watch DIR``: follow a directory where a capture rotates, ingesting each
file once it is complete, in order, exactly once.

How this works. Every ``poll`` seconds the directory is listed. Its capture files
(known by their first bytes) are grouped by recording (``capset.recording_name``:
the names of a ``tcpdump -G/-C/-W`` rotation or a dumpcap ring buffer differ only
in digits; ``x.pcap`` and ``x.pcap.gz`` are one file before and after ``-z gzip``)
and each group is ordered by its files' first packets (``capset.peek``). Walking a
group in that order, a file is ingested when it is *complete*, and the walk stops at
the first file that is not (so files go in in order):

- no process holds it open for writing (``/proc/*/fd``, when every process's
  descriptors can be read: as root, or as the writer's user), or, when that cannot
  be known, a later file of the recording has begun or it has not changed for
  ``idle`` seconds; and
- its size and mtime have not changed for ``settle`` seconds (tcpdump ``-z`` starts
  its compressor a moment after closing the file); and
- no compression of it is running: ``x.pcap`` beside ``x.pcap.gz`` waits, and the
  ``.gz`` is taken once ``x.pcap`` is gone (gzip removes it when done).

Each file is ingested through ``pcapflow.ingest`` as it is, so everything ingest
does holds (resuming the connections the previous file of the recording left open,
atomic commit under the dataset's lock).

What was ingested is read from the dataset's ``captures`` table, so a restarted
watch continues where it stopped: a file is *done* when its name (compression
suffix aside) is in the table and its first packet lies within the recorded
packets' time range (a ring buffer that reuses the name for new packets starts
after that range: it is new). A file is ingested at most once per content, and a
file that is complete is never skipped.

A file the recording took back before it was ingested is *lost*, and said so
(``Status.files_lost``, the ``on_lost`` callback: a warning on the terminal,
``pcapflow_watch_files_lost`` in the metrics): a ring buffer (``tcpdump -W``,
``dumpcap -b files:N``) reused its name for later packets, or deleted it, while it
held packets the watch had seen and not ingested (or was reading). The watch is then behind its
recording: more or larger ring files, or a faster disk, give it room.

Memory stays bounded over days: what is kept per file is for files still in the
directory (a ring buffer deletes old ones), the latency samples behind the status
line are a fixed window per venue, and the metrics are cumulative counts. What the
ingests free is given back to the system after each file (``Allocator``): glibc's
malloc keeps a heap per thread ("arena") and gives back only the main one's free
memory when asked, so each file's helper threads (the Parquet writer, Arrow's and
the hashing threads) left their arenas at their peak, a little more each file.
``pcapflow watch`` ingests in a worker process it replaces every
``watch_worker.WORKER_FILES`` files (``pcapflow.watch_worker``: what a process's age
adds is bounded, not what a command's peak adds as the set grows); the status's reads
of the dataset are done there too (``file_note``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .parsers.capture.capset import COMPRESSED_SUFFIXES, looks_like_capture, peek, recording_name
from .parsers.errors import PcapflowError
from .pipelines import interrupts

RECENT_ORDERS = 2000
"""Latencies per venue behind the status line's p50/p99 (the most recent ones)."""

DEFAULT_POLL_S = 1.0
DEFAULT_SETTLE_S = 1.0
DEFAULT_IDLE_S = 60.0


class Allocator:
    """glibc's malloc, set for a long-lived process (Linux with glibc; elsewhere a no-op).

    Measured (``benchmarks/watch_memory.py``, 3M-packet files, one capture set): the
    RSS a watch kept growing between files was all in glibc's per-thread arenas (the
    mappings at 64 MiB boundaries), 20 -> 56 MB over three files and on, while the
    bytes in use (``mallinfo2``), Python's objects, Arrow's pool and DuckDB's own
    allocator (jemalloc) stayed flat. An arena frees its top only beyond the trim
    threshold, which glibc raises up to 64 MiB as large blocks are freed, and
    ``malloc_trim`` trims only the main heap's top; every file's new threads attach
    to some arena, each growing to its own peak. ``M_ARENA_MAX`` 1 puts every thread's
    blocks in the main heap, where ``release`` (``malloc_trim(0)`` after each file,
    ~ms) gives back every free page. Set before the ingest's threads start: arenas
    made earlier stay (new threads may still be given them).
    """

    M_ARENA_MAX = -8
    ARENAS = 1

    def __init__(self) -> None:
        self.libc: ctypes.CDLL | None = None
        if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
            with contextlib.suppress(OSError, AttributeError, ValueError):
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                self.libc = libc

    def for_a_long_run(self) -> None:
        """One arena for every thread (``M_ARENA_MAX``; the user's ``MALLOC_ARENA_MAX``
        wins)."""
        if self.libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
            self.libc.mallopt(self.M_ARENA_MAX, self.ARENAS)

    def release(self) -> None:
        """Give the free pages of glibc's heap back to the system (and of Arrow's own
        allocator, where the user chose one: ``ARROW_DEFAULT_MEMORY_POOL``)."""
        if self.libc is not None:
            self.libc.malloc_trim(0)
        arrow = sys.modules.get("pyarrow")
        if arrow is not None and arrow.default_memory_pool().backend_name != "system":
            arrow.default_memory_pool().release_unused()


ALLOCATOR = Allocator()

RECYCLE_FILES = 16
"""Files after which the watch closes the matcher's DuckDB database (it grows ~0.08 MB
per file while open: ``pipelines.match.close_database``); reopening costs ~0.04 s."""


def strip_compression(path: str) -> str:
    for suffix in COMPRESSED_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


@dataclass(slots=True)
class FileState:
    """What the watch knows of one file in the directory."""

    path: str
    stat: tuple[int, int, int]
    """(inode, size, mtime_ns) when last looked at."""
    since: float
    """Monotonic time the stat was first seen as it is."""
    first_ts: int | None = None
    peeked: tuple[int, int, int] | None = None
    done: bool = False
    failed: bool = False


@dataclass
class VenueWindow:
    """The most recent order-to-ack latencies of a venue (bounded)."""

    latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_ORDERS))

    def quantiles(self) -> tuple[float, float] | None:
        if not self.latency_ns:
            return None
        a = np.fromiter(self.latency_ns, dtype=np.int64, count=len(self.latency_ns))
        p50, p99 = np.quantile(a, [0.5, 0.99])
        return float(p50), float(p99)


@dataclass
class Status:
    """What the terminal shows (and ``pcapflow_watch_*`` metrics export)."""

    files_behind: int = 0
    files_ingested: int = 0
    last_file: str = ""
    last_packets: int = 0
    last_seconds: float = 0.0
    orders_per_s: float = 0.0
    """Orders per second of capture time in the last file ingested."""
    venues: dict[str, VenueWindow] = field(default_factory=dict)
    waiting: str = ""
    files_lost: int = 0
    """Files the recording reused or deleted before they were ingested (lost)."""
    last_lost: str = ""
    ids_forgotten: int = 0
    """Rows of the last file's command that may name an order whose ids the set's
    matcher state forgot (``order_ids_forgotten`` anomalies: ``match_carry.IdBound``)."""


def writers(paths: set[str]) -> tuple[set[str], bool]:
    """The ``paths`` another process has open for writing, and whether that is known
    (every process's descriptors readable). Linux ``/proc``; elsewhere: unknown."""
    found: set[str] = set()
    reliable = True
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found, False
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            continue  # ended meanwhile
        except OSError:
            reliable = False
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in paths and _opened_for_write(pid, fd):
                found.add(target)
    return found, reliable


def _opened_for_write(pid: int, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & 3 != 0  # O_WRONLY or O_RDWR
    except (OSError, ValueError, IndexError):
        pass
    return True  # cannot tell: assume the worst


def ingested_files(root: Path) -> dict[str, tuple[int, int]]:
    """Files in the dataset: path (compression suffix stripped) -> (first, last packet
    time in ns) from the ``captures`` table (several ingests of a name: the widest)."""
    part = root / "captures"
    if not part.is_dir() or not any(part.glob("capture_id=*/*.parquet")):
        return {}
    import pyarrow as pa
    import pyarrow.dataset as pads

    hive = pads.HivePartitioning(pa.schema([("capture_id", pa.string())]))
    t = pads.dataset(part, format="parquet", partitioning=hive).to_table(
        columns=["path", "first_ts", "last_ts"])
    out: dict[str, tuple[int, int]] = {}
    paths = t.column("path").to_pylist()
    lo = t.column("first_ts").cast(pa.int64()).to_pylist()
    hi = t.column("last_ts").cast(pa.int64()).to_pylist()
    for p, a, b in zip(paths, lo, hi, strict=True):
        if p is None:
            continue
        k = strip_compression(os.path.abspath(p))
        a, b = a or 0, b or 0
        old = out.get(k)
        out[k] = (a, b) if old is None else (min(old[0], a), max(old[1], b))
    return out


class Watcher:
    """Follows ``directory`` and ingests its completed capture files into ``root``."""

    def __init__(self, directory: Path, root: Path, ingest: Callable[[str], object], *,
                 poll: float = DEFAULT_POLL_S, settle: float = DEFAULT_SETTLE_S,
                 idle: float = DEFAULT_IDLE_S,
                 on_file: Callable[[str, object], None] | None = None,
                 on_error: Callable[[str, PcapflowError], None] | None = None,
                 on_lost: Callable[[str, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        ALLOCATOR.for_a_long_run()  # before the first read starts Arrow's threads
        from . import dataset

        dataset.SHARED_DATABASE = False  # (a long-lived process: ``dataset.SHARED_DATABASE``)
        self.directory = directory.resolve()
        self.root = root
        self.ingest_one = ingest
        self.poll, self.settle, self.idle = poll, settle, idle
        self.on_file = on_file
        self.on_error = on_error
        self.on_lost = on_lost
        self.clock = clock
        self.files: dict[str, FileState] = {}
        self.seen = ingested_files(root)
        self.status = Status()

    # -- one pass -----------------------------------------------------------------

    def scan(self) -> list[FileState]:
        """The capture files now in the directory (state kept for them only)."""
        now = self.clock()
        present: dict[str, FileState] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            raise PcapflowError(f"{self.directory}: the watched directory is gone") from None
        for e in entries:
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            old = self.files.get(e.path)
            if old is not None and old.stat[0] == st.st_ino:
                if old.stat != key:  # written to, or a ring buffer's name reused
                    seen_ts, was_done, size = old.first_ts, old.done, old.stat[1]
                    old.stat, old.since, old.failed, old.done = key, now, False, False
                    if seen_ts is not None and not was_done and (
                            st.st_size < size or self._first_ts(old) not in (None, seen_ts)):
                        # a file being written keeps its first packet: this one was
                        # truncated for new packets (a ring buffer wrapped)
                        self._lost_at(old.path, seen_ts)
                present[e.path] = old
            elif st.st_size >= 4 and looks_like_capture(e.path):
                if old is not None:
                    self._check_gone(old, present_names=None)
                present[e.path] = FileState(e.path, key, now)
        names = {strip_compression(p) for p in present}
        for path, old in self.files.items():
            if path not in present:
                self._check_gone(old, present_names=names)
        self.files = present  # files gone from the directory are forgotten
        # names gone from the directory need no memory either (bounded over days)
        keep = {strip_compression(p) for p in present}
        self.seen = {k: v for k, v in self.seen.items() if k in keep}
        return list(present.values())

    def _check_gone(self, f: FileState, present_names: set[str] | None) -> None:
        """``f``'s path is gone or holds another file now: lost if it had packets not
        ingested (a file compressed meanwhile lives on as ``x.pcap.gz``)."""
        if f.done or f.failed or f.first_ts is None:
            return
        if present_names is not None and strip_compression(f.path) in present_names:
            return  # renamed by the compressor, or its .gz now decompressed
        self._lost_at(f.path, f.first_ts)

    def _lost_at(self, path: str, first_ts: int) -> None:
        self.status.files_lost += 1
        self.status.last_lost = os.path.basename(path)
        if self.on_lost is not None:
            self.on_lost(path, first_ts)

    def _first_ts(self, f: FileState) -> int | None:
        if f.peeked != f.stat:
            try:
                f.first_ts = peek(f.path).first_ts
            except (PcapflowError, OSError, EOFError, ValueError):
                f.first_ts = None  # a header still being written, or gone
            f.peeked = f.stat
        return f.first_ts

    def _already(self, f: FileState) -> bool:
        """Whether the dataset holds this file (see the module docstring)."""
        span = self.seen.get(strip_compression(f.path))
        if span is None:
            return False
        ts = self._first_ts(f)
        return ts is None or span[0] <= ts <= span[1]

    def plan(self, files: list[FileState]) -> list[list[FileState]]:
        """Not-done files grouped by recording, each group in order of first packet."""
        groups: dict[tuple[str, str, tuple[int, ...]], list[FileState]] = {}
        for f in files:
            if f.done:
                continue
            if self._already(f):
                f.done = True
                continue
            groups.setdefault(recording_name(strip_compression(f.path)), []).append(f)
        out = []
        for members in groups.values():
            members.sort(key=lambda f: (self._first_ts(f) is None, self._first_ts(f) or 0,
                                        f.path))
            out.append(members)
        return out

    def complete(self, f: FileState, later: bool, open_w: set[str], reliable: bool,
                 names: set[str]) -> bool:
        now = self.clock()
        if now - f.since < self.settle:
            return False
        if any(f.path + s in names for s in COMPRESSED_SUFFIXES):
            return False  # being compressed: its .gz follows
        if strip_compression(f.path) != f.path and strip_compression(f.path) in names:
            return False  # the compressor is still writing this
        if f.path in open_w:
            return False
        if reliable:
            return True  # closed by its writer
        if not later and now - f.since < self.idle:
            return False
        # a header still being written (no packet yet) waits for the idle time too
        return self._first_ts(f) is not None or now - f.since >= self.idle

    def step(self) -> int:
        """One pass: ingest every complete file, in order. Returns how many."""
        files = self.scan()
        groups = self.plan(files)
        pending = [f for g in groups for f in g]
        open_w, reliable = writers({f.path for f in pending}) if pending else (set(), True)
        names = {f.path for f in files}
        ready: list[FileState] = []
        for g in groups:
            for i, f in enumerate(g):
                if f.failed:
                    continue
                if not self.complete(f, i + 1 < len(g), open_w, reliable, names):
                    break
                ready.append(f)
        self.status.files_behind = len(ready)
        done = 0
        for f in ready:
            interrupts.check()
            self.status.waiting = os.path.basename(f.path)
            started = time.time_ns()
            try:
                result = self.ingest_one(f.path)
            except PcapflowError as err:
                if not os.path.exists(f.path):
                    continue  # renamed or compressed meanwhile: the next pass finds it
                f.failed = True  # tried again only once the file changes
                if self.on_error is None:
                    raise
                self.on_error(f.path, err)
                continue
            f.done = True
            done += 1
            self.status.files_behind -= 1
            self._note(f, result, started)
            if self.status.files_ingested % RECYCLE_FILES == 0:
                # (before the trim: what it held goes back too) The matcher's database
                # is the ingesting process's: with a worker (``pcapflow.watch_worker``)
                # this one has none, and is not made to import the matcher to close
                # nothing (+0.07 MB of RSS at its 16th file, measured)
                match = sys.modules.get(f"{__package__}.pipelines.match")
                if match is not None:
                    match.close_database()
            ALLOCATOR.release()  # what the ingest and the metrics refresh freed
            with contextlib.suppress(OSError):  # gone: compressed meanwhile, intact
                st = os.stat(f.path)
                if (st.st_ino, st.st_size, st.st_mtime_ns) != f.stat and f.first_ts:
                    # the ring came back to it while it was read: what it read may lack
                    # packets (the new ones are ingested as the next file)
                    self._lost_at(f.path, f.first_ts)
        self.status.waiting = ""
        return done

    def _note(self, f: FileState, result: object, started: int | None = None) -> None:
        """Record an ingested file (restart bookkeeping, status); ``started``: when its
        ingest began (ns, wall clock: the parts it wrote are read, not the set's). What
        the status reads of the dataset comes with the result when a worker ingested it
        (``watch_note``: ``pcapflow.watch_worker``), so this process reads no table."""
        note = getattr(result, "watch_note", None)
        if not isinstance(note, FileNote):
            note = file_note(self.root, result, f.path, started)
        span = note.span
        k = strip_compression(f.path)
        old = self.seen.get(k)
        if span is not None:
            self.seen[k] = span if old is None else (min(old[0], span[0]), max(old[1], span[1]))
        st = self.status
        st.files_ingested += 1
        st.last_file = os.path.basename(f.path)
        st.last_packets = int(getattr(result, "packets", 0))
        st.last_seconds = float(getattr(result, "seconds", 0.0))
        codes = getattr(result, "anomaly_codes", None) or {}
        st.ids_forgotten = int(codes.get("order_ids_forgotten", 0))
        for venue, values in note.latencies.items():
            st.venues.setdefault(venue, VenueWindow()).latency_ns.extend(values)
        if span is not None and span[1] > span[0]:
            st.orders_per_s = note.orders / ((span[1] - span[0]) / 1e9)
        if self.on_file is not None:
            self.on_file(f.path, result)

    def run(self, *, until: Callable[[], bool] | None = None,
            on_pass: Callable[[Watcher], None] | None = None) -> None:
        """Poll until interrupted (``KeyboardInterrupt`` at a safe point) or ``until()``."""
        with interrupts.deferred():
            while True:
                self.step()
                if on_pass is not None:
                    on_pass(self)
                if until is not None and until():
                    return
                end = self.clock() + self.poll
                while self.clock() < end:
                    interrupts.check()
                    time.sleep(min(0.1, max(0.0, end - self.clock())))


@dataclass
class FileNote:
    """What the status reads of the dataset after a file's ingest (``file_note``)."""

    span: tuple[int, int] | None
    """(first, last packet time) of the file's ``captures`` row."""
    latencies: dict[str, list[int]]
    """The file's order-to-ack latencies per venue, oldest first."""
    orders: int
    """The file's orders."""


def file_note(root: Path, result: object, path: str, started: int | None) -> FileNote:
    """The status's reads of a file just ingested (``Watcher._note``): its span, and its
    own orders and latencies (a resumed set's tables hold the earlier files' too: those
    from its first packet on, in the parts written since ``started``, ns)."""
    cid = getattr(result, "capture_id", "")
    span = _capture_span(root, cid, path)
    since = span[0] if span is not None and getattr(result, "resumed_from", None) else None
    written = started - WRITTEN_SLACK_NS if since is not None and started else None
    return FileNote(span, _latencies(root, cid, since, written),
                    _count_since(root, "orders", cid, since, written))


WRITTEN_SLACK_NS = 5 * 10**9
"""A part whose mtime is this much before an ingest began is still read as one it may
have written (a file system's clock a little behind this host's)."""


def _partition_files(root: Path, table: str, capture_id: str,
                     written: int | None = None) -> list[str]:
    """The capture's parts of ``table``; ``written``: only those modified from then on
    (ns): a resumed set's command wrote its own parts, the set's earlier ones stay as
    they were, and reading them all made each file's status cost grow with the set."""
    if not capture_id:
        return []
    part = root / table / f"capture_id={capture_id}"
    out = []
    try:  # (a stream of entries, one at a time: the partition has parts of every file)
        with os.scandir(part) as it:
            for e in it:
                if not e.name.endswith(".parquet"):
                    continue
                if written is not None:
                    try:
                        if e.stat().st_mtime_ns < written:
                            continue
                    except OSError:
                        continue
                out.append(e.path)
    except FileNotFoundError:
        return []
    return sorted(out)


def _capture_span(root: Path, capture_id: str, path: str) -> tuple[int, int] | None:
    """(first, last packet time) of ``path``'s row in the capture's ``captures`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _partition_files(root, "captures", capture_id)
    if not files:
        return None
    import pyarrow.compute as pc

    t = pa.concat_tables(pq.read_table(p, columns=["path", "first_ts", "last_ts"])
                         for p in files)
    want = strip_compression(os.path.abspath(path))
    # (the rows whose path has the file's stem, in Arrow: a few compared in Python, not a
    # row per file of the set)
    stem = strip_compression(os.path.basename(path))
    t = t.filter(pc.match_substring(t.column("path"), stem))
    for p, a, b in zip(t.column("path").to_pylist(),
                       t.column("first_ts").cast(pa.int64()).to_pylist(),
                       t.column("last_ts").cast(pa.int64()).to_pylist(), strict=True):
        if p is not None and strip_compression(os.path.abspath(p)) == want:
            return (a or 0, b or 0)
    return None


def _since_filter(since: int | None, column: str) -> object:
    """A Parquet read filter: ``column >= since`` (ns), or None for every row."""
    if since is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.field(column) >= pa.scalar(since, pa.timestamp("ns", tz="UTC"))


def _latencies(root: Path, capture_id: str, since: int | None = None,
               written: int | None = None) -> dict[str, list[int]]:
    """The capture's order-to-ack latencies (ack leg), per venue, oldest first; with
    ``since``: those whose ack came from then on (the file just ingested: an order of
    the file before, acked in this one, is counted now, once), read from the parts
    modified from ``written`` on (``_partition_files``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = _partition_files(root, "latency", capture_id, written)
    if not files:
        return {}
    t = pa.concat_tables(pq.read_table(p, columns=["venue", "leg", "order_ts", "latency_ns"],
                                       filters=_since_filter(since, "ack_ts"))
                         for p in files)
    t = t.filter(pc.and_(pc.equal(t.column("leg"), "ack"),
                         pc.is_valid(t.column("latency_ns")))).sort_by("order_ts")
    out: dict[str, list[int]] = {}
    for v, n in zip(t.column("venue").to_pylist(), t.column("latency_ns").to_pylist(),
                    strict=True):
        out.setdefault(v or "?", []).append(int(n))
    return out


def _count_since(root: Path, table: str, capture_id: str, since: int | None,
                 written: int | None = None) -> int:
    """Rows of the capture's ``table`` (with ``since``: those with ``ts`` from then on,
    in the parts modified from ``written`` on)."""
    import pyarrow.parquet as pq

    files = _partition_files(root, table, capture_id, written)
    if since is None:
        return sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    return sum(pq.read_table(p, columns=["ts"], filters=_since_filter(since, "ts")).num_rows
               for p in files)


def status_lines(st: Status, width: int = 100) -> list[str]:
    """The status as lines of text (the terminal view and the plain log)."""
    head = (f"files behind {st.files_behind}, ingested {st.files_ingested}"
            + (f", last {st.last_file} ({st.last_packets:,} packets in "
               f"{st.last_seconds:.2f} s, {st.orders_per_s:,.1f} orders/s)"
               if st.last_file else "")
            + (f", ingesting {st.waiting}" if st.waiting else "")
            + (f", LOST {st.files_lost} (last {st.last_lost})" if st.files_lost else ""))
    lines = [head]
    if st.ids_forgotten:
        lines.append(f"  {st.ids_forgotten} rows may name orders older than the matcher "
                     "remembers (order_ids_forgotten): raise --limit resume_order_ids_s "
                     "or resume_order_ids")
    for venue in sorted(st.venues):
        q = st.venues[venue].quantiles()
        if q is not None:
            lines.append(f"  {venue:<12} p50 {q[0] / 1e3:>10,.1f} µs   p99 {q[1] / 1e3:>10,.1f} µs"
                         f"   (last {len(st.venues[venue].latency_ns):,} orders)")
    return [ln[:width] for ln in lines]


def one_line(st: Status) -> str:
    """The status as one plain line (a log when stdout is not a terminal)."""
    parts = [f"ingested {st.last_file}: {st.last_packets:,} packets, "
             f"{st.orders_per_s:,.1f} orders/s; behind {st.files_behind}"
             + (f"; lost {st.files_lost}" if st.files_lost else "")
             + (f"; order_ids_forgotten {st.ids_forgotten}" if st.ids_forgotten else "")]
    for venue in sorted(st.venues):
        q = st.venues[venue].quantiles()
        if q is not None:
            parts.append(f"{venue} p50 {q[0] / 1e3:,.1f} µs p99 {q[1] / 1e3:,.1f} µs")
    return "; ".join(parts)


def watch_ingest(data: Path, keylog: Sequence[str | os.PathLike[str]] | None,
                 venues: str | os.PathLike[str] | None,
                 limits: dict[str, int | str] | None = None) -> Callable[[str], object]:
    """The ingest of one completed file: ``pcapflow.ingest`` of that file alone (it
    resumes the connections the recording's previous file left open)."""
    from . import api, dataset

    dataset.SHARED_DATABASE = False  # (a long-lived process: ``dataset.SHARED_DATABASE``)

    def one(path: str) -> object:
        results = api.ingest([[path]], keylog=keylog, data=data, venues=venues,
                             limits=limits)
        with contextlib.suppress(Exception):
            interrupts.committed.clear()  # the watch's own line says what is kept
        return results[0]

    return one
