"""Several capture files that are one recording, read as one stream of ``PacketChunk``s.

A rotation (``tcpdump -G/-C/-W``, with or without ``-z gzip``; dumpcap ring buffers;
``editcap -c/-i`` splits) cuts one recording into files; connections run on across
them. ``CaptureSet`` reads such files as if they were still one capture, so every
stage above it (flow tracking, reassembly, TLS, WebSocket, FIX) keeps its state
across the cuts and a connection is one flow.

How this works. Each file's first packet time is read at open (``peek``: a small
read, the file is closed again). Files are taken in order of that time (ties: by
name). The stream is made of *lanes*; a lane is a chain of files read one after
the other, as one recording was written. The next file ``B`` joins the stream
when the merge reaches its first packet: if a lane's file has ended (the whole
file read) no later than ``ROTATION_OVERLAP_NS`` after ``B``'s first packet and
has the same link types, ``B`` continues that lane (tcpdump writes a file's packets
out of time order by up to ~1 ms, so a rotated file may begin a little before the
previous one ended: its packets still come after, as in the unsplit capture);
otherwise ``B`` runs in parallel in a new lane (another interface captured at
the same time). Lanes are merged by time: a packet's key is the running maximum
of the times of its lane so far, so each lane's own order is kept whatever its
steps back in time (the DESIGN's rule: never re-sort a capture), and packets of
different lanes go out by key (ties: the earlier lane first). A lane's packets
are emitted once every other lane that is still reading has buffered a later
key, so memory is a chunk or two per lane.

With one lane (a rotation: the usual case) the readers' chunks are passed on as
they are, or cut where the next file must join; only parallel lanes cost a copy
(the merged packets' bytes into one buffer).

What a chunk of the set says: ``index`` numbers packets across the whole set
(in stream order), ``file`` is the packet's file (its position in the set) and
``file_packet`` its number in that file; ``file_offset`` stays the offset in
its own file. Interfaces of a parallel lane are numbered after those of the
lanes before it (known when it starts).

Which files are one recording (``group``): files named in one command that sit in
one directory and whose names differ only in runs of at least four digits (counters
and times: ``trading-20240101-1200.pcap.gz``, ``out_00003_20240101120000.pcapng``)
or in the number ``tcpdump -C`` appends (``cap.pcap``, ``cap.pcap1``; ``cap.pcap`` is
a rotation's first file when ``cap.pcap1`` is beside it), and whose
first packets follow one another by at most a day. Shorter digit runs are names, not
counters (``tls_AES128...``/``tls_AES256...``, ``ipv4``/``ipv6`` stay apart). A
name is what a rotation's files reliably share: their contents may start and end
anywhere, with gaps (an idle hour) or overlaps (parallel interfaces). The API also
takes a set as given (a list of files as one item). Files of one recording twice (``a.pcap`` and
``a.pcap.gz``) start with the same packet: an error, not a merge.

The set's ``sha256`` (its capture id) is the SHA-256 of its files' SHA-256s in
sorted order: the same files give the same id, however named or listed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from ..errors import CaptureError
from ..events import Anomaly
from .chunk import PacketChunk
from .clock import ClockWatch
from .reader import DEFAULT_CHUNK_BYTES, CaptureReader, open_capture

ROTATION_OVERLAP_NS = 10_000_000
"""A file may begin up to 10 ms before the previous file of its lane ended and
still continue that lane (tcpdump's out-of-order writes: ~1 ms seen)."""

PEEK_BYTES = 1 << 16
"""Bytes read (decompressed) to find a file's first packet at open."""


@dataclass(slots=True)
class SetFile:
    """One file of a set: what ``peek`` saw, then what reading it counted."""

    path: str
    first_ts: int | None
    """Time of the file's first packet (None: no packet in the file)."""
    head: bytes = b""
    """The first packet's bytes (two files starting alike are one recording twice)."""
    link_types: tuple[int, ...] = ()
    position: int = 0
    """Index of the file in the set (by first packet time, then name)."""
    format: str = ""
    compression: str | None = None
    sha256: str | None = None
    content_sha256: str | None = None
    """SHA-256 of the decompressed content (``CaptureReader.content_sha256``)."""
    packets: int = 0
    bytes: int = 0
    min_ts: int | None = None
    max_ts: int | None = None

    def note(self, chunk: PacketChunk) -> None:
        if len(chunk):
            lo, hi = int(chunk.ts_ns.min()), int(chunk.ts_ns.max())
            self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)


