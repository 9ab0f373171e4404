"""The on-disk dataset: staged writes and an atomic, recoverable commit.

How this works. A dataset is a directory with one sub-directory per table,
hive-partitioned by capture: ``DATA/<table>/capture_id=<id>/part-<n>.parquet``.
An ingest never writes there directly:

1. ``Staging`` writes every table of one capture under ``DATA/.staging/<txn>/``,
   row group by row group (memory stays bounded), and fsyncs the files.
2. ``commit`` takes the dataset lock (``DATA/.lock``, ``flock``), writes a journal
   ``DATA/.journal/<txn>.json`` listing the moves (old partitions of that capture
   to ``DATA/.trash/<txn>/``, staged partitions into place), fsyncs it, then
   performs the moves, then deletes the journal and the trash.
3. ``recover`` (run under the lock before every read or commit) finishes any
   journal left by a killed process: each move is idempotent, so rolling forward
   always ends in the "after" state. Staging directories of dead processes are
   removed; without a journal they were never visible.

So a reader sees a capture either exactly as before an ingest or exactly as
after it, whatever moment the ingest was killed at; two ingests into the same
dataset serialise on the lock during their (short) commits.

Append mode. A rotation's next file (``pipelines.ingest.resume``) adds a few parts
to a set of thousands: swapping whole partitions would move, and later unlink,
every part of the set each command. Its staging directory holds only its own
parts and ``APPEND`` (``_append.json``): per table, the set's parts it replaces
(its provisional ``part-t*``). The journal of such a commit lists file moves
instead of partition moves for those tables: each staged part into the
partition, each replaced part to the trash. A move of a file is the same
idempotent step as a partition's, so the journal, its commit point and the roll
forward are unchanged: the commit costs this command's parts, not the set's.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import shutil
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..parsers.errors import PcapflowError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

# pyarrow and the table schemas (which import every protocol's parser) load on
# first use: a read-only command (``pcapflow query``) only needs ``locked`` and
# ``recover`` from here.


def __getattr__(name: str) -> object:
    if name == "TABLES":
        from .tables.schemas import TABLES

        return TABLES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

WRITE_QUEUE = 8
"""Batches waiting for the writer thread before ``write`` blocks."""
GROUP_ROWS = 1 << 17
GROUP_BYTES = 8 << 20
"""The writer thread holds a table's batches until they reach this many rows or bytes
(Arrow buffers), then writes them as one row group (``Staging._work``): the ingest
hands over one batch per chunk of the capture (``tcp_events``: ~1,500 rows each on
plain TCP, ``tcp_rtt`` ~160), and each row group costs its column chunks, pages,
statistics and compressor set-up whatever its size. On the 1M-packet benchmark
capture, 92 small row groups took ~60 ms of the writer's CPU; grouped, ~25 ms. 2^17
rows is about DuckDB's own row group (122,880 rows), the unit it reads in parallel."""

