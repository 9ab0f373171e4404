"""A rotation's matcher, each command in O(its own file): what one command carries
to the next.

A rotation ingested one file per command (``pipelines.ingest.resume``) is one capture
that grows by a file per command. The matcher (``pipelines.match``) ran over the whole
set's messages in every command, so the n-th file cost O(n). Here each command runs
the same SQL over its own rows and what the previous command carried, and every row
of ``orders``, ``acks``, ``latency`` and ``unmatched`` equals what one ingest of all
the files gives.

How this works (the pattern of ``pcapflow.why_carry``).

- *Groups.* The matcher's rows come in groups, one per ``correlation_id``: an order
  with its replies (the ack leg, the engine leg), its ``latency`` rows and its
  ``unmatched`` row; or a reply no order was seen for. Each group has a *settle*
  time: its last row's time, but ``resume_pending_s`` after its order while a later
  file may still add to it: no reply yet, no engine leg yet (a decoded order the
  venue did not reject), or fewer than ``RTT_AFTER`` RTT samples after the order on
  its connection still open (``decompose.sql``'s windows of samples reach that far
  past an order, per ``tcp_rtt.method``; a method the connection has no sample of
  at all, such as ``tsecr`` without TCP timestamps, holds nothing open).
- *Cut.* ``C``: no row a later file adds comes before it (``_cut``, ``_legs_cut``).
  Its messages come after the set's last packet ``T`` - ``SETTLE_MIN_NS`` (a file
  resumes the set only if it begins at most ``ROTATION_OVERLAP_NS`` before ``T``),
  its RTT samples after the oldest outbound segment still timed at ``T``
  (``resume.timed_since``, in the state's header), its legs after the last row of
  each answered group a later leg may still reach (an engine leg, a cancel's or
  amend's later report); and ``C`` is before every matcher input row of this
  command's provisional parts (``part-t*``). It is never earlier than ``T`` -
  ``SETTLE_NS`` but for those: what reaches further back (a segment timed longer) a
  later file sends whole, as when ``C`` was ``T`` - ``SETTLE_NS``. A group that
  settles before ``C`` is final: written as final parts (``part-d*``) and kept by
  later commands as they are; the others are provisional (``part-t*``), made again
  by the next command. A group answered before ``C`` that waits only for its RTT
  samples is final but for ``decompose.sql`` (``_Pending``): its rows are carried, not
  its messages, and each later command gives them their estimate until it settles.
- *Carried rows* (``DATA/_state/capture_id=<id>/match/``): the matcher's input rows
  (final ones only) from ``K`` on, ``K`` = ``C`` or the oldest order of a group not
  final; the requests still open at ``K`` (a WebSocket request or HTTP request
  whose reply is at ``K`` or later, or not seen yet on a connection still open: the
  FIFO of ``websocket.sql`` and the pairing of ``rest.sql`` then start from the
  same queue as over the whole set); per connection and RTT method the
  ``RTT_KEEP`` samples before its own window; the first ``CONTENT_SAMPLE``
  outbound messages per connection and its first FIX comp ids (``flow_rules``
  names venues from them); the ids of the set's final orders (``ids``: the
  ``learned_prev`` table ``combine.sql`` learns exchange and client order ids from,
  and what the checks below look up); the correlation ids of the final groups the
  carried rows make again (dropped: their rows are written already); of FIX, the
  order actions and replies ``fix.sql`` reads from ``K`` on and those of the groups
  not final, and the ClOrdIDs of the final orders and orphan replies
  (``fix_prev``: a later report for a ClOrdID of theirs is no orphan, as over the
  whole set). ``ids`` and ``fix_prev`` are bounded (``IdBound``: a day of capture
  time, 1,000,000 rows); past that a later row that may name a forgotten order gets
  an ``order_ids_forgotten`` anomaly instead of a silent mismatch.
- *One connection.* The premises' queries and ``save`` run on the matcher's own
  DuckDB connection (kept open: ``_Run.close``); small tables are made with
  pyarrow (a DuckDB statement costs milliseconds).
- *Window.* The derived tables (``why_carry``) read the matcher's rows of the
  last minutes only (its cuts, the orders still pending, a latency bucket). The
  state keeps the set's final rows from a time before all of those (``Window``,
  ``_window_start``), and counts the older ones (and their connections) instead
  of keeping them: a command never reads the set's earlier matcher parts, and no
  process holds them, so its work and memory stay the same over days. The window is
  kept as a part per command (its final rows; Arrow IPC, memory-mapped): a command
  writes its own part only, and the earlier ones stay in the set's state until their
  rows are out of the window. The derive
  checks that it reads nothing older (``why_carry.check``); if it would, or derives
  the set whole, it reads the older rows from the set's parts
  (``why_carry.whole``).
- *Venues.* ``flow_rules`` names the flows active since the previous cut, still
  open or with carried rows; the others keep their stored venue
  (``_flows_to_name``, its premises there and in ``_check_named``).
- *Checked, else whole.* A command checks its premises: no matcher input row of its
  own before the previous cut; no new RTT sample on a connection and method whose
  final order lacked samples after it; no undecrypted REST (that runs whole); no FIX
  reply to a final FIX order that waited for one (or to a final cancel or replace),
  no FIX order for a final orphan reply's ClOrdID; no flow changed venue or dialect;
  no response to a request the carried rows do not hold; no final group made again
  with a reply or engine leg it lacked; no new reply, engine event or learned id
  that would change a final order not carried. If one fails (a reply past
  ``resume_pending_s``, a venue learnt later, ``pcapflow match`` run since, a state
  from another pcapflow), the command matches the whole set and replaces the set's
  matcher rows: slower once, never different.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from ..parsers.events import Anomaly, Direction
from ..parsers.limits import Limits
from . import bundle, prefilter, store
from .ingest.resume import (
    HELD,
    STATE_FILE,
    StagedParts,
    drop_carried,
    keep_state_files,
    read_header,
)
from .match import (
    CONTENT_SAMPLE,
    INPUT_TABLES,
    MESSAGE_TABLES,
    OUTPUTS,
    MatchOutput,
    _cast,
    _connect,
    matched,
)
from .tables.schemas import TABLES, without_capture_id
from .venue_rules import Resolver

VERSION = 6
"""Of what ``save`` writes: 6, the groups final but for their RTT samples carried as rows
(``_Pending``); 5, the tables read whole (``_IPC``) in one file
(``IPC_FILE``) and each part of the window one file; 4, a file each (Arrow IPC, lz4); 3,
all Parquet (no longer read: the next command matches the set whole, once)."""
DIR = "match"
"""Sub-directory of a set's resume state: what ``save`` keeps."""
SETTLE_NS = 2 * 10**9
"""The cut is at most this much before the set's last packet (``_cut``): when this file
says nothing of what a later one may add (a state from before ``timed_since``), or what
it says reaches further back (a segment timed longer, a group's leg later, than this),
a later file's row before the cut sends that command whole, as always."""
SETTLE_MIN_NS = 50 * 10**6
"""The cut is at least this much before the set's last packet: a file resumes the set
only if its first packet is at most ``ROTATION_OVERLAP_NS`` (10 ms) before that
(``resume.find``), and tcpdump writes a file's packets out of time order by ~1 ms, so a
later file's message (its ``ts_last``: the packet that completed it) is no earlier."""
RTT_KEEP = 10
"""RTT samples per connection and method kept before the carried window (the
decompose window reaches 4 samples either side of the one nearest an order)."""
RTT_AFTER = 5
"""Samples after an order that settle its network estimate (the nearest one after
it and the 4 that follow)."""
INF = 2**62
OUTPUT_TABLES = tuple(OUTPUTS)
WHOLE: list[str] = []
STATS: dict[str, Any] = {}
"""What the last command did (benchmarks read it): groups, final groups, seconds."""
"""Why commands of this process matched a set whole (the tests read it)."""
_OLD_SCAN = "0000-"
"""Name prefix of the set's earlier scan files linked into staging (``resume``)."""


@dataclass(slots=True)
class Result:
    """One command's matcher rows: the set's (for the derived tables), and this
    command's own as (final, provisional)."""

    whole: MatchOutput
    final: dict[str, pa.Table]
    provisional: dict[str, pa.Table]
    anomalies: pa.Table | None = None
    """``order_ids_forgotten`` rows (``IdBound``), written as final parts."""


PEND_GROUPS = "pend_groups"
"""In the carried state: the groups final but for their RTT samples (``_Pending``)."""
PEND = {t: f"pend_{t}" for t in ("orders", "acks", "latency", "unmatched")}
"""In the carried state: those groups' rows of each matcher table (``_Pending``)."""

_CARRIED_TABLES = ("http_messages", "tcp_rtt", "scan", "content_http", "content_ws",
                   "comp_ids", "venues", "finalized", "max_req", "rtt_incomplete",
                   "fix_messages", PEND_GROUPS, *PEND.values())


_IPC = frozenset(("scan", "content_http", "content_ws", "comp_ids", "venues",
                  "finalized", "max_req", "rtt_incomplete", PEND_GROUPS, *PEND.values()))
"""The state's tables only ``_Carried.load`` reads (whole): one file (``IPC_FILE``;
``pipelines.bundle``: Arrow IPC uncompressed, each table one chunk, as a table made of
the previous one and a command's rows would grow a chunk per command, which every later
read and kernel walks: O(set)). As a file each (lz4) they cost ~1 ms apiece a command
to write, fsync, move into place and read back. ``http_messages``, ``tcp_rtt`` and
``fix_messages`` stay Parquet: the next command's matcher reads them as files beside
its own parts. ``ids`` and ``fix_prev``, which grow with the orders (to ``IdBound``),
are kept as parts (``IdParts``)."""
IPC_FILE = "carried" + bundle.SUFFIX
"""In the matcher's state: the ``_IPC`` tables."""


ID_TABLES = (("ids", "order_ts"), ("fix_prev", "ts"))
"""The state's tables of the set's final orders' ids, bounded by ``IdBound`` on their
time column: kept as parts (``IdParts``)."""
IDS_FILE = "ids.json"
"""In the matcher's state: the parts of ``ID_TABLES`` (``IdParts``)."""


ID_MERGE = 1.5
"""``IdParts``: the newest two parts are merged (written again as one) while the older is
at most this many times the newer's rows: of files of about the same number of orders the
parts are a binary counter's (a day of 20-s files, ~12 parts a table), each row written
again ~log2(files) times over its life, not every command (``IdBound`` keeps a day)."""


@dataclass(slots=True)
class IdParts:
    """One of ``ID_TABLES`` (``ids``: the set's final orders' ids; ``fix_prev``: its final
    FIX orders and orphan replies) kept as a part per command: ``<table>-<n>.arrow``,
    Arrow IPC uncompressed, memory-mapped when read (``names[i]``: the part's file; None,
    not written yet). A command writes its own final orders as a new part and leaves the
    earlier parts in the set's state (``resume.keep_state_files``); a part is written
    again only when rows leave it (an order made again, ``IdBound``). Written whole every
    command, the ids of ~240k orders (8 files of ``make_capture.py --answered``) cost
    ~0.06 s to filter, copy and write. ``rows`` is the parts in order: the one table the
    state held before (ids replaced by a command's rows go, its rows come last).

    ``zones[i]``: of an ``ids`` part, per id column (``ZONE_COLUMNS``) its least and
    greatest id (None: all null; a column not named, or the part's entry None: not
    known), kept in ``IDS_FILE``: ``_named`` looks a name up in a part only if it is
    within that part's zone. A part that loses rows keeps its zone (still a bound); two
    merged take the union of theirs."""

    table: str
    parts: list[pa.Table]
    names: list[str | None]
    seq: int = 0
    zones: list[dict[str, list[str] | None] | None] = field(default_factory=list)

    @property
    def rows(self) -> pa.Table:
        return pa.concat_tables(self.parts) if self.parts else pa.table({})

    @classmethod
    def load(cls, path: Path, table: str, desc: Mapping[str, Any] | None) -> IdParts:
        """The parts a previous command kept (``desc``: its ``IDS_FILE`` entry; None, a
        state of one ``<table>.arrow``: read as one part, written again)."""
        if desc is None:
            return cls(table, [feather.read_table(path / f"{table}.arrow", memory_map=True)],
                       [None], zones=[None])
        names = [str(n) for n in desc["parts"]]
        zones = desc.get("zones") or [None] * len(names)
        return cls(table, [feather.read_table(path / n, memory_map=True) for n in names],
                   list(names), int(desc["seq"]), list(zones))

    def add(self, rows: pa.Table, drop_cids: pa.Array | None, bound: IdBound | None,
            since: int | None, ts_col: str) -> tuple[IdParts, pa.Table]:
        """The parts with ``rows`` added (a new part), less the rows whose ``cid`` is in
        ``drop_cids`` (made again: ``rows`` holds them) and those ``bound`` forgets at
        ``since``; and the rows forgotten. As one table: ``IdBound.keep`` over the
        earlier rows less those dropped, then ``rows``."""
        parts, names = [], []
        zones: list[dict[str, list[str] | None] | None] = (
            list(self.zones) if len(self.zones) == len(self.parts) else [None] * len(self.parts))
        for p, n in zip(self.parts, self.names, strict=True):
            if p.schema != rows.schema:  # (a part of another schema: cast, written again)
                p, n = p.select(rows.column_names).cast(rows.schema), None
            if drop_cids is not None and len(drop_cids) and p.num_rows:
                hit = pc.is_in(p.column("cid"), value_set=drop_cids)
                if pc.any(hit).as_py():
                    p, n = p.filter(pc.invert(pc.fill_null(hit, False))), None
            parts.append(p)
            names.append(n)
        parts.append(rows)
        names.append(None)
        zones.append(_zone(rows) if self.table == "ids" else None)
        gone = rows.schema.empty_table()
        if bound is not None and since is not None:
            ts = [ns_or_inf(p.column(ts_col)) for p in parts]
            count = sum(int(np.count_nonzero(t >= since)) for t in ts)
            if count > bound.max_rows:  # (the newest max_rows of all: as one table)
                whole = pa.concat_tables(parts)
                keep = bound.keep(ns_or_inf(whole.column(ts_col)), since)
                gone = whole.filter(pa.array(~keep))
                parts, names = [whole.filter(pa.array(keep))], [None]
                zones = [_zone_union(zones)]
            else:
                out_gone = []
                for i, t in enumerate(ts):
                    keep = t >= since
                    if not keep.all():
                        out_gone.append(parts[i].filter(pa.array(~keep)))
                        parts[i], names[i] = parts[i].filter(pa.array(keep)), None
                gone = pa.concat_tables([gone, *out_gone])
        keep_i = [i for i, p in enumerate(parts) if p.num_rows] or [len(parts) - 1]
        parts, names = [parts[i] for i in keep_i], [names[i] for i in keep_i]
        zones = [zones[i] for i in keep_i]
        while len(parts) >= 2 and parts[-2].num_rows <= ID_MERGE * parts[-1].num_rows:
            parts[-2:], names[-2:] = [pa.concat_tables(parts[-2:])], [None]
            zones[-2:] = [_zone_union(zones[-2:])]
        return IdParts(self.table, parts, names, self.seq, zones), gone

    def save(self, out: Path) -> tuple[dict[str, Any], list[str]]:
        """Write the parts not written yet into ``out``; (this table's ``IDS_FILE``
        entry, the files of the earlier parts it keeps in the set's state)."""
        kept = []
        for i, p in enumerate(self.parts):
            if self.names[i] is None:
                name = f"{self.table}-{self.seq:09d}.arrow"
                self.seq += 1
                feather.write_feather(p.combine_chunks(), out / name,
                                      compression="uncompressed")  # (one chunk: ``_IPC``)
                self.names[i] = name
            else:
                kept.append(str(self.names[i]))
        desc: dict[str, Any] = {"parts": list(self.names), "seq": self.seq}
        if self.table == "ids" and len(self.zones) == len(self.parts):
            desc["zones"] = list(self.zones)
        return desc, kept