def peek(path: str) -> SetFile:
    """Open ``path``, find its first packet, close it (``CaptureError`` if unreadable)."""
    with open_capture(path, chunk_bytes=PEEK_BYTES, hash=False) as reader:
        for chunk in reader:
            if len(chunk):
                return SetFile(path, int(chunk.ts_ns[0]), chunk.packet(0),
                               tuple(reader.link_types), format=reader.format)
        return SetFile(path, None, b"", tuple(reader.link_types), format=reader.format)


def _order_key(f: SetFile) -> tuple[bool, int, str]:
    return (f.first_ts is None, f.first_ts or 0, os.path.basename(f.path))


@dataclass(slots=True)
class _Piece:
    """Packets ``start:`` of one chunk read by a lane, with their merge keys."""

    chunk: PacketChunk
    file: int
    file_packet: np.ndarray
    keys: np.ndarray
    start: int = 0


@dataclass(slots=True)
class _Lane:
    """Files read one after another (one recording), and the packets buffered."""

    number: int
    iface_base: int
    reader: CaptureReader | None = None
    file: SetFile | None = None
    pieces: deque[_Piece] = field(default_factory=deque)
    key: int = -(1 << 62)
    """Running maximum of the lane's packet times: the key of its last packet read."""
    base_name: str = ""
    interfaces: int = 1
    """Interfaces seen in the lane's files so far (a parallel lane numbers its own after)."""

    @property
    def ended(self) -> bool:
        """The current file is read to its end (no successor started yet)."""
        return self.reader is None

    @property
    def buffered(self) -> bool:
        return bool(self.pieces)


