"""Sharding one capture's ingest over processes: who owns which flow, and the
pipes between the parent and its workers.

How this works. Sharding (``workers > 1``): one capture's ingest on several cores. The parent parses
the capture's first 256 KB and throws the result away (``_warm_up``: Numba's set-up
and kernel loads, then inherited), makes the staging directory, then forks a child
per further worker before any thread exists; every process opens, reads and decodes
the whole capture and runs the whole ``FlowTracker`` (so flow ids, retirement and
eviction are the same everywhere), but owns only the flows of its shard (``Shard``):
only it runs the application layer on them and writes their rows of ``tcp_events``,
``flows``, ``tcp_rtt``, the message tables and their anomalies; rows tied to no flow
(capture and decode anomalies, ``packets`` of non-flow packets) are shard 0's, the
parent's. A TCP flow is given, when its first payload packet is seen, to the shard
with the fewest payload bytes so far (every process sees the same packets in the
same order, so all agree without talking); a flow without payload by its ``flow_id``
modulo ``workers``. Each process writes its own part files into the shared staging
directory (``Staging.part_prefix``). Processes talk over pipes twice: at the end of
the capture they agree on the last packet any of them gave the application layer (it
closes the connections still open at that time), and each child sends what it wrote
(rows per table, anomaly codes) and the side file of its flows with application-
layer data. The parent then runs the matcher once over everything staged, writes the
``captures`` row and commits; a child's failure aborts the whole ingest
(``PcapflowError``), nothing is ever committed partially. The one thing a shard
cannot see is the other shards' open connections: when more flows with payload that
have not ended are held than the application layer's ``max_open_connections``, a
single process might evict connections (by their global recency), so the sharded
ingest gives up and the capture is ingested in one process instead (``Shard.peak``).
The tables are the same rows either way, in another order within files
(``tests/pipelines/test_ingest_workers.py``); the matcher's SQL numbers messages in stream
order, not file order, so its output does not depend on it either.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypedDict, cast

import numpy as np

from ...parsers.decode import FIN, IPPROTO_TCP, RST, DecodedChunk
from ...parsers.errors import PcapflowError
from ...parsers.tcp.analysis import PacketFlows
from .. import interrupts


class Shard:
    """Which flows one process of a sharded ingest owns (module docstring).

    Every process keeps the same table, from the same packets: the owner of each
    TCP flow whose payload was seen and that is not retired yet (``rule``
    ``"balanced"``: the shard with the fewest payload bytes when the flow's first
    payload packet comes, ties to the last shard, as the parent has the matcher to
    run at the end; ``"modulo"``: ``flow_id % count``). Any other flow (no payload
    yet, UDP) is ``flow_id % count``'s; packets of no flow are shard 0's.

    It also bounds the application layer's open connections over all shards
    (``peak``), which no shard sees: a connection opens with its flow's first
    payload and is closed at the latest by a RST, or a FIN in both directions,
    from then on (``AppLayer._packet``), or when the tracker retires the flow.
    """

    def __init__(self, index: int, count: int, rule: str = "balanced") -> None:
        if rule not in ("balanced", "modulo"):
            raise ValueError(f"unknown shard rule {rule!r}")
        self.index = index
        self.count = count
        self.rule = rule
        self.owner: dict[int, int] = {}
        # ``owner`` as sorted arrays for ``_lookup``, rebuilt when it changed
        self._keys = np.zeros(0, np.int64)
        self._vals = np.zeros(0, np.int64)
        self._dirty = False
        self.load = np.zeros(count, np.int64)
        self.fins: dict[int, int] = {}  # FIN direction bits since the first payload
        self.ended: set[int] = set()  # RST, or FIN both ways, since the first payload
        self.open = 0
        """Flows of ``owner`` not ended: at least the open connections, all shards."""
        self.peak = 0
        """``open`` before the last chunk plus its new flows: at least the most
        connections open at once during that chunk."""

    def packets(self, dec: DecodedChunk, pf: PacketFlows) -> np.ndarray:
        """Take a chunk's flows in; per packet: does this process own it?"""
        fid = pf.flow_id
        tcp = (fid >= 0) & (dec.proto == IPPROTO_TCP)
        data = tcp & (dec.payload_caplen > 0)
        first_at: dict[int, int] = {}
        at = np.flatnonzero(data)
        known, owners = self._lookup(fid[at])
        if at.size and known.all():  # no new flow: the order of the sums does not matter
            self.load += np.bincount(owners, weights=dec.payload_caplen[at],
                                     minlength=self.count).astype(np.int64)
        elif at.size:
            flows, first, inverse = np.unique(fid[at], return_index=True, return_inverse=True)
            nbytes = np.bincount(inverse.reshape(-1), weights=dec.payload_caplen[at],
                                 minlength=flows.size).astype(np.int64).tolist()
            owner, load = self.owner, self.load
            for k in np.argsort(first, kind="stable").tolist():  # in order of appearance
                f = int(flows[k])
                s = owner.get(f)
                if s is None:
                    s = owner[f] = f % self.count if self.rule == "modulo" else (
                        self.count - 1 - int(np.argmin(load[::-1])))
                    self._dirty = True
                    first_at[f] = int(at[first[k]])
                load[s] += nbytes[k]
        self.peak = self.open + len(first_at)
        self.open += len(first_at)
        ends = np.flatnonzero(tcp & ((dec.tcp_flags & (FIN | RST)) != 0))
        for i, f, d, flags in zip(ends.tolist(), fid[ends].tolist(),
                                  pf.direction[ends].tolist(), dec.tcp_flags[ends].tolist(),
                                  strict=True):
            if f not in self.owner or f in self.ended or i < first_at.get(f, -1):
                continue
            bits = self.fins[f] = self.fins.get(f, 0) | (1 << d if flags & FIN else 0)
            if flags & RST or bits == 3:
                self.ended.add(f)
                self.open -= 1
        return self._mine(fid)

    def _mine(self, fid: np.ndarray) -> np.ndarray:
        """Per flow id: is it this process's? (A lookup in the sorted ``owner``
        arrays: a chunk has many packets and few flows, and a sort per chunk
        cost more than the rest of the sharding.)"""
        return self._lookup(fid)[1] == self.index

    def _lookup(self, fid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per flow id: is it in ``owner``, and its shard (``owner``'s, else the
        default: ``flow_id % count``, shard 0 for no flow)."""
        if self._dirty:
            self._keys = np.fromiter(self.owner.keys(), np.int64, len(self.owner))
            self._vals = np.fromiter(self.owner.values(), np.int64, len(self.owner))
            order = np.argsort(self._keys)
            self._keys, self._vals = self._keys[order], self._vals[order]
            self._dirty = False
        owners = np.where(fid >= 0, fid % self.count, 0)
        hit = np.zeros(fid.shape, np.bool_)
        if self._keys.size:
            pos = np.minimum(np.searchsorted(self._keys, fid), self._keys.size - 1)
            hit = self._keys[pos] == fid
            owners[hit] = self._vals[pos[hit]]
        return hit, owners

    def retire(self, flow_ids: np.ndarray) -> np.ndarray:
        """The tracker retired these flows: which are this process's (then forgotten)."""
        mine = self._mine(flow_ids)
        for f in flow_ids.tolist():
            if self.owner.pop(f, None) is not None:
                self._dirty = True
                self.fins.pop(f, None)
                if f in self.ended:
                    self.ended.discard(f)
                else:
                    self.open -= 1
        return mine


class Unshardable(Exception):
    """The capture needs one process's view (see the module docstring)."""


def message(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, PcapflowError) else f"{type(err).__name__}: {text}"


class WorkerResult(TypedDict):
    """What a worker process sends when it is done (``ParentLink.collect``)."""

    rows: dict[str, int]
    anomaly_codes: dict[str, int]
    pending: str | None
    """Its side file of flows with application-layer data (``FlowRows.finish``)."""
    without_app: str | None
    """Its side file of the other flows (``FlowRows.finish``)."""


class ChildLink:
    """A worker process's side of its pipes to the parent."""

    def __init__(self, up: BinaryIO, down: BinaryIO) -> None:
        self.up, self.down = up, down

    def send(self, obj: dict[str, object]) -> None:
        self.up.write(message(obj))
        self.up.flush()

    def agree_last(self, packet: int, ts: int) -> int:
        """Send the last packet this process's application layer took; get the
        time of the last one any process took."""
        self.send({"last": [packet, ts]})
        line = self.down.readline()
        if not line:
            raise PcapflowError("the parent process went away")
        return int(json.loads(line)["last_ts"])


@dataclass(slots=True)
class Worker:
    pid: int
    index: int
    up: BinaryIO
    down: BinaryIO
    status: int | None = None


class ParentLink:
    """The parent's side of the pipes to its workers."""

    def __init__(self, path: str, count: int) -> None:
        self.path = path
        self.count = count
        self.workers: list[Worker] = []

    def _fail(self, w: Worker, what: str) -> PcapflowError:
        return PcapflowError(f"{self.path}: worker process {w.index} of {self.count} failed: "
                             f"{what}", code="worker_failed")

    def _receive(self, w: Worker, key: str) -> object:
        while not select.select([w.up], [], [], 0.1)[0]:
            interrupts.check()  # a safe point while the worker works
        line = w.up.readline()
        if not line:
            self.reap(w)
            status = w.status or 0
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.waitstatus_to_exitcode(status)}")
            raise self._fail(w, f"it ended without a result ({how})")
        msg = json.loads(line)
        if "fallback" in msg:
            raise Unshardable(msg["fallback"])
        if "error" in msg:
            raise self._fail(w, str(msg["error"]))
        return msg[key]

    def agree_last(self, packet: int, ts: int) -> int:
        best = (packet, ts)
        for w in self.workers:
            p, t = cast("list[int]", self._receive(w, "last"))
            best = max(best, (int(p), int(t)))
        for w in self.workers:
            with contextlib.suppress(BrokenPipeError):  # gone: ``collect`` says how
                w.down.write(message({"last_ts": best[1]}))
                w.down.flush()
        return best[1]

    def collect(self) -> list[WorkerResult]:
        """Each worker's result, once it has closed its files (it then exits: ``close``
        waits for that after the commit)."""
        return [cast(WorkerResult, self._receive(w, "done")) for w in self.workers]

    def reap(self, w: Worker, kill: bool = False) -> None:
        if w.status is not None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        _pid, w.status = os.waitpid(w.pid, 0)
        interrupts.untrack(w.pid)

    def close(self, kill: bool) -> None:
        for w in self.workers:
            self.reap(w, kill=kill)
            for f in (w.up, w.down):
                with contextlib.suppress(OSError):
                    f.close()


def can_shard(path: str | Sequence[str]) -> bool:
    """Can this capture (a file, or the files of a set) be ingested by several
    processes (regular files)?"""
    paths = [path] if isinstance(path, str) else list(path)
    if "-" in paths or not hasattr(os, "fork"):
        return False
    try:
        return all(stat.S_ISREG(os.stat(p).st_mode) for p in paths)
    except OSError:
        return False
