"""Resuming a rotation across commands: the state a capture file leaves open.

A rotation (``tcpdump -G``) closes a file every few minutes while its connections go
on. Ingested one file per command (``pcapflow watch``, or by hand), each file after
the first would start afresh and lose every connection whose handshake is in an
earlier file. So an ingest of a rotation's file keeps, with the dataset, the state
of everything still open at its end, and the ingest of the next file resumes from
it: the rows come out as from one ingest of all the files (``docs/resume.md``).

How this works.

- *Which files.* Only files named like a rotation's (a run of 4+ digits, or the
  number ``tcpdump -C`` appends: ``capset.recording_name``; the first file of a
  ``-C`` rotation, ``cap.pcap``, once ``cap.pcap1`` is beside it:
  ``capset.first_of_size_rotation``) keep state. A later
  ingest continues a set when its files have the set's name pattern, the same
  link types as its last file, and their first packet is at most
  ``ROTATION_OVERLAP_NS`` before the set's last packet and at most a day after
  (``find``). Some of the set's files again are refused (``AlreadyIngested``);
  all of them are a re-ingest, which replaces the set.
- *What is kept* (``snapshot``), in ``DATA/_state/capture_id=<id>/state.bin``: a
  JSON header (format version, the count of the set's files and the last few of
  them, its name pattern, last packet time, counters) and a pickle of the TCP flow
  tracker (sequence bases, next expected sequence numbers, held flows, the flow id
  counter), the application layer's bookkeeping and, per open connection, its
  reassembly and protocol sessions (TLS record state, HTTP, HTTP/2 HPACK table and
  streams, WebSocket framing and inflate window, FIX). Key material never: the key log and every
  decryptor are left out (``TlsSession.__getstate__`` keeps the client random,
  the key log label, the KeyUpdate generation and the record sequence number),
  and keys are derived again from the next command's key log. A decrypted TLS
  connection's state is sealed (``parsers.tls.seal``: AES-256-GCM under a key
  derived from its own key log secret); any other connection's state holds only
  bytes the capture holds, and is stored as it is.
- *O(its file), not O(the set)*: what recognises the set's files again (their first
  packet time and the hash of their head) is a sorted NumPy array beside the state
  (``KEYS``, 40 bytes a file, searched with ``searchsorted``: no Python object per
  file), and their other columns are the set's ``captures`` rows, which the next
  command extends in Arrow (``driver._capture_rows``). Up to format 3 the header
  listed every file (~1.2 kB of Python objects per file each time a command parsed
  it); such a state is still read, its list turned into ``KEYS`` by the next command.
- *Bounded*: ``Limits.resume_max_bytes`` of connection state; past it the least
  recently active connections are dropped from resume (``resume_dropped``), and
  continue in the next file as connections opened before it.
- *Atomic*: the state is staged with the tables and swapped in by the same
  commit (``store.Staging.commit``): a crash leaves both as they were.
- *The rows.* Everything an ingest writes before its end is final; what the end
  of the capture writes (connections finished because the file ended, the
  ``flows`` rows of flows still open) is provisional: its parts are named
  ``part-t*`` (``TAIL_PREFIX``), and the next ingest of the set keeps the set's
  other parts where they are and drops the provisional ones. ``flows`` too: a
  final part is written again only when a row of it is (a late packet on an ended
  flow, a venue learnt later: ``OldFlows``). The matcher's rows and the derived
  tables follow the same split: each command matches and derives its own rows
  and what the previous command carried, writes the rows no later file can
  change as final parts and the others as provisional ones
  (``pipelines.match_carry``, ``pcapflow.why_carry``), and falls back to the
  whole set when a premise fails. Its commit is an append (``carry``,
  ``store.APPEND``): its own parts go into the set's partitions and the
  provisional ones out, under one journal, so the commit costs this file's
  parts, not the set's.

The pickle is read back with an allow-list of classes (pcapflow's, NumPy's and a
few builtins), and only from a dataset the user wrote.
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from ... import __version__
from ...parsers.capture.capset import (
    MAX_SET_GAP_NS,
    ROTATION_OVERLAP_NS,
    SetFile,
    peek,
    recording_name,
    rotation_named,
)
from ...parsers.errors import PcapflowError
from ...parsers.events import Anomaly
from ...parsers.limits import Limits
from ...parsers.tcp.analysis import (
    C_HIGH_WATER,
    D_TS_PEND_SET,
    D_TS_PEND_TS,
    F_ID,
    F_SLOT,
    SLOT_FREE,
)
from ...parsers.tls.keylog import KeyLog
from .. import store

if TYPE_CHECKING:
    from ...parsers.tcp.analysis import FlowTracker
    from ...parsers.tls.session import TlsSession
    from .app_layer import AppLayer

STATE_VERSION = 4
"""Format of ``state.bin``; bump when a pickled class changes shape (4: the header
keeps the count of the set's files and the last ``LAST_FILES`` of them, the keys of
all of them are in ``KEYS``; 3 and before: the header listed every file; 3: the flow
tracker keeps its slots up to the high-water mark and no hash table,
``FlowTracker.__getstate__``; 2: the body is zstd-compressed; 1, zlib: 1 and 2 are still
read, the tracker's ``__setstate__`` takes both shapes)."""
READ_VERSIONS = (1, 2, 3, STATE_VERSION)
MAGIC = b"PCAPFLOW-STATE\n"
STATE_DIR = store.STATE
STATE_FILE = "state.bin"
KEYS = "files.npy"
"""Beside ``state.bin``: (first packet time, head hash) of every file of the set with a
packet, sorted (``file_keys``); replaced with the state by each command."""
KEY_DTYPE = [("ts", "<i8"), ("head", "S32")]
LAST_FILES = 4
"""Files of the set the header keeps in full (the last ones: what a resumed command
names, ``Previous.last_path``)."""
TAIL_PREFIX = "t"
"""Part-name prefix of the rows an ingest writes at the end of its capture."""
_HEADER = struct.Struct("!I")


class StateError(PcapflowError):
    """A resume state this pcapflow cannot read."""

    code = "resume_state"


class AlreadyIngested(PcapflowError):
    """The files are already part of the capture set whose state the dataset holds."""

    code = "already_ingested"



_TLS_SESSION = __name__.rsplit(".", 3)[0] + ".parsers.tls.session"
"""The module of ``TlsSession``: imported with the first TLS connection."""


def _is_tls(session: object) -> TypeGuard[TlsSession]:
    """Is ``session`` a ``TlsSession`` (never, when no TLS connection was made)?"""
    module = sys.modules.get(_TLS_SESSION)
    return module is not None and isinstance(session, module.TlsSession)


def _head_id(f: SetFile) -> str:
    return hashlib.sha256(f.head).hexdigest()[:32]


def file_meta(f: SetFile) -> dict[str, Any]:
    """What the state keeps of one file of the set (its ``captures`` row, and what
    recognises it again)."""
    return {"path": f.path, "first_ts": f.first_ts, "head": _head_id(f),
            "link_types": list(f.link_types), "format": f.format,
            "compression": f.compression, "sha256": f.sha256,
            "content_sha256": f.content_sha256, "packets": f.packets, "bytes": f.bytes,
            "min_ts": f.min_ts, "max_ts": f.max_ts}


@dataclass(slots=True)
class Previous:
    """A set the dataset holds state for, which the files being ingested continue."""

    path: Path
    header: dict[str, Any]
    body: bytes = b""
    core: dict[str, Any] = field(default_factory=dict)

    @property
    def capture_id(self) -> str:
        return str(self.header["capture_id"])

    @property
    def n_files(self) -> int:
        """Files in the set so far (format 3 and before: the header's list)."""
        return n_files(self.header)

    @property
    def last_path(self) -> str:
        """The path of the set's last file."""
        return str(last_files(self.header)[-1]["path"])

    def keys(self) -> Any:
        """The set's files' keys, sorted (``KEY_DTYPE``): ``KEYS``, or the header's
        list of a format-3 state."""
        return file_keys(self.path.parent, self.header)

    def load(self, keylog: KeyLog | None, limits: Limits) -> None:
        """Unpickle the body (the tracker and the connections' records)."""
        try:
            body = unpack_body(self.body)
        except (zlib.error, OSError, ValueError) as err:
            raise StateError(f"{self.path}: damaged resume state: re-ingest the file with "
                             "--new-set") from err
        try:
            self.core = _loads(body, keylog, limits)
        except StateError:
            raise
        except Exception as err:  # a class changed shape without a new format version
            raise StateError(f"{self.path}: unreadable resume state ({type(err).__name__}): "
                             "re-ingest the file with --new-set") from err


def _read(path: Path, *, body: bool) -> tuple[dict[str, Any], bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise StateError(f"{path}: not a pcapflow resume state: re-ingest the capture "
                             "with --new-set")
        (n,) = _HEADER.unpack(fh.read(_HEADER.size))
        try:
            header = json.loads(fh.read(n))
        except ValueError as err:
            raise StateError(f"{path}: unreadable resume state: re-ingest the capture "
                             "with --new-set") from err
        return header, (fh.read() if body else b"")


def n_files(header: dict[str, Any]) -> int:
    """Files in the set whose state's header this is."""
    if "files" in header:  # (format 3 and before)
        return len(header["files"])
    return int(header["n_files"])


def last_files(header: dict[str, Any]) -> list[dict[str, Any]]:
    """The last files of the set (``file_meta``), at most ``LAST_FILES``."""
    files = header["files"] if "files" in header else header["last_files"]
    return list(files[-LAST_FILES:])


def _keys_of(metas: Sequence[dict[str, Any]]) -> Any:
    import numpy as np

    out = np.array([(int(m["first_ts"]), str(m["head"]).encode()) for m in metas
                    if m["first_ts"] is not None], dtype=KEY_DTYPE)
    return np.sort(out, order=["ts", "head"])


def file_keys(state_dir: Path, header: dict[str, Any]) -> Any:
    """The keys (``KEY_DTYPE``, sorted) of the files of the set whose state is in
    ``state_dir``: its ``KEYS``, or (format 3 and before) the header's list."""
    import numpy as np

    if "files" in header:
        return _keys_of(header["files"])
    try:
        return np.load(state_dir / KEYS, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise StateError(f"{state_dir / KEYS}: unreadable resume state ({err}): re-ingest "
                         "the file with --new-set") from err


def save_keys(out_dir: Path, prev: Previous | None, new: Sequence[dict[str, Any]]) -> None:
    """Stage ``KEYS``: the set's keys so far and those of ``new`` (``file_meta``s)."""
    import numpy as np

    add = _keys_of(new)
    keys = add if prev is None else np.sort(np.concatenate([prev.keys(), add]),
                                            order=["ts", "head"])
    np.save(out_dir / KEYS, keys, allow_pickle=False)


def _known(keys: Any, ts: int, head: str) -> bool:
    """Whether ``keys`` (sorted ``KEY_DTYPE``) holds (``ts``, ``head``): O(log n)."""
    import numpy as np

    col = keys["ts"]
    lo, hi = int(np.searchsorted(col, ts, "left")), int(np.searchsorted(col, ts, "right"))
    return bool((keys["head"][lo:hi] == head.encode()).any()) if hi > lo else False


def _set_paths(root: Path, header: dict[str, Any], paths: Sequence[str]) -> list[bool]:
    """Which of ``paths`` (absolute) are files of the set ``header`` is the state of:
    its ``captures`` rows' paths, matched in Arrow (format 3: the header's list)."""
    if "files" in header:
        names = {os.path.abspath(str(x["path"])) for x in header["files"]}
        return [p in names for p in paths]
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    part = store.partition_dir(root, "captures", str(header["capture_id"]))
    try:
        files = sorted(part.glob("*.parquet"))
        col = pa.chunked_array([pq.read_table(f, columns=["path"]).column("path")
                                for f in files], type=pa.string())
    except (OSError, pa.ArrowException):
        return [False] * len(paths)
    # (the rows keep paths as given, relative or not: the rows whose name ends as one
    # of ``paths`` does are compared in full, a few Python strings, not one per file)
    out = []
    for p in paths:
        near = pc.filter(col, pc.ends_with(col, os.path.basename(p))).to_pylist()
        out.append(any(x is not None and os.path.abspath(x) == p for x in near))
    return out


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``state.bin``."""
    return _read(path, body=False)[0]


def _check_version(path: Path, header: dict[str, Any]) -> None:
    version, made_by = header.get("version"), header.get("pcapflow_version")
    if version not in READ_VERSIONS or made_by != __version__:
        raise StateError(
            f"{path}: resume state format {version} (pcapflow {made_by}); this pcapflow "
            f"{__version__} reads format {STATE_VERSION}: re-ingest the file with --new-set "
            "(or ingest the whole rotation in one command)")


def find(root: Path, paths: list[str], exclude: Sequence[str] = ()) -> Previous | None:
    """The set in ``root`` the files ``paths`` continue (module docstring), or None.

    ``exclude``: files of the other capture sets of the same command. The planner
    (``capset.capture_sets``) told them apart from ``paths``, so a set holding one of
    them is never continued, whichever order (or ``--jobs`` process) ingests them."""
    sdir = root / STATE_DIR
    if not sdir.is_dir() or not paths or not all(rotation_named(p) for p in paths):
        return None
    rec = list(recording_name(paths[0]))
    rec[2] = list(rec[2])
    if any([*recording_name(p)[:2], list(recording_name(p)[2])] != rec for p in paths):
        return None
    states = sorted(sdir.glob(f"capture_id=*/{STATE_FILE}"))
    heads: list[dict[str, Any]] = []
    others = [os.path.abspath(p) for p in exclude]
    for path in states:
        header, _ = _read(path, body=False)
        if header.get("recording") != rec:
            continue
        if others and any(_set_paths(root, header, others)):
            continue  # a set this command planned apart
        heads.append({"path": path, **header})
    if not heads:
        return None
    files = [peek(p) for p in paths]
    timed = [f for f in files if f.first_ts is not None]
    if not timed:  # files without packets (an idle rotation period): the latest set's
        latest = max(heads, key=lambda h: int(h["last_key"]))
        if all(_set_paths(root, latest, [os.path.abspath(p) for p in paths])):
            raise AlreadyIngested(_already(paths, latest))
        return _previous(latest)
    mine = [(int(f.first_ts), _head_id(f)) for f in timed if f.first_ts is not None]
    first = min(timed, key=lambda f: (f.first_ts, os.path.basename(f.path)))
    best: dict[str, Any] | None = None
    for h in heads:
        keys = file_keys(h["path"].parent, h)  # (sorted: each of ``mine`` looked up)
        hits = sum(_known(keys, ts, head) for ts, head in set(mine))
        if hits == len(set(mine)) and len(keys) > hits:  # some files of the set again
            raise AlreadyIngested(_already([f.path for f in timed], h))  # (all: re-ingest)
        if hits or first.first_ts is None:
            continue
        if list(first.link_types) != h["link_types"]:
            continue
        last = int(h["last_key"])
        if first.first_ts + ROTATION_OVERLAP_NS < last or first.first_ts - last > MAX_SET_GAP_NS:
            continue
        if best is None or last > int(best["last_key"]):
            best = h
    return None if best is None else _previous(best)


def _already(paths: list[str], h: dict[str, Any]) -> str:
    names = ", ".join(os.path.basename(p) for p in paths)
    return (f"{names}: already ingested, as part of capture {h['capture_id']} "
            f"({n_files(h)} files); nothing done (--new-set would ingest it alone, "
            "replacing that capture)")


def _previous(found: dict[str, Any]) -> Previous:
    path = found.pop("path")
    _check_version(path, found)
    header, body = _read(path, body=True)
    return Previous(path=path, header=header, body=body)


# --- pickling without key material -----------------------------------------------------
class _Pickler(pickle.Pickler):
    """The key log and the limits are the command's own: referred to, not stored."""

    def persistent_id(self, obj: object) -> str | None:
        if isinstance(obj, KeyLog):
            return "keylog"
        if isinstance(obj, Limits):
            return "limits"
        return None


_ALLOWED_BUILTINS = frozenset({"set", "frozenset", "bytearray", "slice", "complex", "range",
                               "getattr"})


class _Unpickler(pickle.Unpickler):
    """Restores only pcapflow's, NumPy's and plain builtin types."""

    def __init__(self, data: io.BytesIO, keylog: KeyLog | None, limits: Limits) -> None:
        super().__init__(data)
        self._refs = {"keylog": keylog, "limits": limits}

    def persistent_load(self, pid: object) -> object:
        return self._refs[str(pid)]

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".")[0]
        if (top in ("pcapflow", "numpy", "collections", "copyreg", "_codecs")
                or (module == "builtins" and name in _ALLOWED_BUILTINS)):
            return super().find_class(module, name)
        raise StateError(f"resume state refers to {module}.{name}: re-ingest with --new-set")


def _dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _refuse(obj: object) -> Any:
    raise pickle.PicklingError(f"a {type(obj).__name__} in the resume state's core")


class _CorePickler(pickle.Pickler):
    """The state's core (the tracker, the application layer's bookkeeping, the
    connections' records as bytes): no key log nor limits in it (refused), so no
    ``persistent_id``, a Python call per object pickled (~10 ms for the ~10^4 flows
    held at one-second files)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.dispatch_table = _CORE_DISPATCH


_CORE_DISPATCH = {**copyreg.dispatch_table, KeyLog: _refuse, Limits: _refuse}


def _dumps_core(obj: object) -> bytes:
    buf = io.BytesIO()
    _CorePickler(buf).dump(obj)
    return buf.getvalue()


def _loads(data: bytes, keylog: KeyLog | None, limits: Limits) -> Any:
    return _Unpickler(io.BytesIO(data), keylog, limits).load()


def _aad(capture_id: str, flow_id: int, version: int = STATE_VERSION) -> bytes:
    """A sealed record's additional data: the format that wrote it (``version``: the
    state's own, on reading), the set and the flow."""
    return f"pcapflow-state-v{version}:{capture_id}:{flow_id}".encode()


# --- saving ----------------------------------------------------------------------------
def snapshot(capture_id: str, tracker: FlowTracker, app: AppLayer | None,
             limits: Limits) -> tuple[bytes, list[Anomaly]]:
    """The pickled state (``pack`` adds the header), and the anomalies of the
    connections dropped from resume."""
    records: list[tuple[int, bytes | None, str | None, bytes]] = []
    anomalies: list[Anomaly] = []
    fresh: set[int] = set()
    if app is not None:
        fresh = set(app.fresh)
        budget = limits.resume_max_bytes
        for conn in sorted(app.conns.values(), key=lambda c: -c.last_ts):
            fid = conn.flow_id
            try:
                blob = _dumps(conn)
            except Exception as err:  # a state that cannot be carried (an old cipher)
                fresh.add(fid)
                anomalies.append(_dropped(conn.last_ts, fid, f"its state cannot be kept "
                                          f"({type(err).__name__})"))
                continue
            if len(blob) > budget:
                fresh.add(fid)
                anomalies.append(_dropped(conn.last_ts, fid, (
                    f"its {len(blob)} bytes of state are past what is left of "
                    f"resume_max_bytes={limits.resume_max_bytes} (raise it with --limit)")))
                continue
            budget -= len(blob)
            session = conn.outer.session if conn.outer.name == "tls" else None
            src = session.resume_secret() if _is_tls(session) else None
            if src is not None:
                from ...parsers.tls.seal import seal, seal_key

                random, label, secret = src
                blob = seal(seal_key(secret, random), blob, _aad(capture_id, fid))
                records.append((fid, random, label, blob))
            else:
                records.append((fid, None, None, blob))
    held = tracker.fstate[tracker.fstate[:, F_SLOT] != SLOT_FREE, F_ID]
    core: dict[str, Any] = {"tracker": tracker, "conns": records, "fresh": fresh,
                            "held": held.astype("int64")}
    if app is not None:
        core.update(done=app.done, info=app.info, last_ts=app.last_ts,
                    last_packet=app.last_packet)
    return _dumps_core(core), anomalies


def add_anomalies(path: Path, n: int) -> None:
    """Add ``n`` to the set's anomaly count in the staged ``state.bin`` ``path`` (rows
    the matcher wrote after the state was staged: ``match_carry.IdBound``)."""
    header, body = _read(path, body=True)
    header["anomalies"] = int(header["anomalies"]) + n
    head = json.dumps(header).encode()
    path.write_bytes(MAGIC + _HEADER.pack(len(head)) + head + body)


def pack(header: dict[str, Any], core: bytes) -> bytes:
    """``state.bin``: magic, header length, the JSON header, the pickled state
    (compressed: the tracker's arrays are mostly zeros; zstd, through pyarrow, is 3x
    faster than zlib at its fastest level on them: ~15 against ~50 ms for the 14 MB of
    a set holding 11,000 flows, and decompresses in a third of zlib's time)."""
    head = json.dumps({**header, "version": STATE_VERSION,
                       "pcapflow_version": __version__}).encode()
    return MAGIC + _HEADER.pack(len(head)) + head + _ZSTD_LEN.pack(len(core)) + _zstd().compress(
        core, asbytes=True)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_LEN = struct.Struct("!Q")
"""Before a version-2 body: the pickle's length (zstd's decompressor wants it)."""


def _zstd() -> Any:
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=1)


def unpack_body(body: bytes) -> bytes:
    """The pickled state of a ``state.bin`` body (version 2: its length and a zstd
    frame; version 1: zlib)."""
    n = _ZSTD_LEN.size
    if body[n:n + len(_ZSTD_MAGIC)] == _ZSTD_MAGIC:
        (size,) = _ZSTD_LEN.unpack(body[:n])
        return bytes(_zstd().decompress(body[n:], decompressed_size=size, asbytes=True))
    return zlib.decompress(body)


def _dropped(ts: int, fid: int, why: str) -> Anomaly:
    return Anomaly(ts=ts, flow_id=fid, direction=None, layer="tcp", code="resume_dropped",
                   detail=f"this connection was still open at the end of the file and "
                   f"{why}: the next file's ingest decodes it as a connection opened before "
                   "the capture")


# --- resuming --------------------------------------------------------------------------
def restore(prev: Previous, app: AppLayer) -> tuple[list[Anomaly | object], int]:
    """Put the previous file's connections back into ``app``; returns the events to
    dispatch (anomalies: keys the key log lacks) and the connections resumed."""
    core = prev.core
    app.done = set(core["done"])
    app.info = dict(core["info"])
    app.last_ts = int(core["last_ts"])
    app.last_packet = int(core["last_packet"])
    app.fresh = set(core["fresh"])
    events: list[Any] = []
    for fid, random, label, blob in core["conns"]:
        data: bytes | None = blob
        if random is not None:
            from ...parsers.tls.seal import seal_key, unseal

            secret = app.keylog.get(random, label) if app.keylog is not None else None
            data = None if secret is None else unseal(
                seal_key(secret, random), blob,
                _aad(prev.capture_id, fid, int(prev.header.get("version", STATE_VERSION))))
            if data is None:
                app.fresh.add(fid)
                where = ", ".join(app.keylog.sources) if app.keylog is not None else "none"
                events.append(Anomaly(
                    ts=app.last_ts, flow_id=fid, direction=None, layer="tls",
                    code="resume_missing_keys",
                    detail=f"this TLS connection continues from the previous capture file "
                    f"({os.path.basename(prev.last_path)}); resuming it needs "
                    f"{label} of client_random {random.hex()}, which the key log given "
                    f"(--keylog: {where}) lacks: pass the key log the client wrote when "
                    "it opened. Its records are kept, not decrypted"))
                continue
        assert data is not None
        conn = _loads(data, app.keylog, app.limits)
        session = conn.outer.session
        if _is_tls(session):
            events += session.resume_keys(app.keylog, conn.last_ts)
        app.conns[fid] = conn
    return events, len(app.conns)


# --- the rows of the set so far ---------------------------------------------------------
REGENERATED = ("captures",)
"""Tables a resumed ingest writes anew for the whole set (one ``captures`` row per
file); every other table's final parts are carried over as they are: the matcher's
(``pipelines.match_carry`` writes the rows no later file changes as final parts, and
drops the set's when it matches the whole set) and ``flows``' (its final parts, the
flows ended before the file's end, stay; its provisional ones, the flows held open at
the end, are made again; a final part is written again only when one of its flows
changes venue or gets a late packet: ``OldFlows``)."""


def carry(prev: Previous, root: Path, stage: Path) -> None:
    """Plan the append-mode commit of this ingest onto the set ``prev``
    (``store.APPEND``): the set's final parts (all but the provisional ``part-t*``)
    of every table but ``REGENERATED`` stay where they are and are listed in
    ``CARRIED`` (``staged_parts`` reads them with the staged ones); its provisional
    parts, and its state but the matcher's scan files, are replaced by the commit.
    Nothing is linked or copied: one listing per table."""
    from ..tables.schemas import TABLES

    carried: list[str] = []
    drop: dict[str, list[str]] = {}
    tail = f"part-{TAIL_PREFIX}"
    for table in TABLES:
        if table in REGENERATED:
            continue
        carried.append(table)
        # (the provisional parts only: a stream of directory entries, one at a time, not
        # a list of the partition's thousands of names per table per command)
        try:
            with os.scandir(store.partition_dir(root, table, prev.capture_id)) as it:
                drop[table] = sorted(e.name for e in it if e.name.startswith(tail)
                                     and e.name.endswith(".parquet"))
        except FileNotFoundError:
            drop[table] = []
    state = store.partition_dir(root, STATE_DIR, prev.capture_id)
    drop[STATE_DIR] = [n for n in store.files_under(str(state), skip=CANDIDATES)
                       if n != CANDIDATES]
    # which parts are the set's earlier ones (the derive reads only the others): all the
    # final ones of its partitions but those the commit drops (``OldParts``), so the
    # manifest names the exceptions only, not a part per table per file of the set
    (stage / CARRIED).write_text(json.dumps({"version": 2, "tables": sorted(carried)}))
    (stage / store.APPEND).write_text(json.dumps({"capture_id": prev.capture_id,
                                                  "drop": drop}))


def carried_parts(stage: Path) -> dict[str, list[Path]]:
    """The set's earlier final parts an ingest staged in ``stage`` reads (``carry``),
    per table: paths in the dataset. Empty when it begins a set."""
    old = OldParts(stage)
    return {t: old[t] for t in old.tables}


def staged_parts(stage: Path, tables: Sequence[str]) -> dict[str, list[Path]]:
    """The Parquet parts of each of ``tables`` an ingest staged in ``stage`` reads as
    the whole set's: the set's earlier final parts (``carried_parts``) and the staged
    ones, in name order (as one directory of them would list)."""
    old = carried_parts(stage)
    return {t: sorted([*old.get(t, []), *(stage / t).glob("*.parquet")],
                      key=lambda p: p.name) for t in tables}


class OldParts:
    """Per table, the set's earlier final parts (``carried_parts``), listed when a
    table's are first asked for: its partition's final parts but those this ingest's
    commit drops (``store.APPEND``, as it stood when this was made). The set has one
    part per table per file (tens of thousands after days of 1-minute files), and a
    command that matches and derives its own rows asks for a few tables' (whether the
    set has matcher rows), reading none; a whole match or derive asks for them all.
    A mapping of ``get``, ``[]`` and ``[] =`` (what the carries use)."""

    __slots__ = ("_dir", "_drop", "_paths", "tables")

    def __init__(self, stage: Path | None = None) -> None:
        self.tables: list[str] = []
        self._drop: dict[str, set[str]] = {}
        self._paths: dict[str, list[Path]] = {}
        self._dir: Callable[[str], Path] | None = None
        if stage is None or not (manifest := stage / CARRIED).is_file():
            return
        plan = json.loads((stage / store.APPEND).read_text())
        capture_id = plan["capture_id"]
        root = stage.parent.parent  # (DATA/.staging/<txn>)
        self.tables = list(json.loads(manifest.read_text())["tables"])
        self._drop = {t: set(names) for t, names in plan["drop"].items()}
        self._dir = lambda t: store.partition_dir(root, t, capture_id)

    def get(self, table: str, default: Any = None) -> Any:
        if table in self._paths:
            return self._paths[table]
        if table not in self.tables or self._dir is None:
            return default
        base = self._dir(table)
        drop = self._drop.get(table, set())
        try:
            with os.scandir(base) as it:
                names = sorted(e.name for e in it if e.name.endswith(".parquet")
                               and not e.name.startswith(f"part-{TAIL_PREFIX}")
                               and e.name not in drop)
        except FileNotFoundError:
            names = []
        paths = self._paths[table] = [base / n for n in names]
        return paths

    def _names(self, table: str) -> Any:
        """The names of ``table``'s earlier final parts, one directory entry at a time
        (nothing kept: ``has`` and ``count`` cost no object per part of the set)."""
        if table not in self.tables or self._dir is None:
            return
        drop = self._drop.get(table, set())
        try:
            with os.scandir(self._dir(table)) as it:
                for e in it:
                    n = e.name
                    if (n.endswith(".parquet") and not n.startswith(f"part-{TAIL_PREFIX}")
                            and n not in drop):
                        yield n
        except FileNotFoundError:
            return

    def has(self, table: str) -> bool:
        """Whether the set has an earlier final part of ``table`` (``bool(self[table])``
        without listing them all)."""
        if table in self._paths:
            return bool(self._paths[table])
        return next(iter(self._names(table)), None) is not None

    def count(self, table: str) -> int:
        """How many earlier final parts of ``table`` (``len(self[table])``, no list)."""
        if table in self._paths:
            return len(self._paths[table])
        return sum(1 for _ in self._names(table))

    def __getitem__(self, table: str) -> list[Path]:
        out: list[Path] = self.get(table, [])  # (a table the set has no part of: none)
        return out

    def __setitem__(self, table: str, parts: list[Path]) -> None:
        self._paths[table] = parts

    def __contains__(self, table: object) -> bool:
        return table in self._paths or table in self.tables


@dataclass(slots=True)
class StagedParts:
    """The staged Parquet parts of one ingest, by origin (what the matcher's and the
    derive's carries read: ``pipelines.match_carry``, ``pcapflow.why_carry``)."""

    old: OldParts = field(default_factory=OldParts)
    """The set's earlier final parts (in the dataset: ``carried_parts``)."""
    new: dict[str, list[Path]] = field(default_factory=dict)
    """This command's final parts."""
    tail: dict[str, list[Path]] = field(default_factory=dict)
    """This command's provisional parts (``part-t*``)."""
    resumed: bool = False

    @classmethod
    def of(cls, stage_dir: Path) -> StagedParts:
        from ..tables.schemas import TABLES

        out = cls(old=OldParts(stage_dir), resumed=(stage_dir / CARRIED).is_file())
        for t in TABLES:
            files = sorted((stage_dir / t).glob("*.parquet"))
            out.tail[t] = [p for p in files if p.name.startswith(f"part-{TAIL_PREFIX}")]
            out.new[t] = [p for p in files if not p.name.startswith(f"part-{TAIL_PREFIX}")]
        return out

    def fresh(self, t: str) -> list[Path]:
        """This command's parts of ``t``, final and provisional."""
        return [*self.new.get(t, []), *self.tail.get(t, [])]


def drop_carried(stage: Path, table: str, parts: Sequence[Path]) -> None:
    """The set's earlier parts ``parts`` of ``table`` go in this ingest's commit (their
    rows are made again: ``why_carry.whole``)."""
    names = {p.name for p in parts}
    if not names:
        return
    path = stage / store.APPEND  # (``OldParts`` lists the partition but these)
    plan = json.loads(path.read_text())
    plan["drop"][table] = sorted({*plan["drop"].get(table, []), *names})
    path.write_text(json.dumps(plan))


def keep_state_files(stage: Path, names: Sequence[str]) -> None:
    """The set's state files ``names`` (paths in its state partition) stay where they
    are through this ingest's commit, which otherwise replaces the whole state
    (``carry``): a carry that adds to what it kept (``match_carry.Window``'s parts)."""
    path = stage / store.APPEND
    if not names or not path.is_file():
        return
    plan = json.loads(path.read_text())
    keep = set(names)
    plan["drop"][STATE_DIR] = [n for n in plan["drop"].get(STATE_DIR, []) if n not in keep]
    path.write_text(json.dumps(plan))


CARRIED = "_carried_parts.json"
"""Staging file: this ingest continues a set (``carry``) and keeps the set's earlier final
parts of these tables (``tables``): all of each partition's final parts but those its
commit drops (``OldParts``, ``carried_parts``), which it reads and keeps
(``pcapflow.why_carry``). Names no part: its size is the set's tables', not its files'."""
STABLE = "stable.npy"
"""In a staged state: (flow id, packets) of the flows still held at the end of the file
that had ended; their ``flows`` rows are final (``driver._stable``)."""
HELD = "held.npy"
"""In a staged state: the ids of the flows whose per-connection rows the matcher's and
the derive's carries keep (``carried_flows``)."""


def timed_since(tracker: FlowTracker, app: AppLayer | None) -> int | None:
    """The first transmission time of the oldest outbound (``out``) segment still timed
    at the end of a file: on a connection the application layer holds, its oldest
    segment not acknowledged (``Connection.unacked``: a later ACK makes an ``ack``
    sample of it); on a flow the tracker holds, the TSval its client side waits to see
    echoed (a ``tsecr`` sample). Every ``out`` RTT sample a later file adds was sent
    then or later (ACKs are cumulative and one TSval per side is timed at a time):
    ``match_carry._cut`` needs no earlier margin for them. None: no segment is timed."""
    import numpy as np

    t: int | None = None
    if app is not None:
        for conn in app.conns.values():
            q = conn.unacked[0]
            if q and (t is None or q[0][1] < t):
                t = int(q[0][1])
    hw = int(tracker.counters[C_HIGH_WATER])
    rows = np.flatnonzero(tracker.fstate[:hw, F_SLOT] != SLOT_FREE)
    if len(rows):
        side = tracker.dstate[2 * rows]  # (the client's side: ``out``)
        pend = side[side[:, D_TS_PEND_SET] == 1, D_TS_PEND_TS]
        if len(pend):
            low = int(pend.min())
            t = low if t is None else min(t, low)
    return t


def carried_flows(held: Any, ended: Any, app: AppLayer | None) -> Any:
    """Of the flows the tracker holds at the end of a file (``held``, ``ended``: which
    of them have ended), those the next command may still add messages, orders or RTT
    samples to, whose per-connection rows the matcher's and the derive's carries keep
    (``HELD``): all but the ended ones whose connection the application layer closed
    (``AppLayer.done``: it takes nothing more of them) without application-layer data
    (no message, so no order: an unknown protocol, or none). Within the tracker's
    grace such a flow may still get a late packet, but only TCP-level rows come of it
    (``tcp_events``, a ``tsecr`` sample of a connection without orders), which neither
    reads per connection; it stays held by the tracker (its ``flows`` row is made again
    with the packet). A rotation of many short connections holds ~a minute of them
    (``GRACE_NS``): the carries then follow the open ones, not the minute's."""
    import numpy as np

    from .flow_rows import _has_app_data

    held = np.asarray(held, np.int64)
    if app is None or not len(held) or not app.done:
        return held
    done, info = app.done, app.info
    # (vectorized: which held flows ended and are done; then, of those only, which have
    # application-layer data: a rotation of short connections holds ~20k of them)
    cand = np.flatnonzero(np.asarray(ended, bool))
    if len(cand):
        cand = cand[np.isin(held[cand], np.fromiter(done, np.int64, len(done)))]
    if not len(cand):
        return held
    drop = np.zeros(len(held), bool)
    # (most are plain TCP: no info, or only ``app_protocol: unknown``, told by a dict
    # comparison without ``_has_app_data``'s Python loop)
    get = info.get
    drop[cand] = [v is None or v == _UNKNOWN or not _has_app_data(v)
                  for v in map(get, held[cand].tolist())]
    return held[~drop]


_UNKNOWN: dict[str, object] = {"app_protocol": "unknown"}


CANDIDATES = "candidates"
"""Sub-directory of the state: the matcher's ingest-time scan of the set's final
``ws_messages`` parts (``prefilter.stage_ws_candidates``), so the next ingest's
matcher reads those instead of scanning the whole set's messages again."""


def keep_candidates(stage: Path, side: str) -> None:
    """At the switch to provisional parts: the scan files this ingest wrote so far
    (final, as the rows they cover) go into the staged state, renamed to keep their
    order after the set's earlier ones (``carry_candidates`` linked those, named
    ``0000-<k>``; the commit appends to the set's state: ``carry``)."""
    src = stage / side
    if not src.is_dir():
        return
    out = stage / STATE_DIR / CANDIDATES
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.arrow"))
    earlier = sum(1 for f in files if f.name.startswith(_KEPT))
    for k, f in enumerate(f for f in files if not f.name.startswith(_KEPT)):
        _link(f, out / f"{_KEPT}{earlier + k:09d}.arrow")  # before any process id's names


_KEPT = "0000-"
"""Name prefix of the scan files kept in a set's state (``keep_candidates``)."""


def carry_candidates(prev: Previous, root: Path, stage: Path, side: str) -> None:
    """The set's scan files (``keep_candidates``) into this ingest's staging."""
    src = store.partition_dir(root, STATE_DIR, prev.capture_id) / CANDIDATES
    if src.is_dir():
        (stage / side).mkdir(parents=True, exist_ok=True)
        for f in sorted(src.glob("*.arrow")):
            _link(f, stage / side / f.name)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        import shutil

        shutil.copyfile(src, dst)


@dataclass(slots=True)
class OldFlows:
    """The set's ``flows`` rows a resumed ingest reads (``old_flows``): all but those of
    the flows it resumes (still held by the tracker: their rows were provisional and
    are made again), with the part each row is in. The matcher is given those with
    application-layer data (a flow's venue may depend on the set's other flows); the
    ingest writes again only the rows of the parts in ``rewrite`` and of those in which
    a row changes venue (``FlowRows.finish``): the others stay where they are.

    ``partial``: read with the set's ``FlowsIndex``: the rows of every part with
    application-layer data, and all rows of the parts in ``rewrite`` only (the other
    parts' rows without it, ~99.8% of a synthetic rotation's, are not read)."""

    rows: Any
    """pyarrow Table (``flows`` without ``capture_id``)."""
    part: Any
    """NumPy array of int32: the part each row of ``rows`` is in, as its index in
    ``names`` (ints: a set of days has millions of rows; ``in_parts`` tests them)."""
    rewrite: set[str]
    """Parts this ingest replaces whatever the matcher says: provisional ones
    (``part-t*``: their rows of flows no longer held are final now) and final ones
    holding a row this ingest writes again (a resumed flow: ``pcapflow match`` writes
    one part; an ended flow a late packet changed: ``STABLE``)."""
    names: list[str] = field(default_factory=list)
    """The parts' file names (``part``)."""
    row: Any = None
    """NumPy array of int32: each row's index in its part (``FlowsIndex``)."""
    partial: bool = False
    at: Any = None
    """The previous command's ``FlowsIndex.at`` (None: none)."""
    where: Any = None
    """(dataset root, capture id) of the set (to read the parts not read: ``partial``)."""
    n_app: int = -1
    """How many of ``rows`` come first with application-layer data (``_app_first``;
    -1: not ordered so)."""

    def in_parts(self, parts: Any) -> Any:
        """Which rows are in the parts named ``parts`` (a NumPy bool array)."""
        import numpy as np

        wanted = set(parts)
        want = [i for i, n in enumerate(self.names) if n in wanted]
        return np.isin(self.part, np.asarray(want, np.int32))

    def part_names(self, mask: Any) -> set[str]:
        """The names of the parts the rows ``mask`` are in."""
        import numpy as np

        return {self.names[i] for i in np.unique(self.part[mask]).tolist()}


OLD_PLAIN = "_flows_old_plain.parquet"
"""Staging file: the set's ``flows`` rows of flows without application-layer data
(``FlowRows.finish``) that this ingest read (all, or with a ``FlowsIndex`` those of the
parts it writes again): not given to the matcher (their venue is their address's, kept
as written), read by the derived tables with the staged ``flows`` parts (which add the
rows they need of the others: ``FlowsIndex.near``)."""
OLD_VENUES = "_flows_old_venues.parquet"
"""Staging file: (flow_id, venue) of the set's ``flows`` rows as stored (``OldFlows``)
that the matcher is given (those with application-layer data: ``FlowRows.finish``),
for the derive's check that no flow changed venue (``pcapflow.why_carry.check``); the
others keep theirs (``OLD_PLAIN``), and were ~99.8% of a synthetic rotation's rows."""

OLD_PARTIAL = "_flows_old_partial"
"""Staging file, empty: ``OLD_PLAIN`` holds the rows of the parts this ingest read only
(``OldFlows.partial``); a derive over the whole set reads the others' (``set_flows``)."""

FLOWS_DIR = "flows"
"""Sub-directory of a set's state: ``FlowsIndex``."""
INDEX_VERSION = 2
INDEX_APP, INDEX_AT = "app.arrow", "at.arrow"


def _read_ipc(path: Path) -> Any:
    """An Arrow IPC file, read into memory (the commit replaces it under the reader)."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()


def _write_ipc(table: Any, path: Path) -> None:
    """``table`` as one chunk (record batches of at most 64k rows): a chunk per command
    that made its rows would be O(set) to read."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=1 << 16)


_PART, _ROW = "__part", "__row"
STATS: dict[str, int] = {}
"""Counters of this process (tests and benchmarks read them): ``old_flows_parts_read``
(the set's ``flows`` parts the last ``old_flows`` read), ``old_flows_whole`` (commands
that read every part: no usable ``FlowsIndex``), ``near_whole`` (derives that read every
part for a flow ``FlowsIndex.near`` did not have)."""


@dataclass(slots=True)
class FlowsIndex:
    """What a resumed command needs of the set's ``flows`` rows besides its own file's,
    kept with the set's state (``FLOWS_DIR``) so that it reads no part of the set but
    those it writes again: O(its file), not O(the set's files).

    - ``app.arrow``: the final rows of flows with application-layer data (what the
      matcher is given: ``_has_app_data``), each with its part's name and its index
      in it (``__part``, ``__row``: the order of the set's parts, which the matcher's
      venue inference keeps).
    - ``at.arrow``: for the flows the tracker holds ended at the file's end
      (``STABLE``: only these have a final row a later packet writes again), the
      part their row is in.
    - ``near.parquet``: the rows of the flows whose rows the derive carries to the next
      command (``pcapflow.why``; the next command's derive reads those flows).
    - ``meta.json``: how many final ``flows`` parts the set had: with another count,
      or a part named above gone (``pcapflow match`` rewrote the flows), the index is
      not used and the command reads every part, as before (``old_flows``).

    ``app`` and ``at`` are Arrow IPC files (``INDEX_VERSION`` 2; Parquet in 1, read by
    no later version: its next command reads every part once): read and written each
    command, in a tenth of Parquet's CPU (~0.2 against ~2 ms at a few hundred rows)."""

    app: Any
    at: Any
    parts: int
    inodes: dict[str, int] = field(default_factory=dict)
    """The parts ``app`` and ``at`` name, with their inodes."""

    @staticmethod
    def dir(root: Path, capture_id: str) -> Path:
        return store.partition_dir(root, STATE_DIR, capture_id) / FLOWS_DIR

    @classmethod
    def load(cls, root: Path, capture_id: str) -> FlowsIndex | None:
        import pyarrow as pa

        d = cls.dir(root, capture_id)
        try:
            meta = json.loads((d / "meta.json").read_text())
            if meta.get("version") != INDEX_VERSION:
                return None
            return cls(app=_read_ipc(d / INDEX_APP), at=_read_ipc(d / INDEX_AT),
                       parts=int(meta["parts"]),
                       inodes={str(n): int(i) for n, i in meta["inodes"].items()})
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None

    def usable(self, finals: int, inodes: dict[str, int]) -> bool:
        """Whether it describes the set's final parts (``_listing`` of its partition:
        how many, and the inodes of those it names): as many, and those it names the
        same files (``pcapflow match`` writes the set's flows anew, maybe under the
        same names)."""
        return self.parts == finals and inodes == self.inodes


def _listing(part: Path, named: dict[str, int]) -> tuple[list[str], int, dict[str, int]]:
    """One pass over a set's ``flows`` partition: its provisional parts' names, how many
    final parts it has, and the inodes of the final parts ``named`` it holds (a stat
    each, as ``FlowsIndex.usable``): no path object, sort or stat per part of the set,
    whose partition has a part or two per file (~10 ms of CPU a command at 700 parts)."""
    tail = f"part-{TAIL_PREFIX}"
    tails: list[str] = []
    finals = 0
    inodes: dict[str, int] = {}
    try:
        with os.scandir(part) as it:
            for e in it:
                n = e.name
                if not n.endswith(".parquet"):
                    continue
                if n.startswith(tail):
                    tails.append(n)
                    continue
                finals += 1
                if n in named:
                    try:
                        inodes[n] = os.stat(e.path).st_ino
                    except OSError:
                        continue
    except FileNotFoundError:
        pass
    return tails, finals, inodes


def _app_mask(rows: Any) -> Any:
    """Which ``flows`` rows have application-layer data (``flow_rows._app_first``'s
    test, as a NumPy bool array)."""
    import pyarrow.compute as pc

    from .flow_rows import APP_COLUMNS

    if not rows.num_rows:
        import numpy as np

        return np.zeros(0, bool)
    app = pc.fill_null(pc.not_equal(rows.column("app_protocol"), "unknown"), False)
    for name in APP_COLUMNS:
        if name not in ("app_protocol", "venue", "venue_source") and name in rows.schema.names:
            app = pc.or_(app, pc.is_valid(rows.column(name)))
    return app.to_numpy(zero_copy_only=False)


def old_flows(prev: Previous, root: Path, written: Any, stage: Path | None = None
              ) -> OldFlows:
    """The set's ``flows`` rows but those of the flows this ingest wrote a row for
    (``written``: the flows resumed, but the ended ones it found unchanged, ``STABLE``)
    (``OldFlows``). With ``stage`` (an append-mode staging directory, ``carry``), the
    final parts among ``rewrite`` are dropped by the commit. With the set's
    ``FlowsIndex``, only the provisional parts and those holding a row of ``written``
    are read (``OldFlows.partial``); without it, every part."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..tables.schemas import FLOWS, without_capture_id

    schema = without_capture_id(FLOWS)
    part = store.partition_dir(root, "flows", prev.capture_id)
    held = np.asarray(written, np.int64)
    index = FlowsIndex.load(root, prev.capture_id)
    if index is not None:
        tails, finals, inodes = _listing(part, index.inodes)
        if not index.usable(finals, inodes):
            index = None
    app_rows = None
    if index is not None:
        at_ids = index.at.column("flow_id").to_numpy()
        hit = np.isin(at_ids, held) if len(held) else np.zeros(len(at_ids), bool)
        again = set(np.asarray(index.at.column(_PART).to_pylist(), object)[hit].tolist())
        # (the provisional parts and those named again, by name: no path per part of the set)
        files = [part / n for n in sorted({*tails, *again})]
        rewrite = {f.name for f in files}
        app_rows = index.app.filter(pa.array(~np.isin(
            np.asarray(index.app.column(_PART).to_pylist(), object),
            np.asarray(sorted(rewrite), object)))) if index.app.num_rows else None
    else:
        files = sorted(part.glob("*.parquet"))
        final = [f for f in files if not f.name.startswith(f"part-{TAIL_PREFIX}")]
        STATS["old_flows_whole"] = STATS.get("old_flows_whole", 0) + 1
        # every part is read (the matcher wants the set's flows): past COMPACT_PARTS
        # final ones, all but the largest are written again as one, so the parts read
        # stay few (and each row is written again a few times at most)
        keep = {f.name for f in final}
        if len(final) > COMPACT_PARTS:
            keep = {max(final, key=lambda f: f.stat().st_size).name}
        rewrite = {f.name for f in files} - keep
    STATS["old_flows_parts_read"] = len(files)
    names = sorted({*(f.name for f in files), *(
        app_rows.column(_PART).to_pylist() if app_rows is not None else [])})
    code_of = {n: i for i, n in enumerate(names)}
    tables, codes, rows_at = [schema.empty_table()], [np.empty(0, np.int32)], [
        np.empty(0, np.int32)]
    for f in files:
        # (ParquetFile, not pq.read_table: that imports pyarrow.dataset, ~0.1-0.2 s)
        t = pq.ParquetFile(f).read()
        tables.append(t if t.schema.equals(schema) else t.cast(schema))
        codes.append(np.full(t.num_rows, code_of[f.name], np.int32))
        rows_at.append(np.arange(t.num_rows, dtype=np.int32))
    if app_rows is not None and app_rows.num_rows:
        tables.append(app_rows.select(schema.names).cast(schema))
        codes.append(np.asarray([code_of[n] for n in app_rows.column(_PART).to_pylist()],
                                np.int32))
        rows_at.append(app_rows.column(_ROW).to_numpy().astype(np.int32))
    rows = pa.concat_tables(tables)
    code, row = np.concatenate(codes), np.concatenate(rows_at)
    if app_rows is not None and app_rows.num_rows:  # (the parts' order, as read whole)
        order = np.lexsort((row, code))
        rows, code, row = rows.take(pa.array(order)), code[order], row[order]
    if len(held) and rows.num_rows:
        again_rows = np.isin(rows.column("flow_id").to_numpy(), held)
        if again_rows.any():
            rewrite |= {names[i] for i in np.unique(code[again_rows]).tolist()}
            keep_rows = ~again_rows
            rows, code, row = rows.filter(pa.array(keep_rows)), code[keep_rows], row[keep_rows]
    if stage is not None:
        drop_carried(stage, "flows", [part / n for n in sorted(rewrite)
                                      if not n.startswith(f"part-{TAIL_PREFIX}")])
    return OldFlows(rows=rows, part=code, rewrite=rewrite, names=names, row=row,
                    partial=index is not None, at=index.at if index is not None else None,
                    where=(root, prev.capture_id))


def set_flows(stage: Path, ids: Any = None) -> Any:
    """The ``flows`` rows of the set's final parts this ingest did not read
    (``OLD_PARTIAL``: those the commit keeps, ``CARRIED``), all or those of the flows
    ``ids``: what a derive over the whole set, or one missing a flow, reads."""
    import pyarrow as pa
    import pyarrow.compute as pc

    STATS["set_flows"] = STATS.get("set_flows", 0) + 1
    parts = OldParts(stage).get("flows", [])
    capture_id = json.loads((stage / store.APPEND).read_text())["capture_id"]
    rows = read_parts_rows(stage.parent.parent, capture_id, [p.name for p in parts])
    if ids is not None:
        rows = rows.filter(pc.is_in(rows.column("flow_id"), pa.array(ids, pa.int64())))
    return rows


def read_parts_rows(root: Path, capture_id: str, names: Sequence[str]) -> Any:
    """The rows of the set's final ``flows`` parts ``names`` (in that order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..tables.schemas import FLOWS, without_capture_id

    schema = without_capture_id(FLOWS)
    part = store.partition_dir(root, "flows", capture_id)
    return pa.concat_tables([schema.empty_table(), *(
        pq.ParquetFile(part / n).read().cast(schema) for n in names)])


def keep_flows(stage: Path, old: OldFlows | None) -> None:
    """Stage the set's ``FlowsIndex`` as this ingest leaves the set (its state is staged:
    ``stage / STATE_DIR``), from the index it read (``old``) and the ``flows`` parts it
    staged: O(this file's rows and the set's rows with application-layer data)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..tables.schemas import FLOWS, without_capture_id

    schema = without_capture_id(FLOWS)
    state = stage / STATE_DIR
    if not (state / STATE_FILE).is_file():
        return
    out = state / FLOWS_DIR
    drop: set[str] = set()
    if (stage / store.APPEND).is_file():
        drop = set(json.loads((stage / store.APPEND).read_text())["drop"].get("flows", []))
    kept_names = OldParts(stage).count("flows")
    mine = sorted(f for f in (stage / "flows").glob("*.parquet")
                  if not f.name.startswith(f"part-{TAIL_PREFIX}")) \
        if (stage / "flows").is_dir() else []
    app_parts, ids, id_parts = [], [], []
    from .flow_rows import APP_COLUMNS

    for f in mine:
        # the ids and what ``_app_mask`` tests first; the whole rows only of a part that
        # has application-layer rows (a part of 1M TCP-only flows: ~200 MB whole)
        pf = pq.ParquetFile(f)
        have = set(pf.schema_arrow.names)
        t = pf.read(columns=[c for c in ("flow_id", *APP_COLUMNS)
                             if c in have])
        n = t.num_rows
        idx = np.arange(n, dtype=np.int32)
        app = _app_mask(t)
        if app.any():
            t = pf.read()
            t = t if t.schema.equals(schema) else t.cast(schema)
            a = t.filter(pa.array(app))
            app_parts.append(a.append_column(_PART, pa.array([f.name] * len(a), pa.string()))
                             .append_column(_ROW, pa.array(idx[app], pa.int32())))
        ids.append(t.column("flow_id").to_numpy().astype(np.int64))
        id_parts.append(np.full(n, f.name, object))
    if old is not None and old.rows.num_rows:
        names = np.asarray(old.names, object)
        where = names[old.part]
        kept = ~np.isin(where, np.asarray(sorted(drop), object))
        app = _app_mask(old.rows) & kept
        if app.any():
            a = old.rows.filter(pa.array(app)).cast(schema)
            app_parts.insert(0, a.append_column(_PART, pa.array(where[app].tolist(), pa.string()))
                             .append_column(_ROW, pa.array(old.row[app], pa.int32())))
        ids.append(old.rows.column("flow_id").to_numpy()[kept].astype(np.int64))
        id_parts.append(where[kept])
    if old is not None and old.at is not None and old.at.num_rows:
        at_part = np.asarray(old.at.column(_PART).to_pylist(), object)
        kept = ~np.isin(at_part, np.asarray(sorted(drop), object))
        ids.append(old.at.column("flow_id").to_numpy()[kept].astype(np.int64))
        id_parts.append(at_part[kept])
    stable_file = state / STABLE
    stable = (np.load(stable_file).reshape(-1, 2)[:, 0].astype(np.int64)
              if stable_file.is_file() else np.empty(0, np.int64))
    all_ids = np.concatenate([np.empty(0, np.int64), *ids])
    all_parts = np.concatenate([np.empty(0, object), *id_parts])
    # (the first source that has a flow wins: this ingest's parts, then the set's)
    uniq, first = np.unique(all_ids, return_index=True)
    pos = np.searchsorted(uniq, stable)
    found = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == stable) \
        if len(uniq) else np.zeros(len(stable), bool)
    if not found.all():  # (a row not found: the next command reads every part)
        return
    at = pa.table({"flow_id": pa.array(stable, pa.int64()),
                   _PART: pa.array(all_parts[first[pos]].tolist() if len(stable) else [],
                                   pa.string())})
    app_schema = schema.append(pa.field(_PART, pa.string())).append(pa.field(_ROW, pa.int32()))
    app_t = pa.concat_tables([app_schema.empty_table(), *(
        a.cast(app_schema) for a in app_parts)])
    out.mkdir(parents=True, exist_ok=True)
    named = set(app_t.column(_PART).to_pylist()) | set(at.column(_PART).to_pylist())
    staged = {f.name: f for f in mine}
    inodes: dict[str, int] = {}
    if named - set(staged):
        capture_id = json.loads((stage / store.APPEND).read_text())["capture_id"]
        in_set = store.partition_dir(stage.parent.parent, "flows", capture_id)
    for n in sorted(named):  # (the commit renames the staged ones: the same inodes)
        inodes[n] = (staged[n] if n in staged else in_set / n).stat().st_ino
    _write_ipc(app_t, out / INDEX_APP)
    _write_ipc(at, out / INDEX_AT)
    (out / "meta.json").write_text(json.dumps({"version": INDEX_VERSION,
                                               "parts": kept_names + len(mine),
                                               "inodes": inodes}))


COMPACT_PARTS = 4
"""Final ``flows`` parts of a set past which a resumed ingest writes all but the largest
again as one (``old_flows``): each command reads them all, and a small Parquet file
costs milliseconds to open and read."""