class CaptureSet:
    """Iterator of ``PacketChunk`` over several files read as one capture.

    The attributes mirror ``CaptureReader``'s (``packets``, ``bytes_read``,
    ``sha256``, ``format``, ``compression``, ``link_types``, ``secrets``,
    ``anomalies``); ``files`` has one ``SetFile`` per file, in set order.
    """

    def __init__(self, paths: Sequence[str], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 hash: bool = True, as_set: bool = False, first_index: int = 0,
                 first_file: int = 0) -> None:
        if not paths:
            raise ValueError("a capture set needs at least one file")
        if len(paths) > 1 and "-" in paths:
            raise CaptureError("standard input cannot be part of a capture set",
                               code="unreadable", path="-")
        self.chunk_bytes = chunk_bytes
        self.hash = hash
        self.single = len(paths) == 1 and not as_set
        # a set resumed across commands (``pipelines.ingest.resume``): its packets and
        # files are numbered on from the files ingested before
        self.first_index, self.first_file = first_index, first_file
        if self.single:
            self.files = [SetFile(str(paths[0]), None)]
        else:
            self.files = sorted((peek(str(p)) for p in paths), key=_order_key)
            _check_duplicates(self.files)
        for k, f in enumerate(self.files):
            f.position = k
        self.path = self.files[0].path
        self.packets = 0
        self.secrets: list[tuple[int, bytes]] = []
        self.anomalies: list[Anomaly] = []
        self._open: list[CaptureReader] = []
        self._ended: list[tuple[SetFile, CaptureReader]] = []
        self._done_bytes = 0
        self._link_types: set[int] = set()
        self._pending_secrets: list[tuple[int, bytes]] = []
        self._pending_anomalies: list[Anomaly] = []
        self._clock = ClockWatch()
        self._gen = self._single() if self.single else self._chunks()

    # --- attributes ----------------------------------------------------------------
    @property
    def format(self) -> str:
        kinds = sorted({f.format for f in self.files if f.format})
        return "+".join(kinds) if kinds else ""

    @property
    def compression(self) -> str | None:
        kinds = sorted({f.compression for f in self.files if f.compression})
        return "+".join(kinds) if kinds else None

    @property
    def link_types(self) -> list[int]:
        return sorted(self._link_types | {t for r in self._open for t in r.link_types})

    @property
    def bytes_read(self) -> int:
        return self._done_bytes + sum(r.bytes_read for r in self._open)

    @property
    def sha256(self) -> str:
        """One file: its SHA-256. A set: SHA-256 of its files' SHA-256s, sorted."""
        if not self.hash:
            raise RuntimeError("this capture set was opened without hashing")
        self._settle()
        shas = [f.sha256 or "" for f in self.files]
        if self.single:
            return shas[0]
        return hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()

    @property
    def content_sha256(self) -> str:
        """One file: its content's SHA-256 (the same plain or compressed). A set: the
        SHA-256 of its files' content SHA-256s, sorted: the capture id."""
        if not self.hash:
            raise RuntimeError("this capture set was opened without hashing")
        self._settle()
        shas = [f.content_sha256 or "" for f in self.files]
        if self.single:
            return shas[0]
        return hashlib.sha256("".join(sorted(shas)).encode()).hexdigest()

    # --- iteration -----------------------------------------------------------------
    def __iter__(self) -> CaptureSet:
        return self

    def __next__(self) -> PacketChunk:
        chunk = next(self._gen)
        if self.first_index:
            chunk.index = chunk.index + self.first_index
        if self.first_file and chunk.file is not None:
            chunk.file = chunk.file + np.int32(self.first_file)
        if len(chunk):  # steps back of the capture clock, as anomalies of the chunk
            steps = self._clock.check(chunk)
            if steps:
                chunk.anomalies = [*chunk.anomalies, *steps]
        return chunk

    def __enter__(self) -> CaptureSet:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._gen.close()
        self._settle()
        for r in self._open:
            r.close()
        self._open.clear()

    # --- reading files -------------------------------------------------------------
    def _start(self, f: SetFile) -> CaptureReader:
        reader = open_capture(f.path, chunk_bytes=self.chunk_bytes, hash=self.hash)
        f.format, f.compression = reader.format, reader.compression
        self._open.append(reader)
        return reader

    def _finish(self, f: SetFile, reader: CaptureReader) -> None:
        """``f`` is read to its end. Its reader is closed (which waits for its SHA-256,
        computed in a background thread behind the reading) only when the next file
        ends, or at the end of the set: closing it at once would make the parsing
        wait for the hash at every file boundary (measured: ~10% more wall time on
        a 4-file set of a loaded 2-core machine, the same CPU time)."""
        self._settle()
        self._open.remove(reader)
        self._ended.append((f, reader))
        f.packets = reader.packets
        f.bytes = reader.bytes_read
        f.link_types = tuple(reader.link_types)  # all of them (pcapng: IDBs seen later too)
        self._done_bytes += reader.bytes_read
        self._link_types.update(reader.link_types)
        self.secrets.extend(reader.secrets)

    def _settle(self) -> None:
        """Close the readers of files already read; take their SHA-256."""
        for f, reader in self._ended:
            reader.close()
            f.sha256 = reader.sha256 if self.hash else None
            f.content_sha256 = reader.content_sha256 if self.hash else None
        self._ended.clear()

    def _capture_notes(self, f: SetFile, chunk: PacketChunk) -> None:
        """Keep a chunk's secrets and anomalies for the next chunk out; name the file."""
        self._pending_secrets += chunk.secrets
        for a in chunk.anomalies:
            a = Anomaly(ts=a.ts, flow_id=a.flow_id, direction=a.direction, layer=a.layer,
                        code=a.code, detail=f"{os.path.basename(f.path)}: {a.detail}",
                        stream_offset=a.stream_offset)
            self._pending_anomalies.append(a)
            self.anomalies.append(a)

    def _single(self) -> Iterator[PacketChunk]:
        f = self.files[0]
        reader = self._start(f)
        for chunk in reader:
            f.note(chunk)
            self.packets += len(chunk)
            yield chunk
        self._finish(f, reader)
        self.anomalies = list(reader.anomalies)

    def _read(self, lane: _Lane) -> None:
        """One more chunk into ``lane`` (or note that its file ended)."""
        assert lane.reader is not None and lane.file is not None
        f = lane.file
        try:
            chunk = next(lane.reader)
        except StopIteration:
            self._finish(f, lane.reader)
            lane.reader = None
            return
        f.note(chunk)
        self._capture_notes(f, chunk)
        lane.interfaces = max(lane.interfaces, len(lane.reader.interfaces))
        n = len(chunk)
        first = lane.reader.packets - n
        keys = np.maximum.accumulate(np.maximum(chunk.ts_ns, lane.key)) if n else chunk.ts_ns
        if n:
            lane.key = int(keys[-1])
        if lane.iface_base:
            chunk.interface = chunk.interface + np.int32(lane.iface_base)
        lane.pieces.append(_Piece(chunk, f.position,
                                  np.arange(first, first + n, dtype=np.int64), keys))

    def _fill(self, lane: _Lane) -> None:
        while not lane.pieces and not lane.ended:
            self._read(lane)

    def _begin(self, lane: _Lane, f: SetFile) -> None:
        lane.file, lane.reader = f, self._start(f)
        lane.base_name = os.path.basename(f.path)

    def _place(self, f: SetFile, lanes: list[_Lane]) -> None:
        """``f`` continues an ended lane (a rotation) or starts a parallel one."""
        fits = [ln for ln in lanes if ln.ended and ln.file is not None
                and ln.key <= f.first_ts + ROTATION_OVERLAP_NS  # type: ignore[operator]
                and ln.file.link_types == f.link_types]
        if fits:
            name = os.path.basename(f.path)
            best = max(fits, key=lambda ln: (_common_prefix(ln.base_name, name), ln.key,
                                             -ln.number))
            self._begin(best, f)
            return
        base = max((ln.iface_base + ln.interfaces for ln in lanes), default=0)
        lane = _Lane(number=len(lanes), iface_base=base)
        self._begin(lane, f)
        lanes.append(lane)

    def _chunks(self) -> Iterator[PacketChunk]:
        todo = deque(f for f in self.files if f.first_ts is not None)
        for f in self.files:  # files without packets: their notes (anomalies, secrets)
            if f.first_ts is None:
                reader = self._start(f)
                for chunk in reader:
                    self._capture_notes(f, chunk)
                self._finish(f, reader)
        lanes: list[_Lane] = []
        while True:
            for lane in lanes:
                self._fill(lane)
            reading = [ln.key for ln in lanes if not ln.ended]
            horizon = min(reading) if reading else None  # None: every key is known
            nxt = todo[0] if todo else None
            if nxt is not None:
                start = nxt.first_ts
                assert start is not None
                if horizon is None or horizon >= start + ROTATION_OVERLAP_NS:
                    self._place(todo.popleft(), lanes)
                    continue
                limit = min(horizon - (len(lanes) > 1), start - 1)
            elif horizon is None:
                if not any(ln.buffered for ln in lanes):
                    break
                limit = 1 << 62
            else:
                # with parallel lanes strictly below the horizon: a reading lane's
                # next packet may have a key equal to it, and an earlier lane goes
                # first on ties
                limit = horizon - (len(lanes) > 1)
            out = self._emit(lanes, limit)
            if out is None:  # nothing below the limit: the slowest lane reads on
                self._read(min((ln for ln in lanes if not ln.ended), key=lambda ln: ln.key))
                continue
            yield out
        if self._pending_secrets or self._pending_anomalies:
            yield self._notes_only()

    # --- emitting ------------------------------------------------------------------
    @staticmethod
    def _ready(lane: _Lane, limit: int) -> bool:
        """Whether the lane's first buffered packet (or empty chunk) can go out."""
        if not lane.pieces:
            return False
        p = lane.pieces[0]
        return not len(p.chunk) or int(p.keys[p.start]) <= limit

    @staticmethod
    def _take(lane: _Lane, limit: int, pieces: int) -> list[tuple[_Piece, int, int]]:
        """(piece, start, end) of the lane's buffered packets with key <= limit, from
        at most ``pieces`` pieces."""
        out: list[tuple[_Piece, int, int]] = []
        while lane.pieces and len(out) < pieces:
            p = lane.pieces[0]
            end = int(np.searchsorted(p.keys, limit, side="right"))
            if end <= p.start and len(p.chunk):
                break
            out.append((p, p.start, end))
            if end < len(p.chunk):
                p.start = end
                break
            lane.pieces.popleft()
        return out

    def _emit(self, lanes: list[_Lane], limit: int) -> PacketChunk | None:
        """One chunk of every buffered packet with key <= ``limit`` (every lane still
        reading has a key above it, so no packet to come can go before them)."""
        ready = [ln for ln in lanes if self._ready(ln, limit)]
        if not ready:
            return None
        if len(ready) == 1:  # one lane (a rotation): its chunk goes on as read, no copy
            p, a, b = self._take(ready[0], limit, 1)[0]
            chunk = _slice(p.chunk, a, b)
            file = np.full(b - a, p.file, np.int32)
            file_packet = p.file_packet[a:b]
        else:
            parts = [t for ln in ready for t in self._take(ln, limit, len(ln.pieces))]
            chunk, file, file_packet = _merge(parts)
        n = len(chunk)
        chunk.index = np.arange(self.packets, self.packets + n, dtype=np.int64)
        chunk.file = file
        chunk.file_packet = file_packet
        chunk.secrets = self._pending_secrets
        chunk.anomalies = self._pending_anomalies
        self._pending_secrets, self._pending_anomalies = [], []
        self.packets += n
        return chunk

    def _notes_only(self) -> PacketChunk:
        empty = np.zeros(0, np.int64)
        chunk = PacketChunk(data=np.zeros(0, np.uint8), offset=empty, caplen=empty,
                            wirelen=empty, ts_ns=empty, linktype=np.zeros(0, np.int32),
                            interface=np.zeros(0, np.int32), index=empty, file_offset=empty,
                            secrets=self._pending_secrets, anomalies=self._pending_anomalies)
        chunk.file, chunk.file_packet = np.zeros(0, np.int32), empty
        self._pending_secrets, self._pending_anomalies = [], []
        return chunk