ZONE_COLUMNS = ("client_order_id", "orig_client_order_id", "exchange_order_id",
                "target_order_id")
"""The id columns of ``ids`` that ``IdParts.zones`` bound (``_named``'s)."""


def _zone(rows: pa.Table) -> dict[str, list[str] | None]:
    """Per id column of ``rows`` (``ZONE_COLUMNS``): [least, greatest] (Arrow's order of
    strings, by their bytes; None: all null). ~0.3 ms a column at ~27k rows."""
    out: dict[str, list[str] | None] = {}
    for c in ZONE_COLUMNS:
        if c in rows.column_names and pa.types.is_string(rows.schema.field(c).type):
            mm = pc.min_max(rows.column(c))
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            out[c] = None if lo is None else [lo, hi]
    return out


def _zone_union(zones: Sequence[dict[str, list[str] | None] | None]
                ) -> dict[str, list[str] | None] | None:
    """The zone of parts put together (None: one of them not known). (Python orders
    ``str`` by code point, as UTF-8's bytes are ordered.)"""
    if any(z is None for z in zones):
        return None
    out: dict[str, list[str] | None] = {}
    for c in ZONE_COLUMNS:
        if any(c not in z for z in zones if z is not None):
            continue  # (not known: not named)
        bounds = [b for z in zones if z is not None and (b := z[c]) is not None]
        out[c] = [min(b[0] for b in bounds), max(b[1] for b in bounds)] if bounds else None
    return out


@dataclass(slots=True)
class _Carried:
    meta: dict[str, Any]
    t: dict[str, pa.Table]
    dir: Path
    ids: dict[str, IdParts] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _Carried | None:
        try:
            meta = json.loads((path / "meta.json").read_text())
            if meta.get("version") != VERSION:
                return None
            # (ParquetFile: ``pq.read_table`` goes through pyarrow.dataset, ~1 ms more;
            # of the Parquet ones, which the matcher reads as files, only their flows are
            # read here: ``_flows_to_name``; all of ``fix_messages`` took ~0.01 s)
            small = bundle.read(path / IPC_FILE)
            t = {n: small[n] if n in _IPC else pq.ParquetFile(path / f"{n}.parquet").read(
                     columns=["flow_id"])
                 for n in _CARRIED_TABLES}
            desc = json.loads((path / IDS_FILE).read_text()) if (path / IDS_FILE).is_file() \
                else {}
            ids = {n: IdParts.load(path, n, desc.get(n)) for n, _ in ID_TABLES}
            for n, p in ids.items():
                t[n] = p.rows
            return cls(meta, t, path, ids)
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None


def _read(files: Sequence[Path], table: str, columns: Sequence[str] | None = None,
          flows: list[int] | None = None, where: Any = None) -> pa.Table:
    schema = without_capture_id(TABLES[table])
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if flows is not None:
        where = [("flow_id", "in", flows)]
    if where is None:  # (ParquetFile: pq.read_table goes through pyarrow.dataset, slower)
        return pa.concat_tables([schema.empty_table(), *(
            pq.ParquetFile(p).read(columns=schema.names).select(schema.names).cast(schema)
            for p in files)])
    return pa.concat_tables([schema.empty_table(), *(
        pq.read_table(p, columns=schema.names, filters=where).select(schema.names).cast(schema)
        for p in files)])


WINDOW_FILE = "_match_window.json"
"""Staging file: the set's earlier final matcher rows this command's derive is not
given (``Window``: from when it is given them, how many it is not), for
``why_carry``'s checks; absent when it is given them all."""
OMITTED_FLOWS = "_match_omitted_flows.parquet"
"""Staging file: the connections of the rows the derive is not given (``Window``)."""
WINDOW_MARGIN_NS = 60 * 10**9
"""How much further back than the next derive's reads (``_window_start``) the
carried window of final rows reaches."""


def window_key(table: str, rows: pa.Table) -> np.ndarray:
    """Per row of a matcher table, the latest of the times the derived tables read it
    by (``why_carry``): ``latency``, its order time and its reply's (the order's
    without one); the others, their ``ts``. Null: ``INF`` (always kept)."""
    if table == "latency":
        o, a = ns_or_inf(rows.column("order_ts")), ns_or_inf(rows.column("ack_ts"))
        return np.maximum(o, np.where(a == INF, o, a))
    return ns_or_inf(rows.column("ts"))


def ack_rows(latency: pa.Table) -> np.ndarray:
    """Rows of ``latency`` that are an ack leg with a latency (the latency alerts')."""
    if latency.num_rows == 0:
        return np.zeros(0, bool)
    return pc.fill_null(pc.equal(latency.column("leg"), "ack"), False).to_numpy(
        zero_copy_only=False) & latency.column("latency_ns").is_valid().to_numpy(
        zero_copy_only=False)


def order_flows(latency: pa.Table | None, unmatched: pa.Table | None) -> np.ndarray:
    """The connections of ``latency``'s and ``unmatched``'s rows (orders and replies)."""
    ids = [np.empty(0, np.int64)]
    for t, cols in ((latency, ("flow_id", "ack_flow_id")), (unmatched, ("flow_id",))):
        if t is not None and t.num_rows:
            ids += [pc.drop_null(t.column(c)).to_numpy().astype(np.int64) for c in cols]
    return np.unique(np.concatenate(ids))


WINDOW_PART = "wpart-"
"""Name prefix of the window's part files in the matcher's state (``Window``)."""
WINDOW_REWRITE = 0.5
"""A window part whose rows still in the window are fewer than this share of its
rows is written again with those only (``Window.advance``), so the files a command
reads stay about the window's size."""
WINDOW_MAX_PARTS = 16
"""Past this many parts the window's parts are written again as one (``Window.advance``,
the same rows in the same order). A window held open (its ``since`` kept back by an
order never acknowledged) gains a part per command, and each part is four small files
a command maps (a page or two of RSS each, ~18 kB a part: measured, session 16), so
without this a command's memory grew with the set; with it, with the window's rows."""


@dataclass(slots=True)
class _WPart:
    """One command's final rows kept in the window: the state's files ``name``
    (None: not written yet), of whose ``total`` rows ``rows`` are still in it."""

    rows: dict[str, pa.Table]
    name: str | None = None
    total: int = 0
    low: dict[str, int] | None = None
    """Per table, the earliest ``window_key`` of the part's file (None: not known): a
    part none of whose rows is older than ``since`` is not filtered (``window.json``)."""


def _low(t: str, rows: pa.Table) -> int:
    """The earliest ``window_key`` of ``rows`` (``INF``: none)."""
    return int(window_key(t, rows).min()) if rows.num_rows else INF


def _keep(p: _WPart, t: str, r: pa.Table, since: int) -> np.ndarray | None:
    """Which rows ``r`` of part ``p``'s table ``t`` are ``since`` or later (None: all)."""
    if p.low is not None and p.low.get(t, -INF) >= since:
        return None
    keep = window_key(t, r) >= since
    return None if keep.all() else keep


def _wpart_file(name: str) -> str:
    """A window part's file: its tables (``OUTPUT_TABLES``) as one ``pipelines.bundle``."""
    return f"{name}{bundle.SUFFIX}"


@dataclass(slots=True)
class Window:
    """The set's earlier final rows of the matcher's tables that the derived tables
    are given (``rows``): those whose ``window_key`` is ``since`` or later. The
    earlier ones are only counted (``omitted``: rows per table, and ``omitted_ack``:
    ack legs with a latency), with their connections (``flows``): the derive reads
    no row that old (``why_carry.check`` makes sure, else it reads them from the
    set's parts: ``why_carry.whole``). ``since`` = -INF: none left out.

    Kept with the matcher's state, a part per command (``parts``: ``wpart-<n>-<table>.arrow``,
    Arrow IPC uncompressed, memory-mapped when read: lz4 took ~0.3 s to read back a
    window of ~240k orders; in time order; ``window.json``): a command reads the window its previous
    one kept, not the set's earlier parts, so its work and memory do not grow with the
    set; it writes only its own final rows (a new part) and leaves the earlier parts
    where they are (``resume.keep_state_files``), dropping a part once all its rows
    are older than ``since`` (and writing one again, smaller, once most are)."""

    parts: list[_WPart]
    since: int = -INF
    omitted: dict[str, int] = field(default_factory=dict)
    omitted_ack: int = 0
    flows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    seq: int = 0
    """The number of the next part written (file names are never reused)."""

    @property
    def rows(self) -> dict[str, pa.Table]:
        return {t: pa.concat_tables([without_capture_id(TABLES[t]).empty_table(),
                                     *(p.rows[t] for p in self.parts)])
                for t in OUTPUT_TABLES}

    @classmethod
    def empty(cls) -> Window:
        return cls([])

    @classmethod
    def of_rows(cls, rows: dict[str, pa.Table]) -> Window:
        """Every earlier row of the set, none left out (a state from before windows)."""
        return cls([_WPart(rows)])

    @classmethod
    def load(cls, path: Path) -> Window | None:
        """The window a previous command kept in ``path`` (None: it kept none)."""
        try:
            meta = json.loads((path / "window.json").read_text())
            since = int(meta["since"])
            if "parts" not in meta:  # (version 4's one window, Parquet: written again)
                parts = [_WPart({t: _read([path / f"window_{t}.parquet"], t)
                                 for t in OUTPUT_TABLES})]
                flows = pq.ParquetFile(path / "window_flows.parquet").read().column("flow_id")
            else:
                parts = []
                for p in meta["parts"]:
                    rows: dict[str, pa.Table] = {}
                    total = 0
                    part = _WPart(rows, str(p["name"]), 0,
                                  {t: int(v) for t, v in p["low"].items()} if "low" in p
                                  else None)
                    got = bundle.read(path / _wpart_file(p["name"]), memory_map=True)
                    for t in OUTPUT_TABLES:
                        r = got[t]
                        total += r.num_rows
                        keep = _keep(part, t, r, since)  # (rows counted out already)
                        rows[t] = r if keep is None else r.filter(pa.array(keep))
                    part.total = total
                    parts.append(part)
                flows = feather.read_table(path / "window_flows.arrow",
                                           memory_map=False).column("flow_id")
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None
        return cls(parts, since, {t: int(n) for t, n in meta["omitted"].items()},
                   int(meta["omitted_ack"]), flows.to_numpy().astype(np.int64),
                   int(meta.get("seq", 0)))

    def stage(self, stage_dir: Path) -> None:
        """Tell this command's derive what it is not given (``WINDOW_FILE``)."""
        if self.since == -INF:
            return
        (stage_dir / WINDOW_FILE).write_text(json.dumps({
            "since": self.since, "omitted": self.omitted, "omitted_ack": self.omitted_ack}))
        pq.write_table(pa.table({"flow_id": pa.array(self.flows, pa.int64())}),
                       stage_dir / OMITTED_FLOWS)

    def advance(self, final: Mapping[str, pa.Table], since: int) -> Window:
        """The window the next command is given: these rows and this command's final
        ones (a new part), from ``since`` on (never earlier than this one's: rows left
        out are not read again)."""
        since = max(since, self.since)
        omitted, ack = dict(self.omitted), self.omitted_ack
        gone: dict[str, list[pa.Table]] = {t: [] for t in OUTPUT_TABLES}
        new = _WPart({t: final[t].cast(without_capture_id(TABLES[t])) for t in OUTPUT_TABLES})
        parts = []
        for p in [*self.parts, new]:
            rows, kept = {}, 0
            for t in OUTPUT_TABLES:
                r = p.rows[t]
                keep = _keep(p, t, r, since)
                if keep is None:
                    rows[t] = r
                else:
                    rows[t] = r.filter(pa.array(keep))
                    gone[t].append(r.filter(pa.array(~keep)))
                kept += rows[t].num_rows
            if kept == 0:
                continue  # (every row out: the file goes)
            if p.name is not None and kept < WINDOW_REWRITE * p.total:
                parts.append(_WPart(rows, None, kept))  # (written again, smaller)
            else:
                parts.append(_WPart(rows, p.name, p.total if p.name else kept,
                                    p.low if p.name else None))
        if len(parts) > WINDOW_MAX_PARTS:  # (one part again: its rows, in order)
            rows = {t: pa.concat_tables([without_capture_id(TABLES[t]).empty_table(),
                                         *(p.rows[t] for p in parts)]).combine_chunks()
                    for t in OUTPUT_TABLES}
            parts = [_WPart(rows, None, sum(r.num_rows for r in rows.values()))]
        g = {t: pa.concat_tables([without_capture_id(TABLES[t]).empty_table(), *gone[t]])
             for t in OUTPUT_TABLES}
        for t in OUTPUT_TABLES:
            omitted[t] = omitted.get(t, 0) + g[t].num_rows
        ack += int(np.count_nonzero(ack_rows(g["latency"])))
        flows = np.union1d(self.flows, order_flows(g["latency"], g["unmatched"]))
        return Window(parts, since, omitted, ack, flows, self.seq)

    def save(self, out: Path) -> list[str]:
        """Write the parts not written yet into ``out`` (the staged matcher state) and
        the window's description; the names of the files of the earlier parts it
        keeps, in the set's state (the commit must leave them: ``keep_state_files``)."""
        kept, desc = [], []
        for p in self.parts:
            if p.name is None:
                p.name, self.seq = f"{WINDOW_PART}{self.seq:09d}", self.seq + 1
                p.low = {t: _low(t, p.rows[t]) for t in OUTPUT_TABLES}
                bundle.write(out / _wpart_file(p.name), {t: p.rows[t] for t in OUTPUT_TABLES})
            else:
                kept.append(_wpart_file(p.name))
            desc.append({"name": p.name, **({"low": p.low} if p.low is not None else {})})
        feather.write_feather(pa.table({"flow_id": pa.array(self.flows, pa.int64())}),
                              out / "window_flows.arrow", compression="lz4")
        (out / "window.json").write_text(json.dumps({
            "since": self.since, "omitted": self.omitted, "omitted_ack": self.omitted_ack,
            "parts": desc, "seq": self.seq}))
        return kept