HIGH_CARDINALITY = frozenset({
    "payload", "body", "text", "detail",  # free text: message bodies, FIX 58, anomalies
    "path", "sha256",  # request targets (query strings, signatures); the capture's file
    "sending_time",  # FIX 52, one per message
    "cl_ord_id", "orig_cl_ord_id", "order_id",  # FIX order ids
    "correlation_id", "request_id", "client_order_id", "orig_client_order_id",
    "target_order_id", "exchange_order_id",  # order and request ids
})
"""String columns (in any table) whose values nearly never repeat."""


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of ``schema`` written with Parquet dictionary encoding.

    Only the top-level strings that repeat: ``direction``, ``opcode``, ``kind``,
    ``venue``, ``endpoint``, codes, names, addresses. Arrow's default (a
    dictionary for every column, given up for plain encoding once its page passes
    1 MiB) costs time and space everywhere else: times, offsets, lengths and RTTs
    are nearly all distinct, small codes (``content_type``...) compress as well
    plain, and ids and free text never repeat (``HIGH_CARDINALITY``). Nested
    columns (``headers``, ``fields``) stay plain too: their values are mostly
    unique, and zstd takes repeated names about as well as a dictionary (measured
    on ``direction`` and ``opcode``: the same file size either way). On a
    408k-message WebSocket capture this cut the writer's CPU time for
    ``ws_messages``, ``tls_records`` and ``tcp_rtt`` by about a quarter (~0.66 s
    to ~0.49 s) and their files from 39 to 31 MB.
    (Turning ``write_statistics`` off or changing ``data_page_size`` gained
    nothing measurable there, so those keep Arrow's defaults: the statistics let
    DuckDB skip row groups.)
    """
    import pyarrow as pa

    return [f.name for f in schema
            if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            and f.name not in HIGH_CARDINALITY]


def delta_columns(schema: pa.Schema) -> dict[str, str]:
    """Integer and timestamp columns, written ``DELTA_BINARY_PACKED``: times,
    offsets and lengths rise slowly row to row, so their deltas pack into few bits
    (measured on the same capture: writer CPU ~0.48 s -> ~0.38 s, files 31 -> 29 MB;
    DuckDB and Arrow read it)."""
    import pyarrow as pa

    return {f.name: "DELTA_BINARY_PACKED" for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)}


STAGING, JOURNAL, TRASH, LOCK = ".staging", ".journal", ".trash", ".lock"
APPEND = "_append.json"
"""Staging file of an append-mode commit (module docstring): ``{"capture_id": id,
"drop": {table: [the partition's files, relative, that this commit replaces]}}``;
the tables named there get their staged files added instead of a partition swap."""
STATE = "_state"
"""Not a table: the open connections a rotation file left (``pipelines.ingest.resume``),
one partition per capture like a table's, swapped in by the same commit."""


def partition_dir(root: Path, table: str, capture_id: str) -> Path:
    return root / table / f"capture_id={capture_id}"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the dataset's exclusive lock (waits for another committer)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move(src: str, dst: str, made: set[str]) -> None:
    """Rename ``src`` (a partition directory, or a file or directory of one) to ``dst``,
    replacing what is there; ``made``: the parent directories known to exist (one
    ``makedirs`` per directory a commit moves into, not one per move)."""
    parent = os.path.dirname(dst)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(dst)
        else:
            os.unlink(dst)
    os.replace(src, dst)


def _apply(swaps: list[dict[str, str | None]]) -> None:
    """Put each staged partition (or file or directory of one, in append mode) in
    place, the old one aside. Idempotent.

    Per entry: while ``staged`` still exists, the swap has not happened (the last
    step of a swap consumes it), so what is at ``final`` is the old one and goes to
    ``trash``. Once ``staged`` is gone, ``final`` is the new one and is left alone:
    replaying a finished journal changes nothing. (An entry names a whole partition,
    or a file or a sub-directory of one: ``APPEND``; an entry never names a path
    inside a directory another entry moves.)

    Durable before the journal goes: each directory of the dataset an entry changed
    (``final``'s parent), fsynced once. The trash's and the staging directory's are
    not: both are removed once the journal is, and a journal left by a crash finds
    each move done or not (a rename is one step) and rolls forward from there.
    """
    touched: set[str] = set()
    made: set[str] = set()
    exists = os.path.lexists
    for swap in swaps:
        final, trash = cast(str, swap["final"]), cast(str, swap["trash"])
        staged = swap["staged"]  # None: the capture has no rows in this table now
        if staged is None:
            if exists(final):
                _move(final, trash, made)  # no rows here now (or a part replaced)
                touched.add(os.path.dirname(final))
            continue
        if exists(staged):
            if exists(final):
                _move(final, trash, made)
            _move(staged, final, made)
            touched.add(os.path.dirname(final))
    for d in sorted(touched):  # (durable before the journal goes)
        _fsync_dir(Path(d))


def recover(root: Path) -> None:
    """Finish interrupted commits and drop dead staging. Call under ``locked``."""
    jdir = root / JOURNAL
    if jdir.is_dir():
        for j in sorted(jdir.glob("*.json")):
            try:
                swaps = json.loads(j.read_text())["swaps"]
            except (ValueError, KeyError, OSError):
                # A journal is complete once it is renamed into place (below), so
                # an unreadable one means the disk lied: keep it for a human.
                continue
            _apply(swaps)
            shutil.rmtree(root / TRASH / j.stem, ignore_errors=True)
            j.unlink(missing_ok=True)
        # a journal still being written when its process died (killed before the
        # rename that is the commit point): that commit never happened; under the
        # lock its writer is gone, so the half-written file is only debris
        for t in jdir.glob("*.tmp"):
            t.unlink(missing_ok=True)
    sdir = root / STAGING
    if sdir.is_dir():
        for st in sdir.iterdir():
            if not _owner_alive(st.name.split("-", 1)[0]):
                shutil.rmtree(st, ignore_errors=True)
    tdir = root / TRASH
    if tdir.is_dir():
        for t in tdir.iterdir():
            if not (jdir / f"{t.name}.json").exists():
                shutil.rmtree(t, ignore_errors=True)


def commit_moves(root: Path, txn: str, swaps: list[dict[str, str | None]],
                 still: Callable[[], bool]) -> bool:
    """Commit ``swaps`` (``_apply``'s entries: files staged under ``STAGING/<txn>`` put
    in place, the ones they replace to ``TRASH/<txn>``) through a journal, under the
    lock, as ``Staging.commit`` does; ``still()``, asked under the lock before the
    journal is written, says whether the plan still holds (False: nothing is done,
    False returned). A compaction's commit (``pipelines.compact``)."""
    with locked(root):
        recover(root)
        if not still():
            return False
        jdir = root / JOURNAL
        jdir.mkdir(exist_ok=True)
        tmp = jdir / f"{txn}.tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"swaps": swaps}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, jdir / f"{txn}.json")  # the commit point
        _fsync_dir(jdir)
        try:
            _apply(swaps)
        except BaseException:
            # past the commit point: rolled forward now, or by the next ``recover``
            with contextlib.suppress(BaseException):
                recover(root)
            raise
        shutil.rmtree(root / TRASH / txn, ignore_errors=True)
        (jdir / f"{txn}.json").unlink()
    return True


def host_tag() -> str:
    """This host's name as it appears in a staging directory's owner (no ``-``)."""
    return socket.gethostname().replace("-", "_") or "localhost"


def cluster_owner() -> str:
    """The owner of staging directories written for this process by other processes,
    maybe on other hosts (``pcapflow.cluster``): ``c<pid>@<host>``."""
    return f"c{os.getpid()}@{host_tag()}"


def _owner_alive(owner: str) -> bool:
    """Whether the owner of a staging directory may still commit it: a pid of this
    host (a local ingest), or ``c<pid>@<host>`` (a cluster client's, written by its
    workers): alive when that host is another (this host cannot tell; the client
    removes its own leftovers) or the pid runs here."""
    if owner.isdigit():
        return _pid_alive(int(owner))
    pid, _, host = owner[1:].partition("@")
    if owner.startswith("c") and pid.isdigit() and host:
        return host != host_tag() or _pid_alive(int(pid))
    return False


_side_sequence = itertools.count()


def write_side_file(stage_dir: Path, sub: str, table: pa.Table) -> Path:
    """Write ``table`` as one Arrow IPC file under ``stage_dir/sub`` (side files an
    ingest keeps beside its staged tables, e.g. the prefilter's candidates and the
    feed scan's ids), named ``<pid>-<n>`` in write order so a reader that sorts the
    names reads them back in that order."""
    import pyarrow as pa

    side = stage_dir / sub
    side.mkdir(exist_ok=True)
    path = side / f"{os.getpid()}-{next(_side_sequence):012d}.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


class StaleCapture(PcapflowError):
    """The capture changed between reading it and committing a derived result."""

    code = "stale_capture"


def fingerprint(root: Path, capture_id: str) -> str:
    """Identifies one ingest of a capture (its ``captures`` partition files)."""
    part = partition_dir(root, "captures", capture_id)
    files = sorted(part.glob("*.parquet")) if part.exists() else []
    return ";".join(f"{f.name}:{f.stat().st_ino}:{f.stat().st_mtime_ns}" for f in files)


class Staging:
    """Writes one capture's tables into a private staging directory."""

    def __init__(self, root: Path, *, row_group_rows: int = 1 << 20,
                 owner: str | None = None, txn: str | None = None) -> None:
        self.root = root
        self.part_prefix = ""
        """Prefix of this process's part names: ``part-<prefix><n>.parquet``. Worker
        processes of one ingest share the directory, each with its own prefix
        (``pipelines.ingest``, sharding); only the process that made it commits."""
        # ``owner``: the process that will commit, when it is not this one (a cluster
        # client: ``cluster_owner``); ``recover`` keeps the directory while it lives.
        # ``txn``: adopt a directory staged by another process (``adopt``).
        adopted = txn is not None
        if txn is None:
            tag = uuid.uuid4().hex[:12]
            txn = f"{owner}-w{os.getpid()}-{tag}" if owner else f"{os.getpid()}-{tag}"
        self.txn = txn
        self.dir = root / STAGING / self.txn
        if adopted:
            self.dir.mkdir(parents=True, exist_ok=True)
        else:
            # under the lock: a compaction (``pipelines.compact``) checks under it that
            # nobody is staging, then moves the set's parts; a staging directory made
            # in the middle of those moves would let this ingest read the set half moved
            with locked(root):
                self.dir.mkdir(parents=True)
        self._writers: dict[str, pq.ParquetWriter] = {}
        # batches the writer thread holds for the next row group, by table (``GROUP_ROWS``)
        self._held: dict[str, list[pa.Table]] = {}
        self._held_size: dict[str, tuple[int, int]] = {}  # (rows, bytes)
        self._parts: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.row_group_rows = row_group_rows
        # Parquet encoding and compression run in one background thread (Arrow
        # releases the GIL), overlapping the parsing; a bounded queue keeps memory
        # bounded when the disk is slower than the parsers.
        self._queue: queue.Queue[tuple[str, pa.Table] | None] = queue.Queue(WRITE_QUEUE)
        self._thread: threading.Thread | None = None
        self._stopping = False  # the thread was told to end (its None is queued)
        self._error: BaseException | None = None
        self._journaled = False  # past the commit point: the journal is in place

    @classmethod
    def adopt(cls, root: Path, staged: Path) -> Staging:
        """The staging directory another process wrote and closed (a cluster worker's),
        to ``commit`` or ``abort`` here."""
        if staged.parent != root / STAGING or not staged.is_dir():
            raise PcapflowError(f"{staged}: not a staging directory of {root}")
        return cls(root, txn=staged.name)

    def write(self, table: str, batch: pa.Table | dict[str, object]) -> None:
        """Append rows (a pyarrow Table or a dict of columns) to ``table``."""
        import pyarrow as pa

        from .tables.schemas import TABLES

        schema = TABLES[table]
        if isinstance(batch, dict):
            batch = pa.table(
                {f.name: batch.get(f.name) for f in schema if f.name != "capture_id"},
                schema=pa.schema([f for f in schema if f.name != "capture_id"]),
            )
        elif "capture_id" in batch.schema.names:
            batch = batch.drop_columns(["capture_id"])
        if batch.num_rows == 0:
            return
        self._raise_worker_error()
        if self._thread is None:
            thread = threading.Thread(target=self._work, name="pcapflow-writer", daemon=True)
            thread.start()
            self._thread = thread
        self._queue.put((table, batch))
        self.rows[table] = self.rows.get(table, 0) + batch.num_rows

    def _work(self) -> None:
        """The writer thread: write queued batches in order until ``None``, which
        closes the files and ends the thread (``close_writers``)."""
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    try:
                        if self._error is None:  # the last row groups
                            for table in list(self._held):
                                self._write_held(table)
                    except BaseException as err:
                        self._error = err  # (the files are closed all the same)
                    self._held.clear()
                    self._held_size.clear()
                    writers = list(self._writers.values())
                    self._writers.clear()
                    for w in writers:
                        if self._error is None:
                            w.close()
                        else:  # aborting or failed: the files are thrown away
                            with contextlib.suppress(Exception):
                                w.close()
                    return
                if self._error is None:  # after a failure: drain, the caller raises it
                    self._hold(*item)
            except BaseException as err:
                self._error = err
            finally:
                self._queue.task_done()

    def _hold(self, table: str, batch: pa.Table) -> None:
        """Keep ``batch`` for ``table``'s next row group, written once the batches held
        reach ``GROUP_ROWS`` rows or ``GROUP_BYTES`` bytes (or at ``close_writers``).
        The file is opened, and the batch's schema checked, at once."""
        w = self._writer(table)
        if not batch.schema.equals(w.schema, check_metadata=False):
            raise ValueError(f"{table}: a batch's schema does not match the table's:\n"
                             f"{batch.schema}\nvs\n{w.schema}")
        self._held.setdefault(table, []).append(batch)
        rows, size = self._held_size.get(table, (0, 0))
        rows, size = rows + batch.num_rows, size + batch.nbytes
        self._held_size[table] = (rows, size)
        if rows >= GROUP_ROWS or size >= GROUP_BYTES:
            self._write_held(table)

    def _write_held(self, table: str) -> None:
        """Write the batches held for ``table`` (in the order they came) as one row group
        (more when they pass ``row_group_rows``)."""
        import pyarrow as pa

        batches = self._held.pop(table, [])
        self._held_size.pop(table, None)
        if batches:
            whole = batches[0] if len(batches) == 1 else pa.concat_tables(batches)
            self._writers[table].write_table(whole, row_group_size=self.row_group_rows)

    def _writer(self, table: str) -> pq.ParquetWriter:
        w = self._writers.get(table)
        if w is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            from .tables.schemas import TABLES

            (self.dir / table).mkdir(parents=True, exist_ok=True)
            part = self._parts.get(table, 0)
            self._parts[table] = part + 1
            schema = pa.schema([f for f in TABLES[table] if f.name != "capture_id"])
            w = pq.ParquetWriter(
                self.dir / table / f"part-{self.part_prefix}{part}.parquet",
                schema,
                compression="zstd",
                use_dictionary=dictionary_columns(schema),
                column_encoding=delta_columns(schema),
            )
            self._writers[table] = w
        return w

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close_writers(self) -> None:
        """Finish every open file (they become readable; later writes add parts)."""
        self._stop_thread()
        self._raise_worker_error()

    def _stop_thread(self) -> None:
        # The thread is forgotten only once it has ended: an exception in the middle
        # (an interrupt during the join) must leave ``abort`` a thread to wait for, never
        # files still being closed by it (closing them twice, at once, from two threads
        # hangs in Arrow; so does leaving the interpreter while it is inside Arrow).
        thread = self._thread
        if thread is not None:
            if not self._stopping:
                self._stopping = True
                self._queue.put(None)
            thread.join()
            self._thread, self._stopping = None, False

    def _fsync_all(self) -> None:
        for f in [*self.dir.rglob("*.parquet"), *(self.dir / STATE).rglob("*.*")]:
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")  # the thread drains, writes nothing
        with contextlib.suppress(Exception):
            self._stop_thread()
        if self._thread is None:  # else the writer thread still owns the files
            with contextlib.suppress(Exception):
                for w in self._writers.values():
                    w.close()
        if self._journaled:
            # failed past the commit point (an error or an interrupt while moving): the
            # staged files are the journal's to put in place, so roll it forward now;
            # if that fails too, leave them for the next ``recover``
            try:
                with locked(self.root):
                    recover(self.root)
            except BaseException:
                return
        shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self, capture_id: str, *, tables: Iterable[str] | None = None,
               expect: str | None = None, supersede: Iterable[str] = ()) -> list[str]:
        """Atomically replace ``capture_id``'s partitions: of every table, or of ``tables``.

        ``expect``: the capture's ``fingerprint`` when the caller read it; if the
        capture changed since (a concurrent re-ingest), nothing is replaced and
        ``StaleCapture`` is raised. ``supersede``: the sha256 of each file of the
        capture; any other capture with one of these files (a file ingested alone
        before, now part of a set; an earlier set with fewer files) is removed in
        the same commit, so no packet is in the dataset twice. Returns the ids of
        the captures so removed.
        """
        from .tables.schemas import TABLES

        self.close_writers()
        self._fsync_all()
        with locked(self.root):
            recover(self.root)
            if expect is not None and fingerprint(self.root, capture_id) != expect:
                raise StaleCapture(
                    f"capture {capture_id} was re-ingested meanwhile; run the command again")
            swaps: list[dict[str, str | None]] = []
            append = self._append_plan(capture_id)
            for table in [*TABLES, STATE] if tables is None else dict.fromkeys(tables):
                final = partition_dir(self.root, table, capture_id)
                staged = self.dir / table
                if table in append:
                    swaps += self._append_swaps(table, final, append[table])
                elif final.exists() or staged.exists():
                    swaps.append({
                        "final": str(final),
                        "trash": str(self.root / TRASH / self.txn / table),
                        "staged": str(staged) if staged.exists() else None,
                    })
            others = _captures_with(self.root, set(supersede) - {""}, capture_id)
            for other in others:
                for table in [*TABLES, STATE]:
                    final = partition_dir(self.root, table, other)
                    if final.exists():
                        swaps.append({"final": str(final), "staged": None, "trash": str(
                            self.root / TRASH / self.txn / f"{other}-{table}")})
            jdir = self.root / JOURNAL
            jdir.mkdir(exist_ok=True)
            tmp = jdir / f"{self.txn}.tmp"
            with open(tmp, "w") as fh:
                # (json.dumps: the C encoder; json.dump streams through the Python one)
                fh.write(json.dumps({"capture_id": capture_id, "swaps": swaps}))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, jdir / f"{self.txn}.json")  # the commit point
            self._journaled = True
            _fsync_dir(jdir)
            _apply(swaps)
            for table in append:  # a partition whose parts were all replaced by none
                with contextlib.suppress(OSError):
                    partition_dir(self.root, table, capture_id).rmdir()  # (if empty)
            shutil.rmtree(self.root / TRASH / self.txn, ignore_errors=True)
            (jdir / f"{self.txn}.json").unlink()
            shutil.rmtree(self.dir, ignore_errors=True)
        return others

    def _append_plan(self, capture_id: str) -> dict[str, list[str]]:
        """The tables this commit appends to (``APPEND``), each with the partition's
        files it replaces; empty for a whole swap."""
        path = self.dir / APPEND
        if not path.is_file():
            return {}
        plan = json.loads(path.read_text())
        if plan.get("capture_id") != capture_id:
            raise PcapflowError(f"{self.dir}: staged to append to capture "
                                f"{plan.get('capture_id')}, not {capture_id}")
        return {str(t): [str(n) for n in names] for t, names in plan["drop"].items()}

    def _append_swaps(self, table: str, final: Path, drop: list[str]
                      ) -> list[dict[str, str | None]]:
        """The moves of ``table``'s append (``APPEND``): each staged file into the
        partition ``final``, beside the parts kept, and each replaced file to the trash;
        but a sub-directory of the partition (the state's ``derive``, ``flows``...)
        every file of which the commit replaces is one entry, moved whole (and the
        staged one whole into its place): a command replaces a dozen files of each."""
        staged, trash = str(self.dir / table), str(self.root / TRASH / self.txn / table)
        fin = str(final)
        names = files_under(staged)
        gone = set(drop) - set(names)
        subdirs = {n.split("/", 1)[0] for n in [*names, *gone] if "/" in n}
        out: list[dict[str, str | None]] = []
        whole: set[str] = set()
        replaced = set(drop) | set(names)
        for d in sorted(subdirs):
            if _all_in(os.path.join(fin, d), f"{d}/", replaced):
                whole.add(d)
                here = os.path.join(staged, d)
                out.append({"final": os.path.join(fin, d), "trash": os.path.join(trash, d),
                            "staged": here if os.path.isdir(here) else None})
        for n in names:
            if n.split("/", 1)[0] not in whole or "/" not in n:
                out.append({"final": os.path.join(fin, n), "trash": os.path.join(trash, n),
                            "staged": os.path.join(staged, n)})
        for n in sorted(gone):
            if n.split("/", 1)[0] not in whole or "/" not in n:
                out.append({"final": os.path.join(fin, n), "trash": os.path.join(trash, n),
                            "staged": None})
        return out


def _all_in(top: str, prefix: str, names: set[str]) -> bool:
    """Whether every file under the directory ``top`` (a real one, or none) is in
    ``names`` as ``prefix`` + its path under ``top``: stops at the first that is not
    (the state's scan files: one per file of the set, nearly all kept)."""
    if os.path.islink(top):
        return False
    try:
        with os.scandir(top) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if not _all_in(e.path, f"{prefix}{e.name}/", names):
                        return False
                elif f"{prefix}{e.name}" not in names:
                    return False
    except FileNotFoundError:
        pass
    return True


def files_under(top: str, skip: str = "") -> list[str]:
    """The files under the directory ``top`` (none if it is not one), as sorted paths
    relative to it, ``/``-separated; ``skip``: a sub-directory of ``top`` not walked."""
    out: list[str] = []
    for base, dirs, files in os.walk(top):
        if base == top:
            if skip in dirs:
                dirs.remove(skip)
            out += files
        else:
            rel = os.path.relpath(base, top)
            out += [f"{rel}/{f}" for f in files]
    return sorted(out)


def _captures_with(root: Path, sha256s: set[str], own: str) -> list[str]:
    """Ids of the captures other than ``own`` that have a file with one of these sha256s.

    Each other capture's ``captures`` parts are read (their ``sha256`` column); ``own``'s
    are not (a rotation's set has a row per file, and is never its own other)."""
    if not sha256s:
        return []
    mine = f"capture_id={own}"
    try:
        with os.scandir(root / "captures") as it:
            dirs = sorted(e.path for e in it
                          if e.name.startswith("capture_id=") and e.name != mine)
    except FileNotFoundError:
        return []
    if not dirs:
        return []
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want = pa.array(sorted(sha256s), pa.string())
    found: list[str] = []
    for d in dirs:
        try:
            with os.scandir(d) as it:
                parts = sorted(e.path for e in it if e.name.endswith(".parquet"))
        except FileNotFoundError:
            continue
        for part in parts:
            f = pq.ParquetFile(part)
            if "sha256" not in f.schema_arrow.names:
                continue
            col = f.read(columns=["sha256"]).column("sha256")
            if pc.any(pc.is_in(col, value_set=want)).as_py():
                found.append(os.path.basename(d).split("=", 1)[1])
                break
    return sorted(found)