def _slice(c: PacketChunk, a: int, b: int) -> PacketChunk:
    """Packets ``a:b`` of a chunk, sharing its buffer (the chunk itself when whole)."""
    if a == 0 and b == len(c):
        return c
    return PacketChunk(data=c.data, offset=c.offset[a:b], caplen=c.caplen[a:b],
                       wirelen=c.wirelen[a:b], ts_ns=c.ts_ns[a:b], linktype=c.linktype[a:b],
                       interface=c.interface[a:b], index=c.index[a:b],
                       file_offset=c.file_offset[a:b])


def _merge(parts: list[tuple[_Piece, int, int]]) -> tuple[PacketChunk, np.ndarray, np.ndarray]:
    """One chunk of several lanes' packets, ordered by key (stable: lane order on ties).

    Each part's bytes are copied once into the new buffer (a chunk's records lie
    in increasing offset order, so a part is one contiguous range)."""
    spans, size = [], 0
    for p, a, b in parts:
        if b <= a:
            spans.append((0, 0, size))
            continue
        lo = int(p.chunk.offset[a])
        hi = int(p.chunk.offset[b - 1] + p.chunk.caplen[b - 1])
        spans.append((lo, hi, size))
        size += hi - lo
    data = np.empty(size, np.uint8)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "offset", "caplen", "wirelen", "ts_ns", "linktype", "interface", "index",
        "file_offset", "keys", "file", "file_packet")}
    for (p, a, b), (lo, hi, at) in zip(parts, spans, strict=True):
        c = p.chunk
        data[at : at + hi - lo] = c.data[lo:hi]
        cols["offset"].append(c.offset[a:b] - lo + at)
        for name in ("caplen", "wirelen", "ts_ns", "linktype", "interface", "index",
                     "file_offset"):
            cols[name].append(getattr(c, name)[a:b])
        cols["keys"].append(p.keys[a:b])
        cols["file"].append(np.full(b - a, p.file, np.int32))
        cols["file_packet"].append(p.file_packet[a:b])
    whole = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.argsort(whole["keys"], kind="stable")
    m = {k: v[order] for k, v in whole.items()}
    chunk = PacketChunk(data=data, offset=m["offset"], caplen=m["caplen"], wirelen=m["wirelen"],
                        ts_ns=m["ts_ns"], linktype=m["linktype"], interface=m["interface"],
                        index=m["index"], file_offset=m["file_offset"])
    return chunk, m["file"], m["file_packet"]