def _window(prev: _Carried | None, parts: StagedParts) -> Window:
    """The set's earlier final rows this command gives the derived tables: none when
    the set has none (it begins, or is matched whole), else the window the previous
    command kept, else (a state from before windows) every earlier part, read."""
    if not any(parts.old.has(t) for t in OUTPUT_TABLES):  # (not a Path per part of the set)
        return Window.empty()
    win = Window.load(prev.dir) if prev is not None else None
    if win is not None:
        return win
    STATS["window"] = "read the set's earlier parts"
    return Window.of_rows({t: _read(parts.old.get(t, []), t) for t in OUTPUT_TABLES})


def _window_start(g: pa.Table, cut: int, last: int | None,
                  pend: _Pending | None = None) -> int:
    """The earliest time the next command's derive reads the matcher's rows from,
    at most (``why_carry``: its cut ``C`` and order cut ``P`` are no earlier than this
    command's cut and the orders still open, nor than ``PENDING_NS`` before its last
    packet; a latency bucket begins up to ``bucket_s`` before ``P``), less
    ``WINDOW_MARGIN_NS``. The next derive checks it (``why_carry.check``)."""
    from .. import alerts, why, why_carry

    open_o = ns_or_inf(g.column("order_ts"))[ns_or_inf(g.column("settle")) >= cut] if g.num_rows \
        else np.empty(0, np.int64)
    if pend is not None and pend.groups.num_rows:  # (carried, still waiting: open too)
        open_o = np.concatenate([open_o, ns_or_inf(pend.groups.column("order_ts"))])
    t = min(cut, int(open_o.min()) if len(open_o) else INF,
            (last if last is not None else INF) - why_carry.PENDING_NS)
    if t >= INF:
        return -INF
    bucket = max(int((why.SETTINGS or alerts.Settings()).bucket_s * 10**9), 1)
    return (t - why_carry.SETTLE_NS - WINDOW_MARGIN_NS) // bucket * bucket - bucket