def _common_prefix(a: str, b: str) -> int:
    """Characters two file names share at their start (a rotation's files share most)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _check_duplicates(files: list[SetFile]) -> None:
    seen: dict[tuple[int, bytes], str] = {}
    for f in files:
        if f.first_ts is None:
            continue
        other = seen.setdefault((f.first_ts, f.head), f.path)
        if other != f.path:
            raise CaptureError(
                f"{other} and {f.path} begin with the same packet: the same recording "
                "twice? ingest one of them (or use --separate)",
                code="duplicate_capture", path=f.path)


def open_set(paths: Sequence[str], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             hash: bool = True, as_set: bool = False, first_index: int = 0,
             first_file: int = 0) -> CaptureSet:
    """Open one capture (a list of one path, ``"-"`` for stdin) or a set of files
    that are one recording (module docstring). ``as_set``: one file read as a set
    of one (named in capture anomalies, ``file`` columns); ``first_index`` and
    ``first_file`` number packets and files on from a set's earlier files."""
    return CaptureSet(paths, chunk_bytes=chunk_bytes, hash=hash, as_set=as_set,
                      first_index=first_index, first_file=first_file)


# --- which files are one recording --------------------------------------------------
CAPTURE_MAGICS = (
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",  # pcap
    b"\x0a\x0d\x0d\x0a",  # pcapng Section Header Block
    b"\x1f\x8b",  # gzip (tcpdump -z gzip)
    b"\x28\xb5\x2f\xfd",  # zstd
)
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
_DIGITS = re.compile(r"\d+")


def looks_like_capture(path: str) -> bool:
    """Whether a file starts like a (possibly compressed) pcap or pcapng file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return any(head.startswith(m) for m in CAPTURE_MAGICS)


def expand(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The capture files named: a directory gives the capture files in it (by their
    first bytes, so key logs and notes beside them are skipped), a quoted glob
    pattern the files it matches; each file once, in the order named."""
    out: list[str] = []
    for p in map(os.fspath, paths):
        if p != "-" and os.path.isdir(p):
            names = sorted(os.listdir(p))
            out += [q for q in (os.path.join(p, n) for n in names)
                    if os.path.isfile(q) and looks_like_capture(q)]
        elif p != "-" and not os.path.exists(p) and any(c in p for c in "*?["):
            out += sorted(q for q in glob.glob(p) if os.path.isfile(q))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


ROTATION_DIGITS = 4
"""A rotation numbers or dates its files with runs of at least this many digits
(``editcap``/dumpcap ``_00001_20240101120000``, strftime ``%Y%m%d-%H%M``); shorter
runs that differ name different things (``AES128``/``AES256``, ``tls1_0``/``tls1_1``)."""

MAX_SET_GAP_NS = 86_400 * 1_000_000_000
"""Files of one name pattern whose first packets are more than a day apart (in
order of time) are different recordings."""

_CAPTURE_EXT = re.compile(r"(\.(?:pcap|pcapng|cap|dmp))(\d+)$", re.IGNORECASE)