def ns_or_inf(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A time column as int64 ns, a null as ``INF`` (also ``why_carry``'s)."""
    return pc.fill_null(col.cast(pa.int64()), INF).to_numpy()


def min_ns(table: pa.Table, column: str) -> int:
    """The earliest ns of ``column`` (``INF``: no row, or only nulls)."""
    if table.num_rows == 0:
        return INF
    v = pc.min(table.column(column).cast(pa.int64())).as_py()
    return INF if v is None else int(v)


def stats_min_ns(files: Sequence[Path], column: str) -> int | None:
    """A lower bound of ``column``'s earliest ns in ``files`` from their Parquet
    row-group statistics, without reading a row (``INF``: no row; None: a file's
    statistics do not say, so read the rows). A check "no row before the cut" that this
    bound passes needs no read: each command checks its own files' parts against the
    previous cut, ~1-2 ms a table read, ~0.1 ms from the footers."""
    low = INF
    for p in files:
        md = pq.ParquetFile(p).metadata
        if md.num_rows == 0:
            continue
        leaf = next((j for j in range(md.num_columns)
                     if md.row_group(0).column(j).path_in_schema == column), None)
        if leaf is None or _unit(md.schema.column(leaf).logical_type) not in ("ns", None):
            return None
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            if rg.num_rows == 0:
                continue
            chunk = rg.column(leaf)
            stats = chunk.statistics
            if chunk.physical_type != "INT64" or stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == rg.num_rows:
                    continue  # (only nulls: no time, as ``min_ns``)
                return None
            low = min(low, int(stats.min_raw))
    return low


def _unit(logical: Any) -> str | None:
    """"ns" for a Parquet timestamp in nanoseconds, "?" for another time or type,
    None for none (a plain INT64)."""
    text = str(logical)
    if text == "None":
        return None
    return "ns" if text.startswith("Timestamp(") and "timeUnit=nanoseconds" in text else "?"


def no_row_before(files: Sequence[Path], column: str, before: int) -> bool:
    """Whether the statistics of ``files`` show no ``column`` time before ``before``
    (False: they do not say so; read the rows)."""
    low = stats_min_ns(files, column)
    return low is not None and low >= before


def _clean_rtt(rows: pa.Table) -> pa.Table:
    """RTT samples the matcher reads: ours (``out``), not piggybacked, not resent."""
    if rows.num_rows == 0:
        return rows
    keep = pc.and_(pc.equal(rows.column("direction"), "out"), pc.and_(
        pc.invert(pc.fill_null(rows.column("piggybacked"), False)),
        pc.invert(pc.fill_null(rows.column("retransmitted"), False))))
    return rows.filter(pc.fill_null(keep, False))


def _scan_rows(stage_dir: Path, parts: StagedParts, *, old: bool) -> pa.Table | None:
    """The ingest-time scan's rows of this command's ``ws_messages`` parts (and of the
    set's earlier ones: ``old``), or None when its files do not cover them."""
    files = [*(parts.old["ws_messages"] if old else []), *parts.fresh("ws_messages")]
    # (looked up at each call, as the ingest's matcher always did: tests spy on it)
    return prefilter.staged_candidates(stage_dir, files, skip=None if old else _OLD_SCAN)


FIX_READ = ("(direction = 'out' AND msg_type IN ('D', 'F', 'G', 'XCN', 'XAK')) OR "
            "(direction = 'in' AND msg_type IN ('8', '9', 'XAR', '3', 'j'))")
"""The FIX messages ``fix.sql`` reads (``fix_in``, resends aside): the only ones carried."""


def _tail_keys(parts: StagedParts) -> pa.Table:
    t = _read(parts.tail.get("ws_messages", []), "ws_messages",
              ["flow_id", "direction", "stream_offset"])
    return t


@dataclass(slots=True)
class _Run:
    """The SQL's outputs and what the carry reads of its intermediate tables."""

    out: MatchOutput
    rules: pa.Table
    con: duckdb.DuckDBPyConnection | None = None
    stack: ExitStack | None = None

    def close(self) -> None:
        """The matcher's connection, kept open for the checks and ``save``."""
        if self.stack is not None:
            self.stack.close()
        self.con = self.stack = None
    enc: int = 0
    groups: pa.Table | None = None
    ws_req: pa.Table | None = None
    rest_req: pa.Table | None = None
    rest_orphans: pa.Table | None = None
    engine: pa.Table | None = None
    incomplete: pa.Table | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _q(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table | None:
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.CatalogException:  # a family's tables after its gate: not made
        return None


def _execute(files: Mapping[str, Sequence[Path]], flows: pa.Table, resolver: Resolver,
             candidates: pa.Table | None, *, held: np.ndarray, limit_ns: int, cut: int,
             extra: Mapping[str, pa.Table] | None = None,
             comp_ids: Mapping[int, tuple[int, str | None, str | None]] | None = None,
             content: Mapping[str, pa.Table] | None = None,
             views: Mapping[str, str] | None = None) -> _Run:
    stack = ExitStack()
    con = stack.enter_context(matched(files, flows, resolver, candidates=candidates,
                                      extra=extra, comp_ids_prev=comp_ids,
                                      content_extra=content, views=views))
    try:
        out: dict[str, pa.Table] = {}
        carried = views is not None and "latency_prev" in views
        for table, (temp, schema) in OUTPUTS.items():
            target = without_capture_id(schema)
            cols = ", ".join(f'"{f.name}"' for f in target)
            mine = " WHERE carried IS NULL" if carried and table == "latency" else ""
            out[table] = _cast(con.sql(f"SELECT {cols} FROM {temp}{mine}").to_arrow_table(),
                               target)
        rules = con.sql("SELECT flow_id, venue, venue_source, dialect FROM flow_rules"
                        ).to_arrow_table()
        run = _Run(MatchOutput(flow_venue={}, tables=out), rules)
        if carried:  # (``_Pending``: the carried groups' rows, given their estimate)
            target = without_capture_id(TABLES["latency"])
            cols = ", ".join(f'"{f.name}"' for f in target)
            run.extra["latency_carried"] = _cast(con.sql(
                f"SELECT {cols} FROM out_latency WHERE carried").to_arrow_table(), target)
        run.extra["named_flows"] = flows.select(["flow_id", "server_ip", "server_port"])
        enc = _q(con, "SELECT count(*) AS n FROM enc_flows")
        run.enc = int(enc.column(0)[0].as_py()) if enc is not None else 0
        con.register("_held", pa.table({"flow_id": pa.array(held, pa.int64())}))
        run.ws_req = _q(con, """
            SELECT q.flow_id, q.stream_offset, q.ts, p.ts AS rep_ts
            FROM ws_fifo q LEFT JOIN ws_pairs x ON x.req_rid = q.rid
            LEFT JOIN ws_fifo p ON p.rid = x.rep_rid WHERE q.side = 0""")
        run.rest_req = _q(con, """
            SELECT q.flow_id, q.request_index, q.ts, r.ts AS rep_ts,
                   r.reset_reason IS NULL AS full
            FROM rest_req q LEFT JOIN rest_resp r USING (flow_id, request_index)""")
        if run.rest_req is None:
            run.rest_req = _q(con, """SELECT flow_id, request_index, ts, NULL::BIGINT AS rep_ts,
                                      NULL::BOOLEAN AS full FROM rest_req""")
        run.rest_orphans = _q(con, """
            SELECT r.flow_id, r.request_index FROM rest_resp r
            WHERE r.request_index IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM rest_req q
                WHERE q.flow_id = r.flow_id AND q.request_index = r.request_index)""")
        run.engine = _q(con, """SELECT venue, subject, order_id, event_kind, ts
                                FROM engine_events WHERE event_kind IS NOT NULL""")
        # per order of a connection still open: RTT samples after it, per method
        # (``seen``: the connection has samples of that method at all; one without
        # them, such as ``tsecr`` without TCP timestamps, does not hold its orders
        # open: a sample of it in a later file sends that command whole instead)
        run.incomplete = con.sql(_INCOMPLETE_SQL.format(RTT_AFTER=RTT_AFTER)).to_arrow_table()
        con.register("_incomplete", run.incomplete)
        run.groups = con.sql(f"""
            WITH a AS (
                SELECT correlation_id, bool_or(leg = 'ack') AS has_ack,
                       bool_or(leg = 'engine') AS has_engine,
                       any_value(status) FILTER (WHERE leg = 'ack') AS status,
                       any_value(exchange_order_id) FILTER (WHERE leg = 'ack')
                           AS exchange_order_id,
                       max(ts) AS last_ts, any_value(order_key IS NULL) AS orphan
                FROM out_acks GROUP BY correlation_id),
            o AS (
                SELECT o.*, EXISTS (SELECT 1 FROM _incomplete i WHERE i.flow_id = o.flow_id
                                    AND i.order_ts = o.ts AND i.seen) AS rtt_open
                FROM out_orders o)
            SELECT coalesce(o.correlation_id, a.correlation_id) AS cid,
                   o.flow_id, o.venue, o.kind, o.client_order_id, o.orig_client_order_id,
                   o.target_order_id, o.decoded, o.ts AS order_ts,
                   coalesce(a.has_ack, false) AS has_ack,
                   coalesce(a.has_engine, false) AS has_engine, a.status,
                   a.exchange_order_id,
                   greatest(coalesce(o.ts, a.last_ts), coalesce(a.last_ts, o.ts)) AS last_ts,
                   o.correlation_id IS NULL AS orphan,
                   coalesce(o.rtt_open, false) AS rtt_open,
                   greatest(o.ts, coalesce(a.last_ts, o.ts)) AS answered_settle,
                   CASE WHEN o.correlation_id IS NULL THEN a.last_ts
                        WHEN NOT coalesce(a.has_ack, false) OR o.rtt_open
                        THEN greatest(coalesce(a.last_ts, o.ts), o.ts + {limit_ns})
                        ELSE greatest(o.ts, coalesce(a.last_ts, o.ts)) END AS settle
            FROM o FULL JOIN a ON a.correlation_id = o.correlation_id""").to_arrow_table()
        run.extra["final_cut"] = cut
    except BaseException:
        stack.close()
        raise
    run.con, run.stack = con, stack  # (open: the checks and ``save`` use it; ``close``)
    return run


_INCOMPLETE_SQL = """
    WITH seen AS (SELECT DISTINCT flow_id, method FROM rtt_clean),
    l AS (SELECT DISTINCT flow_id, order_ts FROM out_latency
          WHERE flow_id IN (SELECT flow_id FROM _held)),
    lm AS (SELECT l.flow_id, l.order_ts, m.method
           FROM l CROSS JOIN (VALUES ('ack'), ('tsecr')) m(method)),
    ev AS (SELECT flow_id, method, order_ts AS t, 0 AS s FROM lm WHERE order_ts IS NOT NULL
           UNION ALL
           SELECT flow_id, method, ts AS t, 1 AS s FROM rtt_clean
           WHERE ts IS NOT NULL AND flow_id IN (SELECT flow_id FROM l)),
    after AS (SELECT flow_id, method, t, sum(s) OVER (
                  PARTITION BY flow_id, method ORDER BY t DESC, s ASC
                  ROWS UNBOUNDED PRECEDING) AS n, s FROM ev)
    SELECT lm.flow_id, lm.order_ts, lm.method, s.flow_id IS NOT NULL AS seen FROM lm
    LEFT JOIN seen s ON s.flow_id = lm.flow_id AND s.method = lm.method
    LEFT JOIN (SELECT flow_id, method, t, n FROM after WHERE s = 0) a
      ON a.flow_id = lm.flow_id AND a.method = lm.method AND a.t = lm.order_ts
    WHERE coalesce(a.n, 0) < {RTT_AFTER}"""
"""Per order of a held connection and RTT method, fewer than ``RTT_AFTER`` samples after
it (``_Run.incomplete``): each order's count of later samples is a running sum over its
connection's samples and orders in descending time (an order before the samples of its
own time: ``>``, strictly), not a join of every order with every later sample (at 6M
packets of answered FIX orders that join took 21 s of a 33-s ingest)."""


def _venue_maps(rules: pa.Table) -> tuple[dict[int, str], dict[int, str]]:
    named = rules.filter(pc.is_valid(rules.column("venue")))
    ids = named.column("flow_id").to_pylist()
    return (dict(zip(ids, named.column("venue").to_pylist(), strict=True)),
            dict(zip(ids, named.column("venue_source").to_pylist(), strict=True)))


def _by_cid(rows: pa.Table, cids: pa.Array) -> np.ndarray:
    return pc.is_in(rows.column("correlation_id"), value_set=cids).to_numpy(
        zero_copy_only=False)


def _split(run: _Run, cut: int, drop: pa.Array) -> tuple[dict[str, pa.Table],
                                                        dict[str, pa.Table]]:
    """The run's rows of groups not in ``drop``, as (final, provisional) at ``cut``."""
    g = run.groups
    assert g is not None
    settle = ns_or_inf(g.column("settle"))
    cids = g.column("cid")
    fin_ids = cids.filter(pa.array(settle < cut))
    final, prov = {}, {}
    for t, rows in run.out.tables.items():
        gone = _by_cid(rows, drop) if len(drop) else np.zeros(rows.num_rows, bool)
        fin = _by_cid(rows, fin_ids) & ~gone
        final[t] = rows.filter(pa.array(fin))
        prov[t] = rows.filter(pa.array(~fin & ~gone))
    return final, prov


# --- groups final but for their RTT samples -----------------------------------------
def rtt_only(g: pa.Table, cut: int) -> np.ndarray:
    """Per group of ``g`` (``_Run.groups``): answered, not an orphan, its last row before
    ``cut`` (which no later leg can come before: ``_legs_cut``), and open only for its
    connection's RTT samples (``rtt_open``: fewer than ``RTT_AFTER`` after its order).
    Such a group is final for everything but ``decompose.sql`` (``_Pending``)."""
    if g.num_rows == 0:
        return np.zeros(0, bool)
    answered = pc.fill_null(pc.and_(pc.and_(g.column("has_ack"), pc.invert(
        g.column("orphan"))), g.column("rtt_open")), False).to_numpy(zero_copy_only=False)
    return (answered & (ns_or_inf(g.column("answered_settle")) < cut)
            & (ns_or_inf(g.column("settle")) >= cut))


_PEND_GROUPS = pa.schema([("cid", pa.string()), ("flow_id", pa.int64()),
                          ("order_ts", pa.int64()), ("answered_settle", pa.int64())])
_DECOMPOSED = ("network_est_ns", "network_method", "network_spread_ns", "network_samples",
               "exchange_ns")
"""Of ``latency``'s columns, those ``decompose.sql`` gives (from the RTT samples around
the order); the others are the group's, fixed once it is answered (``network_rtt_ns``
too: its order's own segment's sample is before the cut, and a later file's sample
before the cut sends that command whole, ``_check_inputs``)."""

LATENCY_PREV = ("SELECT * EXCLUDE (order_ts, ack_ts), epoch_ns(order_ts) AS order_ts, "
                "epoch_ns(ack_ts) AS ack_ts, true AS carried FROM _latency_prev_rows")
"""``latency.sql``'s ``latency_prev`` (``sql/common.sql``): the carried groups' ``latency``
rows less ``_DECOMPOSED`` (``_latency_prev_rows``), times in int ns, marked ``carried``."""


@dataclass(slots=True)
class _Pending:
    """The groups final but for their RTT samples (``rtt_only``), carried as rows.

    Matched again every command only for the windows of RTT samples ``decompose.sql``
    takes around their orders (~10% of a 20-s file's groups at 50,000 packets/s: the
    orders of its last ~2 s), they cost their share of every statement of the matcher.
    Instead their messages are not carried (their ids go to ``ids`` and ``fix_prev``,
    the checks' premises, as a final group's, and a group made again from carried
    messages is dropped: ``finalized``), and their rows are: each command adds their
    ``latency`` rows, less the columns ``decompose.sql`` gives (``_DECOMPOSED``), to its
    own before ``decompose.sql`` runs (``latency_prev``: over the same samples, the
    carried ones reaching back to their orders, ``save``'s ``kf``), and
    ``_INCOMPLETE_SQL`` counts the samples after their orders with the others': a group
    with ``RTT_AFTER`` of them (or past ``resume_pending_s``, or on a closed connection)
    is final, the others provisional and carried again. Its ``orders``, ``acks`` and
    ``unmatched`` rows go with its ``latency`` rows (final or provisional together, as
    when it was matched again). (Run as statements of their own, ``decompose.sql`` and
    the count cost ~0.06 s a command for ~2,800 rows: DuckDB's fixed cost a statement.)"""

    final: dict[str, pa.Table]
    prov: dict[str, pa.Table]
    groups: pa.Table
    """The groups still waiting (``_PEND_GROUPS``)."""
    inc_fin: pa.Table
    """(flow_id, method) of the orders final now with fewer than ``RTT_AFTER`` samples
    after them (``rtt_incomplete``, as of a final group's)."""


def _latency_prev(prev: _Carried) -> pa.Table | None:
    """The carried groups' ``latency`` rows as ``LATENCY_PREV`` reads them (None: none)."""
    lat = prev.t[PEND["latency"]]
    if prev.t[PEND_GROUPS].num_rows == 0:
        return None
    return lat.drop_columns([c for c in _DECOMPOSED if c in lat.column_names])


def _pending(prev: _Carried, run: _Run, cut: int, limit_ns: int) -> _Pending | None:
    """The carried groups' rows of this command (``_Pending``; None: none carried)."""
    pg = prev.t[PEND_GROUPS]
    latency = run.extra.get("latency_carried")
    if pg.num_rows == 0 or latency is None:
        return None
    keys = ["flow_id", "order_ts"]
    inc = run.incomplete
    if inc is None or inc.num_rows == 0:
        inc = pa.table({"flow_id": pa.array([], pa.int64()), "order_ts": pa.array([], pa.int64()),
                        "method": pa.array([], pa.string()), "seen": pa.array([], pa.bool_())})
    inc = inc.select(["flow_id", "order_ts", "method", "seen"]).cast(pa.schema([
        ("flow_id", pa.int64()), ("order_ts", pa.int64()), ("method", pa.string()),
        ("seen", pa.bool_())]))
    seen = inc.filter(pc.fill_null(inc.column("seen"), False)).select(keys)
    opened = pg.join(seen.group_by(keys).aggregate([]), keys=keys, join_type="left semi")
    is_open = pc.is_in(pg.column("cid"), value_set=opened.column("cid").combine_chunks())
    base = ns_or_inf(pg.column("answered_settle"))
    settle = np.where(is_open.to_numpy(zero_copy_only=False),
                      np.maximum(base, ns_or_inf(pg.column("order_ts")) + limit_ns), base)
    fin = settle < cut
    fin_ids = pg.column("cid").filter(pa.array(fin)).combine_chunks()
    inc_fin = inc.join(pg.filter(pa.array(fin)).select(keys), keys=keys,
                       join_type="left semi").group_by(["flow_id", "method"]).aggregate([])
    rows = {t: prev.t[PEND[t]] for t in OUTPUT_TABLES}
    rows["latency"] = latency
    final, prov = {}, {}
    for t, r in rows.items():
        r = r.cast(without_capture_id(TABLES[t]))
        f = _by_cid(r, fin_ids) if len(fin_ids) else np.zeros(r.num_rows, bool)
        final[t], prov[t] = r.filter(pa.array(f)), r.filter(pa.array(~f))
    return _Pending(final, prov, pg.filter(pa.array(~fin)), inc_fin)


_TS_COLUMNS = (("http_messages", "ts_last"), ("ws_messages", "ts_last"),
               ("fix_messages", "ts_last"))
"""The matcher's message tables and the time a later file's rows follow the cut by."""


def _cut(parts: StagedParts, last: int | None, timed: int = -INF) -> int:
    """The cut ``C``, before the groups' legs are known (``_legs_cut``): the rows a
    later file adds come after ``last - SETTLE_MIN_NS`` (its messages) and ``timed``
    (its RTT samples: ``timed_since``), and after this command's provisional rows. Never
    earlier than ``last - SETTLE_NS`` but for those (``SETTLE_NS``)."""
    if last is None:
        return INF
    cut = max(last - SETTLE_NS, min(last - SETTLE_MIN_NS, timed))
    for t, col in _TS_COLUMNS:  # (exact from the statistics: no row filtered out)
        low = stats_min_ns(parts.tail.get(t, []), col)
        cut = min(cut, low if low is not None else
                  min_ns(_read(parts.tail.get(t, []), t, [col]), col))
    rtt = _clean_rtt(_read(parts.tail.get("tcp_rtt", []), "tcp_rtt",
                           ["direction", "piggybacked", "retransmitted", "ts_sent"]))
    return min(cut, min_ns(rtt, "ts_sent"))


def timed_since(header: Mapping[str, Any]) -> int:
    """The send time of the oldest outbound segment the set's last file left timed
    (``resume.timed_since``, in the staged state's header): ``INF``, none; ``-INF``,
    not known (a state written before it was kept)."""
    if "timed_since" not in header:
        return -INF
    t = header["timed_since"]
    return INF if t is None else int(t)


def pending_s(header: Mapping[str, Any]) -> float:
    """``Limits.resume_pending_s`` of the ingest (the staged state's header holds it)."""
    return float(header.get("resume_pending_s", Limits().resume_pending_s))


def match(stage_dir: Path, flows: pa.Table, resolver: Resolver, capture_id: str) -> Result:
    """The matcher at the end of an ingest (module docstring)."""
    from .match import match_tables

    parts = StagedParts.of(stage_dir)
    state = stage_dir / store.STATE / STATE_FILE
    keep = state.is_file()
    if not keep and not parts.resumed:  # a capture of its own: its staged rows
        files = {t: sorted((stage_dir / t).glob("*.parquet")) for t in INPUT_TABLES}
        cands = (prefilter.staged_candidates(stage_dir, files["ws_messages"])
                 if any(files[t] for t in MESSAGE_TABLES) else None)
        out = match_tables(files, flows, resolver, candidates=cands)
        return Result(out, dict(out.tables), {})
    header = read_header(state) if keep else {}
    limit_ns = int(pending_s(header) * 10**9)
    bound = IdBound.of(header)
    last = int(header["last_key"]) if keep else None
    held_file = stage_dir / store.STATE / HELD
    held = np.load(held_file) if held_file.is_file() else np.empty(0, np.int64)
    cut = _cut(parts, last, timed_since(header))
    prev: _Carried | None = None
    why: str | None = None
    if parts.resumed:
        path = store.partition_dir(stage_dir.parent.parent, store.STATE, capture_id) / DIR
        prev = _Carried.load(path) if path.is_dir() else None
        why = "no matcher state kept by the previous command" if prev is None else None
    STATS["cut"] = cut  # (``_match`` sets the cut it used)
    return _match(stage_dir, flows, resolver, parts, keep, prev, why, held, limit_ns, cut,
                  last, bound)


def _match(stage_dir: Path, flows: pa.Table, resolver: Resolver, parts: StagedParts, keep: bool,
           prev: _Carried | None, why: str | None, held: np.ndarray, limit_ns: int,
           cut: int, last: int | None, bound: IdBound | None = None) -> Result:
    run: _Run | None = None
    if prev is not None:
        why = _check_inputs(prev, parts)
        if why is None:
            run, why = _incremental(stage_dir, parts, prev, flows, resolver, held, limit_ns,
                                    cut)
    if run is None:
        if why is not None:
            WHOLE.append(why)
        prev = None
        for t in OUTPUT_TABLES:  # (in the dataset: they go in this command's commit)
            drop_carried(stage_dir, t, parts.old.get(t, []))
            parts.old[t] = []
        files = {t: [*parts.old[t], *parts.fresh(t)] for t in INPUT_TABLES}
        cands = (_scan_rows(stage_dir, parts, old=True)
                 if any(files[t] for t in MESSAGE_TABLES) else None)
        run = _execute(files, flows, resolver, cands, held=held, limit_ns=limit_ns, cut=cut)
        run.extra["venue_fp"] = _venue_fingerprint(resolver)
    try:
        if last is not None:
            cut = min(cut, max(last - SETTLE_NS, _legs_cut(run)))
        STATS["cut"] = run.extra["final_cut"] = cut
        run.extra["id_bound"] = (bound, last)
        run.extra["limit_ns"] = limit_ns
        return _finish(stage_dir, flows, parts, keep, prev, run, held, cut, last)
    finally:
        run.close()


def _legs_cut(run: _Run) -> int:
    """The earliest last row of the run's answered groups a later file may still add a
    leg to, or whose later reply breaks a premise (``INF``: none): an order that may
    get an engine leg (decoded, not rejected, without one, of a venue that a flow with
    an engine-stream dialect has: ``engine.sql`` pairs events of the same venue), and
    an order action other than a new order (a later reply to a final FIX cancel or
    replace decides again: ``_check_fix``). Such a group is final only once that last
    row is ``SETTLE_NS`` old, as every group was; the others as soon as no later row
    can come before them (``_cut``). (The unanswered groups, and those whose RTT
    samples are still coming, wait by their settle time.)"""
    g = run.groups
    if g is None or g.num_rows == 0:
        return INF
    answered = pc.fill_null(pc.and_(g.column("has_ack"),
                                    pc.invert(g.column("orphan"))), False)
    wait = pc.fill_null(pc.not_equal(g.column("kind"), "new"), False)
    dialects = prefilter.rules_and_needles()[0]["engine_streams"].column("dialect")
    rules = run.rules.filter(pc.fill_null(pc.is_in(
        run.rules.column("dialect"), value_set=dialects.combine_chunks()), False))
    if rules.num_rows:
        venues = rules.column("venue").combine_chunks()
        same = pc.is_in(g.column("venue"), value_set=venues, skip_nulls=True)
        if venues.null_count:
            same = pc.or_kleene(same, pc.is_null(g.column("venue")))
        may = pc.and_kleene(pc.and_kleene(g.column("decoded"), pc.invert(
            g.column("has_engine"))), pc.fill_null(pc.not_equal(
                g.column("status"), "rejected"), True))
        wait = pc.or_(wait, pc.fill_null(pc.and_kleene(may, same), False))
    t = ns_or_inf(g.column("last_ts"))[
        pc.and_(answered, wait).to_numpy(zero_copy_only=False)]
    return int(t.min()) if len(t) else INF


def _finish(stage_dir: Path, flows: pa.Table, parts: StagedParts, keep: bool,
            prev: _Carried | None, run: _Run, held: np.ndarray, cut: int,
            last: int | None) -> Result:
    drop = (prev.t["finalized"].column("cid").combine_chunks() if prev is not None
            else pa.array([], pa.string()))
    final, prov = _split(run, cut, drop)
    pend = (_pending(prev, run, cut, int(run.extra["limit_ns"]))
            if prev is not None else None)
    if pend is not None:  # (the carried groups' rows: ``_Pending``)
        final = {t: pa.concat_tables([final[t], pend.final[t].cast(final[t].schema)])
                 for t in OUTPUT_TABLES}
        prov = {t: pa.concat_tables([prov[t], pend.prov[t].cast(prov[t].schema)])
                for t in OUTPUT_TABLES}
    run.extra["pending"] = pend
    venue, source = _venue_maps(run.rules)
    others = run.extra.get("stored")
    if others is not None and others.num_rows:  # (``_flows_to_name``: as they were)
        v, src = _venue_maps(others.select(["flow_id", "venue", "venue_source"]))
        venue, source = {**v, **venue}, {**src, **source}
    STATS["flows_named"] = run.rules.num_rows
    c = time.process_time()
    STATS.pop("window", None)
    win = _window(prev, parts)  # (the set's earlier rows: those the derive reads)
    earlier = win.rows
    whole = {t: pa.concat_tables([earlier[t], final[t].cast(earlier[t].schema),
                                  prov[t].cast(earlier[t].schema)]) for t in OUTPUT_TABLES}
    win.stage(stage_dir)
    STATS["whole_read_s"] = time.process_time() - c
    STATS["window_rows"] = sum(t.num_rows for t in earlier.values())
    STATS["window_since"] = win.since
    STATS["groups"] = run.groups.num_rows if run.groups is not None else 0
    STATS["final_groups"] = int(np.count_nonzero(ns_or_inf(run.groups.column("settle")) < cut)) \
        if run.groups is not None else 0
    STATS["incremental"] = prev is not None
    if run.groups is not None and run.groups.num_rows:
        g = run.groups
        STATS["unacked"] = int(pc.sum(pc.invert(g.column("has_ack"))).as_py() or 0)
        STATS["waiting"] = int(np.count_nonzero(
            ns_or_inf(g.column("settle")) - ns_or_inf(g.column("order_ts")) > 10**11))
    if keep and run.enc == 0:
        c = time.process_time()
        save(stage_dir, parts, prev, run, cut, held, flows)
        assert run.groups is not None
        kept = win.advance(final, _window_start(run.groups, cut, last, pend)).save(
            stage_dir / store.STATE / DIR)
        keep_state_files(stage_dir, [f"{DIR}/{n}" for n in [*kept, *run.extra.pop("ids_kept")]])
        STATS["save_s"] = time.process_time() - c
    elif keep:  # nothing carried: the next command matches the set whole (the
        # commit replaces the state's files by name: a stale state must not stay)
        out_dir = stage_dir / store.STATE / DIR
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        (out_dir / "meta.json").write_text(json.dumps({"version": None}))
    out = MatchOutput(flow_venue={int(f): str(v) for f, v in venue.items()}, tables=whole,
                      flow_venue_source={int(f): str(s) for f, s in source.items()})
    bound = run.extra.get("id_bound", (None, None))[0]
    refs = None
    if prev is not None and bound is not None:
        refs = forgotten_refs(prev, run, final, bound, cut)
        later = forgotten_refs(prev, run, prov, bound, cut, events=False)
        if later is not None:
            prov = {**prov, "anomalies": later}
    return Result(out, final, prov, refs)


def _check_inputs(prev: _Carried, parts: StagedParts) -> str | None:
    """Premises read before the run: this command's rows follow the previous cut."""
    before = int(prev.meta["cut"])
    for t, col in _TS_COLUMNS:
        if no_row_before(parts.fresh(t), col, before):
            continue
        if min_ns(_read(parts.fresh(t), t, [col]), col) < before:
            return f"{t} rows before the previous cut"
    inc = prev.t["rtt_incomplete"]
    files = parts.fresh("tcp_rtt")
    early = not no_row_before(files, "ts_sent", before)
    if not early and not inc.num_rows:
        return None  # (none before it of all the samples: none of those the matcher reads)
    # (the strings as read, dictionary-encoded; with none before the cut, of ``inc``'s
    # connections only: ~7 -> ~3 ms a command at ~50k samples a file)
    rtt = pa.concat_tables([pq.ParquetFile(p, read_dictionary=["direction", "method"]).read(
        columns=["flow_id", "direction", "piggybacked", "retransmitted", "ts_sent", "method"])
        for p in files]) if files else None
    if rtt is None or rtt.num_rows == 0:
        return None
    if not early and inc.num_rows:
        rtt = rtt.filter(pc.is_in(rtt.column("flow_id"),
                                  value_set=inc.column("flow_id").combine_chunks()))
    rtt = _clean_rtt(rtt)
    if early and min_ns(rtt, "ts_sent") < before:
        return "RTT samples before the previous cut"
    if rtt.num_rows and inc.num_rows:
        # (per method, the samples' connections against those of ``inc`` of that method:
        # a "flow:method" string per sample cost ~4 ms)
        method = pc.fill_null(rtt.column("method").cast(pa.string()), "ack")
        for m in pc.unique(inc.column("method")).drop_null().to_pylist():
            had = inc.column("flow_id").filter(pc.fill_null(
                pc.equal(inc.column("method"), m), False)).combine_chunks()
            if pc.any(pc.and_(pc.equal(method, m), pc.is_in(
                    rtt.column("flow_id"), value_set=had))).as_py():
                return "an RTT sample after a final order that lacked them"
    return None


def _incremental(stage_dir: Path, parts: StagedParts, prev: _Carried, flows: pa.Table,
                 resolver: Resolver, held: np.ndarray, limit_ns: int, cut: int
                 ) -> tuple[_Run | None, str | None]:
    cands = _scan_rows(stage_dir, parts, old=False)
    if cands is None and parts.fresh("ws_messages"):
        return None, "no ingest-time scan of this command's WebSocket messages"
    scan = prev.t["scan"]
    cands = pa.concat_tables([scan.cast(cands.schema) if cands is not None else scan,
                              *([cands] if cands is not None else [])])
    files: dict[str, list[Path]] = {t: parts.fresh(t) for t in INPUT_TABLES}
    files["http_messages"].append(prev.dir / "http_messages.parquet")
    files["tcp_rtt"].append(prev.dir / "tcp_rtt.parquet")
    files["fix_messages"].append(prev.dir / "fix_messages.parquet")
    comp = {int(r["flow_id"]): (int(r["ts"]), r["sender"], r["target"])
            for r in prev.t["comp_ids"].to_pylist()}
    fp = _venue_fingerprint(resolver)
    named, others = _flows_to_name(flows, prev, held, fp)
    extra = {"_ids_prev": prev.t["ids"], "fix_prev": prev.t["fix_prev"]}
    views = {"learned_prev": LEARNED_PREV}
    lat = _latency_prev(prev)
    if lat is not None:  # (``_Pending``)
        extra["_latency_prev_rows"] = lat
        views["latency_prev"] = LATENCY_PREV
    run = _execute(files, named, resolver, cands, held=held, limit_ns=limit_ns, cut=cut,
                   extra=extra, views=views, comp_ids=comp,
                   content={"http": prev.t["content_http"], "ws": prev.t["content_ws"]})
    run.extra["venue_fp"] = fp
    run.extra["stored"] = others
    try:
        why = _check_run(prev, run) or _check_named(run, others)
    except BaseException:
        run.close()
        raise
    if why is not None:
        run.close()
        return None, why
    return run, None


LEARNED_PREV = ("SELECT venue, client_order_id, exchange_order_id FROM _ids_prev "
                "WHERE kind = 'new' AND status = 'accepted' "
                "AND client_order_id IS NOT NULL AND exchange_order_id IS NOT NULL")
"""``combine.sql``'s ``learned_prev``: the set's accepted orders with both ids, a view
over the remembered ids (memory-mapped parts; filtered and copied in pyarrow, ~0.02 s a
command at ~200k orders, for the few a cancel or amend of this file looks up)."""


def _venue_fingerprint(resolver: Resolver) -> str:
    """What names a flow besides its own facts, as a digest: the venue map and host
    rules, and the venues the dataset's other captures named per address
    (``VenueRegistry``; another ``Resolver``: "")."""
    import hashlib

    entries, rules = getattr(resolver, "entries", None), getattr(resolver, "host_rules", None)
    data = getattr(resolver, "data", None)
    if entries is None or rules is None:
        return ""
    from ..venues import known_addresses

    known = sorted(known_addresses(data).items()) if data is not None else []
    return hashlib.sha256(repr((entries, rules, known)).encode()).hexdigest()


def _flows_to_name(flows: pa.Table, prev: _Carried, held: np.ndarray, fp: str
                   ) -> tuple[pa.Table, pa.Table | None]:
    """The flows whose venues this command works out (``flow_rules``, in Python per
    flow: over the whole set it grew with the set) and the others, which keep the
    venue they were given (None: every flow is named again).

    A flow is named from its own facts (fixed), its own first messages (fixed once
    it is no longer active), the named flows to its server address in the set, and
    what the venue map and the dataset's other captures say (``_venue_fingerprint``).
    So the flows named again are those active since the previous cut, still open, or
    with carried rows; the others keep theirs when no flow of the set is named at
    an address of the ones named again (else all are named again), the fingerprint
    is the previous command's, and no flow named now shares an address with them
    (``_check_named``)."""
    if not fp or prev.meta.get("venue_fp") != fp or flows.num_rows == 0:
        return flows, None
    last = pc.fill_null(flows.column("last_ts").cast(pa.int64()), INF).to_numpy()
    ids = flows.column("flow_id").to_numpy(zero_copy_only=False)
    keep = [np.asarray(held, np.int64)]
    for name in ("http_messages", "tcp_rtt", "scan", "fix_messages"):
        t = prev.t[name]
        if t.num_rows and "flow_id" in t.column_names:
            keep.append(t.column("flow_id").to_numpy().astype(np.int64))
    mine = (last >= int(prev.meta["cut"])) | np.isin(ids, np.concatenate(keep))
    src = pc.fill_null(pc.is_in(flows.column("venue_source"),
                                value_set=pa.array(["map", "name"])), False)
    address = _address(flows)
    at = address.filter(pa.array(mine))
    old_named = address.filter(pc.and_(pa.array(~mine), src))
    if pc.any(pc.is_in(at, value_set=old_named.combine_chunks())).as_py():
        return flows, None
    return flows.filter(pa.array(mine)), flows.filter(pa.array(~mine))


def _address(flows: pa.Table) -> pa.ChunkedArray:
    """"server_ip:server_port" of each flow."""
    return pc.binary_join_element_wise(
        pc.fill_null(flows.column("server_ip"), ""),
        pc.fill_null(pc.cast(flows.column("server_port"), pa.string()), ""), ":")


def _check_named(run: _Run, others: pa.Table | None) -> str | None:
    """A flow named now (from its own facts) at the address of flows that kept their
    venue: those could take its venue (``venue_infer``, "address")."""
    if others is None or others.num_rows == 0:
        return None
    rules = run.rules
    own = pc.fill_null(pc.is_in(rules.column("venue_source"),
                                value_set=pa.array(["map", "name"])), False)
    if not pc.any(own).as_py():
        return None
    named = set(rules.column("flow_id").filter(own).to_pylist())
    sub = run.extra["named_flows"]
    mask = pc.is_in(sub.column("flow_id"), value_set=pa.array(sorted(named), pa.int64()))
    key = [_address(t) for t in (sub, others)]
    if pc.any(pc.is_in(key[1], value_set=key[0].filter(mask).combine_chunks())).as_py():
        return "a flow named at the address of earlier flows"
    return None


def _check_run(prev: _Carried, run: _Run) -> str | None:
    """Premises read after the run (module docstring)."""
    if run.enc:
        return "REST known from TLS record timing (matched whole)"
    was = prev.t["venues"]
    if was.num_rows:
        at = pc.index_in(was.column("flow_id"), value_set=run.rules.column("flow_id"))
        for col in ("venue", "dialect"):
            now = run.rules.column(col).take(at)
            same = pc.or_kleene(pc.is_null(at), pc.fill_null(
                pc.equal(now, was.column(col)), False))
            same = pc.or_kleene(same, pc.and_(pc.is_null(now), pc.is_null(was.column(col))))
            if not pc.all(same).as_py():
                return "a flow changed venue"
    orph, mx = run.rest_orphans, prev.t["max_req"]
    if orph is not None and orph.num_rows and mx.num_rows:
        at = pc.index_in(orph.column("flow_id"), value_set=mx.column("flow_id"))
        top = mx.column("request_index").take(at)
        if pc.any(pc.fill_null(pc.less_equal(orph.column("request_index"), top), False)).as_py():
            return "a response to a request the carried rows do not hold"
    g = run.groups
    assert g is not None
    fin = prev.t["finalized"]
    if fin.num_rows and g.num_rows:
        at = pc.index_in(g.column("cid"), value_set=fin.column("cid"))
        known = pc.is_valid(at)
        more = pc.or_(
            pc.and_(g.column("has_ack"), pc.invert(fin.column("has_ack").take(at))),
            pc.and_(g.column("has_engine"), pc.invert(fin.column("has_engine").take(at))))
        if pc.any(pc.fill_null(pc.and_(known, more), False)).as_py():
            return "a reply to a final order (past resume_pending_s)"
    return _check_fix(prev, run) or _check_ids(prev, run)


def _check_fix(prev: _Carried, run: _Run) -> str | None:
    """FIX replies and orders of this command against the set's final FIX orders and
    orphan replies (``fix_prev``): one that a single ingest would pair with them, or
    that would make a final orphan an order's reply."""
    fp = prev.t["fix_prev"]
    if fp.num_rows == 0 or run.con is None:
        return None
    # of the set's final FIX orders only those either join below can meet (as SQL's
    # WHERE has it, nulls and all): orphan replies, orders not new or without a reply.
    # Answered new orders are nearly all of them (~200k at 8 files of ``make_capture.py
    # --answered``), which DuckDB scanned every command
    orphan = fp.column("orphan")
    fp = fp.filter(pc.or_(pc.fill_null(orphan, False), pc.fill_null(pc.and_kleene(
        pc.invert(orphan), pc.or_kleene(pc.invert(fp.column("has_ack")),
                                        pc.not_equal(fp.column("kind"), "new"))), False)))
    if fp.num_rows == 0:
        return None
    con = run.con
    con.register("_mc_fp", fp)
    try:
        # (the final order waited past resume_pending_s, or a cancel/replace may have
        # been paired by OrigClOrdID: a reply echoing it decides again)
        hit = con.sql("""
            SELECT 'a reply to a final FIX order' FROM fix_replies r JOIN _mc_fp p
              ON p.flow_id = r.flow_id AND NOT p.orphan AND (NOT p.has_ack OR p.kind <> 'new')
             AND ((r.msg_type IN ('8', '9', 'XAR') AND r.cl_ord_id = p.client_order_id)
                  OR (r.msg_type = '8' AND p.kind <> 'new'
                      AND r.orig_cl_ord_id = p.orig_client_order_id)
                  OR r.msg_type IN ('3', 'j'))
            UNION ALL
            SELECT 'a FIX order for a final orphan reply' FROM fix_orders o JOIN _mc_fp p
              ON p.orphan AND (o.client_order_id = p.client_order_id
                  OR (o.kind <> 'new' AND o.orig_client_order_id = p.orig_client_order_id))
            LIMIT 1""").fetchall()
    except duckdb.CatalogException:  # no FIX input: fix.sql stopped at its gate
        hit = []
    finally:
        con.unregister("_mc_fp")
    return str(hit[0][0]) if hit else None


def _check_ids(prev: _Carried, run: _Run) -> str | None:
    """New replies, engine events and learned ids against the set's final orders."""
    ids = prev.t["ids"]
    g = run.groups
    assert g is not None
    if ids.num_rows == 0:
        return None
    accepted = pc.fill_null(pc.and_(pc.equal(g.column("kind"), "new"),
                                    pc.equal(g.column("status"), "accepted")), False)
    if not pc.any(accepted).as_py() and (run.engine is None or run.engine.num_rows == 0):
        return None  # (nothing the query below could find)
    # ids rows not made again by this run (SQL's ``cid NOT IN (SELECT cid FROM g)``, in
    # pyarrow: a DuckDB temp table copied every id of the set, ~0.05 s at ~240k
    # orders), of those only the rows an id of this run's accepted orders or engine
    # events names (every join below is on one of their ids: six scans of the set's ids
    # cost ~0.04 s a command at ~200k orders, for the few rows they can meet)
    n = g.filter(pc.and_(accepted, pc.invert(pc.fill_null(g.column("orphan"), False))))
    named = _named(ids, n, run.engine, prev.ids.get("ids"))
    if named.num_rows == 0:
        return None  # (none named: ``_not_in``'s set of this run's ~30k groups not made)
    old = _not_in(named, "cid", g.column("cid"))
    if old.num_rows == 0:
        return None  # (every join below is with ``old``: none can meet a row)
    con = run.con if run.con is not None else _connect(1)
    try:
        con.register("ids", ids)
        con.register("g", g)
        con.register("fin", prev.t["finalized"])
        con.register("ev", run.engine if run.engine is not None else pa.table({
            "venue": pa.array([], pa.string()), "subject": pa.array([], pa.string()),
            "order_id": pa.array([], pa.string()), "event_kind": pa.array([], pa.string()),
            "ts": pa.array([], pa.int64())}))
        con.register("old", old)
        acc = ("SELECT * FROM g WHERE NOT orphan AND kind = 'new' AND status = 'accepted' "
               "AND exchange_order_id IS NOT NULL AND cid NOT IN (SELECT cid FROM fin)")
        # (each OR of the conditions its own join on an id: joined on the venue alone,
        # every new order met every final one, 30,000 x 30,000 pairs, ~7 s a command)
        ev_old = ("SELECT 1 FROM ev e JOIN old o ON o.venue IS NOT DISTINCT FROM e.venue "
                  "AND o.decoded AND NOT o.has_engine "
                  "AND o.status IS DISTINCT FROM 'rejected' "
                  "AND o.kind = e.event_kind AND e.ts > o.order_ts AND ")
        hit = con.sql(f"""
            WITH n AS ({acc})
            SELECT 1 FROM n JOIN old o ON o.venue IS NOT DISTINCT FROM n.venue
              AND o.kind = 'new' AND o.status = 'accepted'
              AND o.client_order_id = n.client_order_id
              AND o.exchange_order_id IS DISTINCT FROM n.exchange_order_id
            UNION ALL
            SELECT 1 FROM n JOIN old o ON o.venue IS NOT DISTINCT FROM n.venue
              AND o.kind = 'new' AND o.status = 'accepted'
              AND o.exchange_order_id = n.exchange_order_id
              AND o.client_order_id IS DISTINCT FROM n.client_order_id
            UNION ALL
            SELECT 1 FROM n JOIN old o ON o.venue IS NOT DISTINCT FROM n.venue
              AND o.kind IN ('cancel', 'amend')
              AND o.orig_client_order_id IS NULL AND o.target_order_id = n.exchange_order_id
            UNION ALL
            SELECT 1 FROM n JOIN old o ON o.venue IS NOT DISTINCT FROM n.venue
              AND o.kind IN ('cancel', 'amend')
              AND o.target_order_id IS NULL AND o.orig_client_order_id = n.client_order_id
            UNION ALL
            {ev_old} e.subject = CASE WHEN o.kind = 'new' THEN o.client_order_id
                                      ELSE o.orig_client_order_id END
            UNION ALL
            {ev_old} e.order_id = coalesce(o.target_order_id, o.exchange_order_id)
            LIMIT 1""").fetchall()
        return "a new reply or id that changes a final order" if hit else None
    finally:
        for name in ("ids", "g", "fin", "ev", "old"):
            con.unregister(name)
        if con is not run.con:
            con.close()


_CLIENT_IDS = ("client_order_id", "orig_client_order_id")
"""Of ``ids``' columns, those ``_check_ids`` compares with a client order id (an accepted
order's, or an engine event's subject)."""
_EXCHANGE_IDS = ("exchange_order_id", "target_order_id")
"""And those it compares with an exchange order id (an accepted order's, or an engine
event's order id)."""


def _named(ids: pa.Table, n: pa.Table, engine: pa.Table | None,
           parts: IdParts | None = None) -> pa.Table:
    """The rows of ``ids`` that ``_check_ids``'s joins can meet: a client order id
    (``_CLIENT_IDS``) that ``n``'s client order ids (this run's accepted orders) or
    ``engine``'s subjects name, or an exchange order id (``_EXCHANGE_IDS``) that ``n``'s
    exchange order ids or ``engine``'s order ids name. (Each id against the names of
    its own kind: every name against all four columns cost twice as much.) ``parts``:
    ``ids`` as its parts, each looked up only by the names within its zone
    (``IdParts.zones``): ids that grow with time (a counter, a timestamp) are not looked
    up at all, where each column cost ~10 ms at ~200k ids (``pc.is_in`` against ~30k
    names: the lookups, not the scan, ~1 ms against one name)."""
    sets: dict[tuple[str, ...], pa.ChunkedArray] = {}  # (the names as given: ``_named_in``
    # takes the distinct ones it looks up)
    for cols, name, ev in ((_CLIENT_IDS, "client_order_id", "subject"),
                           (_EXCHANGE_IDS, "exchange_order_id", "order_id")):
        names = [n.column(name)]
        if engine is not None and engine.num_rows:
            names.append(engine.column(ev))
        sets[cols] = pa.chunked_array(
            [c for x in names for c in x.cast(pa.string()).chunks], pa.string())
    if parts is None or len(parts.zones) != len(parts.parts) or not parts.parts:
        return _named_in(ids, sets, None)
    return pa.concat_tables([ids.schema.empty_table(), *(
        _named_in(p.select(ids.column_names).cast(ids.schema), sets, z)
        for p, z in zip(parts.parts, parts.zones, strict=True))])


def _named_in(ids: pa.Table, sets: Mapping[tuple[str, ...], pa.Array],
              zone: Mapping[str, list[str] | None] | None) -> pa.Table:
    """``_named`` over one part of ``ids`` (``zone``: its ``IdParts.zones`` entry)."""
    hit = None
    for cols, given in sets.items():
        every = None
        for c in cols:
            col = ids.column(c)
            if len(given) == 0 or col.null_count == len(col):
                continue
            if zone is not None and c in zone:
                z = zone[c]
                if z is None:
                    continue  # (all null)
                vs = given.filter(pc.and_(  # (a null name: dropped, as a null compares)
                    pc.greater_equal(given, pa.scalar(z[0], pa.string())),
                    pc.less_equal(given, pa.scalar(z[1], pa.string()))))
                if len(vs) == 0:
                    continue
                vs = pc.unique(vs)
            else:
                if every is None:
                    every = pc.drop_null(pc.unique(given))
                vs = every
            h = pc.is_in(col.cast(pa.string()), value_set=vs)
            hit = h if hit is None else pc.or_(hit, h)
    if hit is None:
        return ids.slice(0, 0)
    return ids.filter(pc.fill_null(hit, False))


def _not_in(rows: pa.Table, column: str, values: pa.ChunkedArray | pa.Array) -> pa.Table:
    """``rows`` WHERE ``column`` NOT IN ``values``, as SQL has it: none if ``values`` holds
    a null; a row whose ``column`` is null only if ``values`` is empty."""
    if len(values) == 0:
        return rows
    if values.null_count:
        return rows.slice(0, 0)
    # per part (``IdParts``: a memory-mapped batch each): only a part with a row to drop
    # is filtered (copied); filtering the whole table copied every id of the set, ~0.04
    # s a command at ~240k orders, to drop the few made again
    vs = pc.unique(values)
    out = []
    for b in rows.to_batches():
        col = b.column(column)
        drop = pc.or_(pc.is_null(col), pc.is_in(col, value_set=vs))
        out.append(b.filter(pc.invert(drop)) if pc.any(drop).as_py() else b)
    return pa.Table.from_batches(out, schema=rows.schema)


# --- saving ----------------------------------------------------------------------------
def _tables(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()


def save(stage_dir: Path, parts: StagedParts, prev: _Carried | None, run: _Run, cut: int,
         held: np.ndarray, flows: pa.Table) -> None:
    """Write what the next command of the set carries (``DIR`` in the staged state)."""
    out = stage_dir / store.STATE / DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    small: dict[str, pa.Table] = {}  # (``IPC_FILE``: written once, below)
    g = run.groups
    assert g is not None
    settle = ns_or_inf(g.column("settle"))
    order_ts = ns_or_inf(g.column("order_ts"))
    k = cut  # rows of later files follow it; before it, the rows of open groups
    # (the groups final but for their RTT samples are final here but for their rows:
    # ``_Pending``; ``fin``, for the SQL below)
    only = rtt_only(g, cut)
    fin_mask = (settle < cut) | only
    g = g.append_column("fin", pa.array(fin_mask))
    open_ids = g.column("cid").filter(pa.array(~fin_mask))
    grows = []  # (flow, direction, offset) of the messages of the groups not final
    for t, direction in (("orders", "out"), ("acks", "in")):
        rows = run.out.tables[t]
        rows = rows.filter(pa.array(_by_cid(rows, open_ids)))
        grows.append(pa.table({
            "flow_id": rows.column("flow_id").cast(pa.int64()),
            "direction": pa.array([direction] * rows.num_rows, pa.string()),
            "stream_offset": rows.column("stream_offset").cast(pa.int64())}))
    del order_ts
    # the matcher's own connection (a new one, with its set-up, cost ~0.1 s)
    con = run.con if run.con is not None else _connect(1)
    try:
        con.register("held", pa.table({"flow_id": pa.array(held, pa.int64())}))
        # sources: final rows only (the previous command's carried rows, this one's
        # final parts; whole: every final part of the set)
        src_old = prev is None
        final_files = {t: [*(parts.old.get(t, []) if src_old else []), *parts.new.get(t, [])]
                       for t in ("http_messages", "tcp_rtt", "ws_messages", "fix_messages")}
        # --- WebSocket scan rows: from K, and the requests still open at K
        scan = _scan_rows(stage_dir, parts, old=src_old)
        scan = scan if scan is not None else pa.table({})
        if prev is not None:
            scan = pa.concat_tables([prev.t["scan"].cast(scan.schema), scan]) if scan.num_columns \
                else prev.t["scan"]
        tail = _tail_keys(parts)
        con.register("scan", scan)
        con.register("tailk", tail)
        con.register("grows", pa.concat_tables(grows))
        con.register("wsq", run.ws_req if run.ws_req is not None else pa.table({
            "flow_id": pa.array([], pa.int64()), "stream_offset": pa.array([], pa.int64()),
            "ts": pa.array([], pa.int64()), "rep_ts": pa.array([], pa.int64())}))
        if scan.num_columns and scan.num_rows == 0:
            kept = scan
        elif scan.num_columns:
            kept = _tables(con, f"""
                SELECT s.* FROM scan s
                WHERE NOT EXISTS (SELECT 1 FROM tailk t WHERE t.flow_id = s.flow_id
                                  AND t.direction = s.direction
                                  AND t.stream_offset = s.stream_offset)
                  AND (epoch_ns(s.ts_last) >= {k} OR EXISTS (
                    SELECT 1 FROM grows r WHERE r.flow_id = s.flow_id
                      AND r.direction = s.direction AND r.stream_offset = s.stream_offset)
                    OR (s.direction = 'out' AND EXISTS (
                    SELECT 1 FROM wsq q WHERE q.flow_id = s.flow_id
                      AND q.stream_offset = s.stream_offset AND q.ts < {k}
                      AND (q.rep_ts >= {k} OR (q.rep_ts IS NULL
                           AND q.flow_id IN (SELECT flow_id FROM held))))))""")
        else:
            kept = pa.table({})
        small["scan"] = kept
        carried = [kept.select(["flow_id", "direction", "stream_offset"])] if kept.num_rows \
            else []
        # --- HTTP messages: from K, and the requests still open at K (their rows)
        http_src = [*final_files["http_messages"],
                    *([prev.dir / "http_messages.parquet"] if prev is not None else [])]
        http = _read(http_src, "http_messages")
        rq = run.rest_req if run.rest_req is not None else pa.table({
            "flow_id": pa.array([], pa.int64()), "request_index": pa.array([], pa.int64()),
            "ts": pa.array([], pa.int64()), "rep_ts": pa.array([], pa.int64()),
            "full": pa.array([], pa.bool_())})
        con.register("http", http)
        con.register("rq", rq)
        kept = http if http.num_rows == 0 else _tables(con, f"""
            WITH mine AS (  -- the requests of the groups not final (every row of each)
                SELECT DISTINCT h.flow_id, h.request_index FROM http h JOIN grows r
                  ON r.flow_id = h.flow_id AND r.direction = h.direction
                 AND r.stream_offset = h.stream_offset)
            SELECT h.* FROM http h
            WHERE epoch_ns(h.ts_last) >= {k} OR EXISTS (
                SELECT 1 FROM mine m WHERE m.flow_id = h.flow_id
                  AND m.request_index = h.request_index) OR EXISTS (
                SELECT 1 FROM rq q WHERE q.flow_id = h.flow_id
                  AND q.request_index = h.request_index AND q.ts < {k}
                  AND (q.rep_ts >= {k} OR (NOT coalesce(q.full, false)
                       AND q.flow_id IN (SELECT flow_id FROM held))))""")
        pq.write_table(kept.cast(http.schema), out / "http_messages.parquet")
        carried.append(kept.select(["flow_id", "direction", "stream_offset"]))
        mx = _tables(con, """SELECT flow_id, max(request_index)::BIGINT AS request_index
                             FROM rq GROUP BY flow_id""") if rq.num_rows else pa.table({
            "flow_id": pa.array([], pa.int64()), "request_index": pa.array([], pa.int64())})
        if prev is not None and prev.t["max_req"].num_rows and not mx.num_rows:
            mx = prev.t["max_req"]
        elif prev is not None and prev.t["max_req"].num_rows:
            con.register("mx0", prev.t["max_req"])
            con.register("mx1", mx)
            mx = _tables(con, "SELECT flow_id, max(request_index)::BIGINT AS request_index "
                              "FROM (FROM mx0 UNION ALL FROM mx1) GROUP BY flow_id")
        small["max_req"] = mx
        # --- RTT samples: per connection from its own K, and RTT_KEEP before it
        rtt_src = [*final_files["tcp_rtt"],
                   *([prev.dir / "tcp_rtt.parquet"] if prev is not None else [])]
        rtt = _clean_rtt(_read(rtt_src, "tcp_rtt"))
        con.register("rtt", rtt)
        con.register("g", g)
        pend = run.extra.get("pending")
        con.register("pend_o", pend.groups if pend is not None else _PEND_GROUPS.empty_table())
        kf = f"""least(coalesce((SELECT min(order_ts) FROM g WHERE g.flow_id = r.flow_id
                                 AND g.settle >= {cut} AND NOT g.orphan), {cut}),
                       coalesce((SELECT min(order_ts) FROM pend_o p
                                 WHERE p.flow_id = r.flow_id), {cut}))"""
        kept = _tables(con, f"""
            SELECT * EXCLUDE (kf, n) FROM (
                SELECT r.*, least({kf}, {cut}) AS kf,
                       row_number() OVER (PARTITION BY r.flow_id, coalesce(r.method, 'ack'),
                                          epoch_ns(r.ts_sent) >= least({kf}, {cut})
                                          ORDER BY r.ts_sent DESC) AS n
                FROM rtt r)
            WHERE epoch_ns(ts_sent) >= kf OR (n <= {RTT_KEEP} AND (
                flow_id IN (SELECT flow_id FROM held)
                OR flow_id IN (SELECT flow_id FROM g WHERE settle >= {cut})))""")
        pq.write_table(kept.cast(rtt.schema), out / "tcp_rtt.parquet")
        # --- content samples and comp ids (flow_rules over the whole set)
        # (only flows not named from their own facts: ``match._content`` reads no other)
        src = run.rules.column("venue_source")
        own = pc.fill_null(pc.is_in(src, value_set=pa.array(["map", "name"])), False)
        need = run.rules.column("flow_id").filter(pc.invert(own)).to_pylist()
        _save_content(con, small, prev, final_files, need, run.rules.column("flow_id"))
        # --- venues, ids of the set's final orders, final groups made again later
        # the venues of the flows with final rows (a flow named later changes them)
        # (pyarrow: a DuckDB statement costs more than these few rows)
        is_fin = pa.array(fin_mask)
        g_fin = g.filter(is_fin)
        was = prev.t["venues"].column("flow_id").combine_chunks() if prev is not None \
            else pa.array([], pa.int64())
        named = pa.concat_arrays([was.cast(pa.int64()),
                                  g_fin.column("flow_id").combine_chunks().cast(pa.int64())])
        rules = run.rules.select(["flow_id", "venue", "dialect"])
        small["venues"] = rules.filter(pc.is_in(rules.column("flow_id"), value_set=named))
        fin = g_fin.filter(pc.invert(g_fin.column("orphan"))).select([
            "cid", "flow_id", "venue", "kind", "client_order_id", "orig_client_order_id",
            "target_order_id", "decoded", "order_ts", "has_ack", "has_engine", "status",
            "exchange_order_id"])
        run.extra["ids"] = fin  # (added to the earlier ids by ``_bound_ids``)
        # the final groups whose messages are carried: made again, dropped, checked
        msgs = []
        for t, direction in (("orders", "out"), ("acks", "in")):
            rows = run.out.tables[t]
            msgs.append(pa.table({
                "cid": rows.column("correlation_id"),
                "flow_id": rows.column("flow_id").cast(pa.int64()),
                "direction": pa.array([direction] * rows.num_rows, pa.string()),
                "stream_offset": rows.column("stream_offset").cast(pa.int64())}))
        con.register("msgs", pa.concat_tables(msgs))
        con.register("carried", pa.concat_tables(
            [c.cast(pa.schema([("flow_id", pa.int64()), ("direction", pa.string()),
                               ("stream_offset", pa.int64())])) for c in carried]))
        small["finalized"] = (_tables(con, """
            SELECT cid, has_ack, has_engine FROM g
            WHERE fin AND cid IN (
                SELECT m.cid FROM msgs m JOIN carried c USING (flow_id, direction,
                                                             stream_offset))""")
                       if any(c.num_rows for c in carried) else pa.table({
                           "cid": pa.array([], pa.string()), "has_ack": pa.array([], pa.bool_()),
                           "has_engine": pa.array([], pa.bool_())}))
        inc = run.incomplete if run.incomplete is not None else pa.table({
            "flow_id": pa.array([], pa.int64()), "order_ts": pa.array([], pa.int64()),
            "method": pa.array([], pa.string())})
        empty_inc = pa.table({"flow_id": pa.array([], pa.int64()),
                              "method": pa.array([], pa.string())})
        if inc.num_rows and fin.num_rows:
            con.register("inc", inc)
            inc_fin = _tables(con, f"""
                SELECT DISTINCT i.flow_id, i.method FROM inc i JOIN g
                  ON g.flow_id = i.flow_id AND g.order_ts = i.order_ts AND g.settle < {cut}""")
        else:
            inc_fin = empty_inc
        if pend is not None and pend.inc_fin.num_rows:
            inc_fin = pa.concat_tables([inc_fin.cast(empty_inc.schema),
                                        pend.inc_fin.cast(empty_inc.schema)])
        if prev is not None and prev.t["rtt_incomplete"].num_rows:
            both = pa.concat_tables([prev.t["rtt_incomplete"].select(["flow_id", "method"])
                                     .cast(empty_inc.schema), inc_fin.cast(empty_inc.schema)])
            both = both.filter(pc.is_in(both.column("flow_id"),
                                        value_set=pa.array(held, pa.int64())))
            inc_fin = both.group_by(["flow_id", "method"]).aggregate([])
        small["rtt_incomplete"] = inc_fin
        _save_pending(small, run, g, only, prev, pend)
        _save_fix(con, out, prev, run, final_files["fix_messages"], cut,
                  pa.concat_tables(grows))
    finally:
        if con is not run.con:
            con.close()
    bundle.write(out / IPC_FILE, small)
    forgot = _bound_ids(out, run, prev)
    (out / "meta.json").write_text(json.dumps({"version": VERSION, "cut": cut, "k": k,
                                               "venue_fp": run.extra.get("venue_fp", ""),
                                               "forgot": forgot}))


def _save_pending(small: dict[str, pa.Table], run: _Run, g: pa.Table, only: np.ndarray,
                  prev: _Carried | None, pend: _Pending | None) -> None:
    """The groups final but for their RTT samples (``_Pending``) the next command is
    given as rows: this run's (``only``; not those it made again from carried messages
    though final already: dropped, ``finalized``) and the carried ones still waiting."""
    new = g.filter(pa.array(only))
    if prev is not None and new.num_rows and prev.t["finalized"].num_rows:
        new = new.filter(pc.invert(pc.is_in(
            new.column("cid"), value_set=prev.t["finalized"].column("cid").combine_chunks())))
    groups = pa.table({"cid": new.column("cid").cast(pa.string()),
                       "flow_id": new.column("flow_id").cast(pa.int64()),
                       "order_ts": new.column("order_ts").cast(pa.int64()),
                       "answered_settle": new.column("answered_settle").cast(pa.int64())},
                      schema=_PEND_GROUPS)
    cids = groups.column("cid").combine_chunks()
    for t in OUTPUT_TABLES:
        rows = run.out.tables[t]
        rows = rows.filter(pa.array(_by_cid(rows, cids))) if len(cids) else rows.slice(0, 0)
        if pend is not None:
            rows = pa.concat_tables([rows, pend.prov[t].cast(rows.schema)])
        small[PEND[t]] = rows
    if pend is not None:
        groups = pa.concat_tables([groups, pend.groups.cast(_PEND_GROUPS)])
    small[PEND_GROUPS] = groups
    STATS["pending"] = groups.num_rows


_FIX_PREV = pa.schema([("flow_id", pa.int64()), ("client_order_id", pa.string()),
                      ("orig_client_order_id", pa.string()), ("kind", pa.string()),
                      ("has_ack", pa.bool_()), ("orphan", pa.bool_()), ("ts", pa.int64())])
"""``fix_prev`` (``sql/common.sql``; ``ts``, the order's or the orphan reply's time, is
``IdBound``'s alone)."""


def _msg_key(rows: pa.Table) -> pa.Array:
    """"flow_id:direction:stream_offset" of each message (null: a part of it null)."""
    return pc.binary_join_element_wise(
        pc.cast(rows.column("flow_id"), pa.string()), rows.column("direction"),
        pc.cast(rows.column("stream_offset"), pa.string()), ":").combine_chunks()


FIX_TAGS_READ = (45, 102, 103, 373, 380)
"""The tags ``fix.sql`` reads from a reply's ``fields`` (``fix_tag``: RefSeqNum and the
reject reasons); of an order action it reads none."""


def _fix_fields_read(rows: pa.Table) -> pa.Table:
    """The carried FIX messages with only the ``fields`` ``fix.sql`` reads: of a reply
    the ``FIX_TAGS_READ`` entries, in order (``fix_tag`` takes the first of a tag); of
    an order action none (null); and no ``text``. Those were ~80% of the carried
    file's bytes, written by each command and read by the next one's ``_save_fix`` and
    ``fix_in``."""
    if rows.num_rows == 0:
        return rows
    at = rows.schema.get_field_index("fields")
    lists = rows.column(at).combine_chunks()
    entries = lists.flatten()
    parent = pc.list_parent_indices(lists).to_numpy()
    reply = pc.fill_null(pc.equal(rows.column("direction"), "in"), False).combine_chunks()
    keep = pc.and_(pc.fill_null(pc.is_in(entries.field("tag"), value_set=pa.array(
        FIX_TAGS_READ, pa.int32())), False), reply.take(pa.array(parent)))
    counts = np.bincount(parent[keep.to_numpy(zero_copy_only=False)],
                         minlength=rows.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    trimmed = pa.ListArray.from_arrays(
        pa.array(offsets), entries.filter(keep), type=lists.type,
        mask=pc.or_(pc.invert(reply), pc.is_null(lists)))
    rows = rows.set_column(at, rows.schema.field(at), trimmed)
    at = rows.schema.get_field_index("text")  # (58 Text: no SQL reads it; ~a third)
    return rows.set_column(at, rows.schema.field(at), pa.nulls(rows.num_rows, pa.string()))


def _save_fix(con: duckdb.DuckDBPyConnection, out: Path, prev: _Carried | None, run: _Run,
              files: Sequence[Path], cut: int, grows: pa.Table) -> None:
    """FIX: the messages ``fix.sql`` reads from the cut on and those of the groups not
    final (``grows``); the final groups' orders and orphan replies (``fix_prev``)."""
    rows = _read(files, "fix_messages", where=[
        [("direction", "=", "out"), ("msg_type", "in", ["D", "F", "G", "XCN", "XAK"])],
        [("direction", "=", "in"), ("msg_type", "in", ["8", "9", "XAR", "3", "j"])]])
    if prev is not None:  # (its rows are ``FIX_READ``'s already: read whole, not through
        # pyarrow.dataset's filter, ~0.01 s)
        rows = pa.concat_tables([rows, _read([prev.dir / "fix_messages.parquet"],
                                             "fix_messages")])
    # (the read's filter is ``FIX_READ``; the rest in pyarrow: a DuckDB statement costs
    # milliseconds, these are a few hundred rows)
    keep = pc.greater_equal(rows.column("ts_last").cast(pa.int64()), cut)
    if rows.num_rows and grows.num_rows:
        keep = pc.or_kleene(keep, pc.is_in(_msg_key(rows), value_set=_msg_key(grows),
                                           skip_nulls=True))
    kept = _fix_fields_read(rows.filter(pc.fill_null(keep, False)))
    pq.write_table(kept, out / "fix_messages.parquet")
    new = _FIX_PREV.empty_table()
    fix_orders = run.out.tables["orders"]
    fix_orders = fix_orders.filter(pc.fill_null(pc.equal(fix_orders.column("protocol"), "fix"),
                                                False))
    fix_acks = run.out.tables["acks"]
    fix_acks = fix_acks.filter(pc.fill_null(pc.equal(fix_acks.column("protocol"), "fix"), False))
    if fix_orders.num_rows or fix_acks.num_rows:
        con.register("_mc_orders", fix_orders)
        con.register("_mc_acks", fix_acks)
        new = _tables(con, f"""
            SELECT o.flow_id::BIGINT AS flow_id, o.client_order_id, o.orig_client_order_id,
                   o.kind, coalesce(g.has_ack, false) AS has_ack, false AS orphan,
                   epoch_ns(o.ts) AS ts
            FROM _mc_orders o JOIN g ON g.cid = o.correlation_id
            WHERE g.fin
            UNION ALL
            SELECT a.flow_id::BIGINT, a.client_order_id, a.orig_client_order_id, NULL,
                   true, true, epoch_ns(a.ts)
            FROM _mc_acks a JOIN g ON g.cid = a.correlation_id
            WHERE g.orphan AND g.settle < {cut}""").cast(_FIX_PREV)
    run.extra["fix_prev"] = new  # (added to the earlier ones by ``_bound_ids``)


def _save_content(con: duckdb.DuckDBPyConnection, small: dict[str, pa.Table],
                  prev: _Carried | None,
                  files: Mapping[str, Sequence[Path]], need: list[int],
                  named: pa.ChunkedArray) -> None:
    """The first outbound messages of the flows ``need`` (``match._content``'s sample)
    and the first FIX comp ids of the flows ``named`` (this match's ``flow_rules``). A
    later command names only flows it names too, or flows that begin after it
    (``_flows_to_name``: active since this cut, still open, or with carried rows), so
    the comp ids of the other flows, ended, are not kept: they grew with the set."""
    files = {t: (fs if need or t == "fix_messages" else []) for t, fs in files.items()}
    ws = _read(files["ws_messages"], "ws_messages",
               ["flow_id", "direction", "opcode", "payload_unknown", "stream_offset", "payload"],
               need) if files["ws_messages"] else None
    if ws is not None and ws.num_rows:  # what ``match._content`` reads
        con.register("w", ws)
        ws = _tables(con, "SELECT * FROM w WHERE direction = 'out' AND opcode = 'text' "
                          "AND NOT coalesce(payload_unknown, false)")
        con.unregister("w")
    http = _read(files["http_messages"], "http_messages",
                 ["flow_id", "direction", "kind", "path", "stream_offset"], need)
    http = http.filter(pc.fill_null(pc.and_(
        pc.and_(pc.equal(http.column("direction"), "out"),
                pc.equal(http.column("kind"), "request")),
        pc.is_valid(http.column("path"))), False))
    fix = _read(files["fix_messages"], "fix_messages",
                ["flow_id", "direction", "ts_last", "sender_comp_id", "target_comp_id"])
    for name, rows in (("content_ws", ws), ("content_http", http)):
        if rows is None:
            rows = _read([], "ws_messages", ["flow_id", "direction", "opcode",
                                             "payload_unknown", "stream_offset", "payload"])
        if prev is not None:
            rows = pa.concat_tables([prev.t[name].cast(rows.schema), rows])
        rows = rows.filter(pc.is_in(rows.column("flow_id"), value_set=pa.array(need, pa.int64())))
        if rows.num_rows == 0:
            small[name] = rows
            continue
        con.register("c", rows)
        rows = _tables(con, f"""SELECT * FROM c QUALIFY row_number() OVER (
                                PARTITION BY flow_id ORDER BY stream_offset) <= {CONTENT_SAMPLE}""")
        con.unregister("c")
        small[name] = rows
    known = prev.t["comp_ids"] if prev is not None else None
    if known is not None and known.num_rows and fix.num_rows:
        # (a flow's first message is in the file it began in: later rows follow the cut)
        fix = fix.filter(pc.invert(pc.is_in(fix.column("flow_id"),
                                            value_set=known.column("flow_id").combine_chunks())))
    if fix.num_rows:
        con.register("fx", fix)
        comp = _tables(con, """
            SELECT flow_id, min(epoch_ns(ts_last)) AS ts,
                   arg_min(sender_comp_id, ts_last) AS sender,
                   arg_min(target_comp_id, ts_last) AS target
            FROM fx WHERE direction = 'out' GROUP BY flow_id""")
        con.unregister("fx")
        if known is not None and known.num_rows:
            comp = pa.concat_tables([known.cast(comp.schema), comp])
    elif known is not None:
        comp = known
    else:
        comp = pa.table({"flow_id": pa.array([], pa.int64()), "ts": pa.array([], pa.int64()),
                         "sender": pa.array([], pa.string()),
                         "target": pa.array([], pa.string())})
    keep = pc.is_in(comp.column("flow_id"), value_set=named.combine_chunks().cast(pa.int64()))
    small["comp_ids"] = comp.filter(keep)


# --- the ids of the set's final orders, bounded ------------------------------------------
FORGOTTEN = "order_ids_forgotten"
"""Anomaly code: a message of a later file that may name an order whose ids the
matcher state forgot (``IdBound``)."""


@dataclass(frozen=True, slots=True)
class IdBound:
    """How much of the set's final orders the state remembers the ids of (``ids``,
    ``fix_prev``): those placed ``horizon_ns`` or less before the set's last packet, and
    of them the newest ``max_rows`` (``Limits.resume_order_ids_s``,
    ``resume_order_ids``; the staged state's header holds them). Those ids serve a
    later message that names an earlier order: a cancel or amend naming only one of
    its ids (``combine.sql`` learns the other), a FIX report for its ClOrdID
    (``fix.sql``: else an orphan reply), an engine event (its engine leg), and the
    checks that send a command whole (``_check_ids``, ``_check_fix``). Without a bound
    they grew with the set's orders, for days.

    Forgetting keeps no trace of the ids (that would grow again): the state counts
    what it forgot by what it could have served (``forgot``: ``fix``, the FIX orders
    and orphan replies; ``accepted``, accepted new orders with both ids; ``engine``,
    orders still without an engine leg), and a later command flags every row that a
    forgotten order of that kind could have changed (``forgotten_refs``): a FIX
    orphan reply, a cancel or amend with one id of its order unknown, engine events
    no order took. Below the bound nothing is forgotten and no row changes."""

    horizon_ns: int
    max_rows: int

    @classmethod
    def of(cls, header: Mapping[str, Any]) -> IdBound:
        d = Limits()
        return cls(int(float(header.get("resume_order_ids_s", d.resume_order_ids_s)) * 10**9),
                   int(header.get("resume_order_ids", d.resume_order_ids)))

    def keep(self, ts: np.ndarray, since: int) -> np.ndarray:
        """Which rows (their times ``ts``; ``INF``: unknown, kept) are remembered."""
        keep = ts >= since
        n = int(np.count_nonzero(keep))
        if n > self.max_rows:
            idx = np.flatnonzero(keep)
            idx = idx[np.argsort(ts[idx], kind="stable")][: n - self.max_rows]
            keep[idx] = False
        return keep


_FORGOT = {"orders": 0, "fix": 0, "accepted": 0, "engine": 0, "before": -INF}


def _bound_ids(out: Path, run: _Run, prev: _Carried | None) -> dict[str, int]:
    """Add this command's ``ids`` and ``fix_prev`` (``save`` made them) to the set's
    (``IdParts``: a part each) within ``IdBound`` (``run.extra["id_bound"]``: the bound
    and the set's last packet) and write the new parts; returns what the set's state has
    forgotten so far (``IdBound``: counts by kind, ``before`` the newest time forgotten),
    kept in ``meta.json``."""
    new = {"ids": run.extra.pop("ids"), "fix_prev": run.extra.pop("fix_prev")}
    forgot = {**_FORGOT, **(prev.meta.get("forgot") or {} if prev is not None else {})}
    bound, last = run.extra.get("id_bound", (None, None))
    since = last - bound.horizon_ns if bound is not None and last is not None else None
    desc, kept = {}, []
    for name, ts_col in ID_TABLES:
        rows = new[name]
        was = prev.ids.get(name) if prev is not None else None
        if was is None:
            was = IdParts(name, [], [])
        drop = None
        if name == "ids" and prev is not None and rows.num_rows:
            # (an id is its action's alone, ``combine.sql``: a final order of the set is
            # made again only from messages carried, so its id is among the previous
            # command's ``finalized``; only those are looked for in the earlier parts)
            cid = rows.column("cid").combine_chunks()
            drop = cid.filter(pc.fill_null(pc.is_in(
                cid, value_set=prev.t["finalized"].column("cid").combine_chunks()), False))
        parts, gone = was.add(rows, drop, bound, since, ts_col)
        if gone.num_rows:
            g_ts = ns_or_inf(gone.column(ts_col))
            forgot["before"] = max(forgot["before"], int(g_ts.max()))
            if name == "fix_prev":
                forgot["fix"] += gone.num_rows
            else:
                forgot["orders"] += gone.num_rows
                accepted = pc.and_kleene(pc.equal(gone.column("kind"), "new"),
                                         pc.equal(gone.column("status"), "accepted"))
                accepted = pc.and_kleene(accepted, pc.and_kleene(
                    gone.column("exchange_order_id").is_valid(),
                    gone.column("client_order_id").is_valid()))
                forgot["accepted"] += int(pc.sum(pc.fill_null(accepted, False)).as_py() or 0)
                waits = pc.and_kleene(pc.fill_null(gone.column("decoded"), False),
                                      pc.invert(pc.fill_null(gone.column("has_engine"), False)))
                waits = pc.and_kleene(waits, pc.invert(pc.fill_null(
                    pc.equal(gone.column("status"), "rejected"), False)))
                forgot["engine"] += int(pc.sum(pc.fill_null(waits, False)).as_py() or 0)
        desc[name], k = parts.save(out)
        kept += k
        STATS[f"{name}_rows"] = sum(p.num_rows for p in parts.parts)
    (out / IDS_FILE).write_text(json.dumps(desc))
    STATS["ids_rows"] = STATS["ids_rows"] + STATS["fix_prev_rows"]
    STATS["forgot"] = forgot
    run.extra["ids_kept"] = kept  # (``keep_state_files``: the earlier parts stay)
    return forgot


def forgotten_refs(prev: _Carried, run: _Run, final: Mapping[str, pa.Table],
                   bound: IdBound, cut: int, *, events: bool = True) -> pa.Table | None:
    """``anomalies`` rows (``FORGOTTEN``) for the rows ``final`` (this command's final
    rows, or its provisional ones: then the flags are provisional too, made again by
    the next command) that an order whose ids the set's state forgot (``IdBound``)
    could have changed; with ``events``, for the engine events from the previous cut
    to this one that no order took. None when it forgot none, or none is flagged."""
    forgot = prev.meta.get("forgot") or {}
    if not any(int(forgot.get(k, 0)) for k in ("fix", "accepted", "engine")):
        return None
    import datetime as dt

    before = dt.datetime.fromtimestamp(int(forgot["before"]) / 1e9, dt.UTC)
    why = (f"the set's matcher state no longer knows the {int(forgot['orders'])} orders "
           f"placed up to {before:%Y-%m-%d %H:%M:%S} UTC (limits resume_order_ids_s="
           f"{bound.horizon_ns // 10**9}, resume_order_ids={bound.max_rows}): if it is one "
           "of theirs, one ingest of the set would match it; keep more with --limit "
           "resume_order_ids_s=N --limit resume_order_ids=N")
    rows: list[tuple[int, int, Direction, str]] = []
    g = run.groups
    assert g is not None
    if int(forgot.get("fix", 0)) and final["acks"].num_rows:
        orphans = g.column("cid").filter(g.column("orphan")).combine_chunks()
        a = final["acks"]
        a = a.filter(pc.and_(pc.fill_null(pc.equal(a.column("protocol"), "fix"), False),
                             _as_mask(_by_cid(a, orphans))))
        for r in _pylist(a, ["ts", "flow_id", "endpoint", "client_order_id"]):
            rows.append((r["ts"], int(r["flow_id"]), "in",
                         f"FIX {r['endpoint']} for ClOrdID {r['client_order_id']}: no order "
                         f"of the set carries it; {why}"))
    if int(forgot.get("accepted", 0)) and final["orders"].num_rows:
        o = final["orders"]
        one = pc.xor(o.column("orig_client_order_id").is_valid(),
                     o.column("target_order_id").is_valid())
        act = pc.is_in(o.column("kind"), value_set=pa.array(["cancel", "amend"]))
        o = o.filter(pc.fill_null(pc.and_(pc.and_(act, one), pc.not_equal(
            o.column("protocol"), "fix")), False))
        for r in _pylist(o, ["ts", "flow_id", "kind", "orig_client_order_id",
                             "target_order_id"]):
            named = (f"exchange order id {r['target_order_id']}" if r["target_order_id"]
                     else f"client order id {r['orig_client_order_id']}")
            rows.append((r["ts"], int(r["flow_id"]), "out",
                         f"{r['kind']} naming {named}: the order's other id is unknown; {why}"))
    con = run.con
    if events and int(forgot.get("engine", 0)) and con is not None:
        try:
            ev = con.execute(f"""
                SELECT min(e.ts), count(*), arg_min(e.flow_id, e.ts) FROM engine_events e
                WHERE e.event_kind IS NOT NULL AND e.ts >= {int(prev.meta["cut"])}
                  AND e.ts < {cut} AND NOT EXISTS (
                    SELECT 1 FROM engine_acks a WHERE a.flow_id = e.flow_id
                      AND a.stream_offset = e.stream_offset)""").fetchone()
        except duckdb.CatalogException:  # no engine stream: engine.sql not run
            ev = None
        if ev is not None and ev[1]:
            rows.append((int(ev[0]), int(ev[2]), "in",
                         f"{ev[1]} engine events named no order this command knows; {why}"))
    if not rows:
        return None
    from .ingest.packet_rows import anomaly_rows

    items = [Anomaly(ts=t, flow_id=f, direction=d, layer="match", code=FORGOTTEN, detail=x)
             for t, f, d, x in rows]
    return pa.table(anomaly_rows(items), schema=without_capture_id(TABLES["anomalies"]))


def _as_mask(a: np.ndarray) -> pa.Array:
    return pa.array(a, pa.bool_())


def _pylist(t: pa.Table, cols: list[str]) -> list[dict[str, Any]]:
    """``t``'s ``cols`` as dicts, its ``ts`` in int ns."""
    t = t.select(cols)
    return t.set_column(0, "ts", t.column("ts").cast(pa.int64())).to_pylist()


def drop_state(root: Path, capture_id: str) -> None:
    """``pcapflow match`` replaced the set's matcher rows: the next command of the set
    matches it whole."""
    shutil.rmtree(store.partition_dir(root, store.STATE, capture_id) / DIR, ignore_errors=True)


__all__ = ["DIR", "WHOLE", "Result", "drop_state", "match"]