def recording_name(path: str) -> tuple[str, str, tuple[int, ...]]:
    """(directory, name pattern, digit-run lengths): files with the same one may be
    parts of one recording. ``tcpdump -C/-W`` appends a number after the extension
    (``cap.pcap``, ``cap.pcap1``): that number is dropped. Every other run of digits
    becomes ``#`` when it is at least ``ROTATION_DIGITS`` long (counters and
    times), and is kept as it is when shorter (a name: ``AES128``, ``ipv4``)."""
    full = os.path.abspath(path)
    name = os.path.basename(full)
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = _CAPTURE_EXT.sub(r"\1", name)
    runs = tuple(len(m.group()) for m in _DIGITS.finditer(name)
                 if len(m.group()) >= ROTATION_DIGITS)
    pattern = _DIGITS.sub(lambda m: "#" if len(m.group()) >= ROTATION_DIGITS else m.group(),
                          name)
    return os.path.dirname(full), pattern, runs


_PLAIN_EXT = re.compile(r"\.(?:pcap|pcapng|cap|dmp)$", re.IGNORECASE)


def rotation_named(path: str) -> bool:
    """Whether a file is named as a rotation's files are: a run of ``ROTATION_DIGITS``
    digits (a counter, a date) or the number ``tcpdump -C`` appends; or it is the
    first file of a ``tcpdump -C`` rotation (``first_of_size_rotation``)."""
    if path == "-":
        return False
    name = os.path.basename(path)
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return (bool(recording_name(path)[2]) or bool(_CAPTURE_EXT.search(name))
            or first_of_size_rotation(path))


def first_of_size_rotation(path: str) -> bool:
    """Whether ``path`` is the first file of a ``tcpdump -C`` rotation without ``-W``:
    tcpdump names it as given (``cap.pcap``, no number) and the next one ``cap.pcap1``,
    so the first file is known by its successor beside it (plain or compressed). A
    file ends when the writer opens its successor, so by the time it is complete (and
    ``pcapflow watch`` ingests it) the successor exists; a ``cap.pcap`` alone is one
    capture, not a rotation."""
    if path == "-":
        return False
    name = os.path.basename(path)
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    if not _PLAIN_EXT.search(name):
        return False
    nxt = os.path.join(os.path.dirname(os.path.abspath(path)), name + "1")
    return any(os.path.isfile(nxt + s) for s in ("", *COMPRESSED_SUFFIXES))


def group(paths: Sequence[str]) -> list[list[str]]:
    """Group capture files into sets, one per recording (module docstring): files in one
    directory whose names differ only in their long digit runs (same lengths) or in a
    ``tcpdump -C`` number, and whose first packets follow one another by at most a day.
    Standard input is its own capture. Groups come in the order their first file was
    named."""
    groups: dict[tuple[object, ...], list[str]] = {}
    for k, p in enumerate(paths):
        key = ("-", str(k)) if p == "-" else recording_name(p)
        groups.setdefault(key, []).append(p)
    out: list[list[str]] = []
    for files in groups.values():
        out.extend(_split_by_time(files) if len(files) > 1 else [files])
    return out


def _split_by_time(files: list[str]) -> list[list[str]]:
    """Cut a name group where consecutive first packets are over a day apart."""
    try:
        heads = [(peek(p).first_ts, p) for p in files]
    except CaptureError:
        return [files]  # the ingest reports the unreadable file
    timed = sorted((t, p) for t, p in heads if t is not None)
    parts: list[list[str]] = []
    last = None
    for t, p in timed:
        if last is None or t - last > MAX_SET_GAP_NS:
            parts.append([])
        parts[-1].append(p)
        last = t
    empty = [p for t, p in heads if t is None]
    if empty:  # files without packets go with the last recording
        if not parts:
            parts.append([])
        parts[-1].extend(empty)
    order = {p: k for k, p in enumerate(files)}
    return sorted((sorted(g, key=order.__getitem__) for g in parts), key=lambda g: order[g[0]])
