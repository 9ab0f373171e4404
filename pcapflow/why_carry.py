"""A rotation's derived tables, each command in O(its own file): what one command
carries to the next.

A rotation ingested one file per command (``pipelines.ingest.resume``) is one
capture that grows by a file per command. ``causes``, ``feed_gaps`` and ``alerts``
(``pcapflow.why``) were derived again over the whole set by every command, so the
n-th file cost O(n). Here each command derives only what its file can change, and
every row equals what one ingest of all the files gives.

How this works.

- *Cuts.* A command that keeps resume state knows the set's last packet ``T``.
  Rows a later file adds have times after ``C = T - SETTLE_NS`` (tcpdump's
  reordering, late ACKs of a segment, a message finished by a later packet),
  and after every time of this command's own provisional rows (``part-t*``,
  written again by the next command). Each derived row has a *settle* time
  (``alerts.find_rows``' ``_settle``): from then on no later row of input can
  change it (an episode's last event plus the gap that would join the next one,
  the next interval of a microburst, a cause's reply, a latency alert's order
  time). A row that settles before ``C`` is final: written as a final part, kept
  as it is by later commands (never rewritten); the others are provisional. Latency
  alerts use the order cut ``P <= C``: before the oldest order still waiting for
  its reply (at most ``PENDING_NS`` back), since a late reply adds a row at its
  order's time.
- *Carried rows.* The next command reads its own parts only, plus, kept with the
  set's resume state (``DATA/_state/capture_id=<id>/derive/``), the input rows of
  the last seconds before the cut (``lookback``) (and before any provisional alert's
  start; for the connections of orders still pending, their TCP events and RTT
  samples from their order time): TCP events and RTT samples, inbound TLS records
  and messages (narrow columns),
  the market-data rows (``feed.message_rows``), and one *anchor* per stream
  (the last row before that window: the previous message a feed gap, a stale
  feed, head-of-line blocking or a segment's byte count is measured against).
  The latency alerts carry the rank CUSUM's state per venue and endpoint
  (``alerts.CusumCarry``) at ``P`` and at the answered cut ``Q`` (``P`` but for the
  orders still without a reply: ``cusum_of``); ``p99_high`` re-reads the orders of
  the open bucket.
  Every detector is online (an interval is judged by what came before it;
  ``microburst``'s baseline is the trailing ``burst_baseline_s``), so the rows
  from this window on are the rows of the whole set.
- *Checked, else whole.* Before using what it carries, a command checks its
  premises: no row of its own files precedes the previous cut, the latency
  rows before the cuts are as many as then, every reply after the cut belongs
  to an order the carried rows cover, no flow changed venue. If one fails (a
  capture clock set back, a reply after ``PENDING_NS``, a venue learnt later, a
  state from an older pcapflow, ``pcapflow match`` run since), the command
  derives over the whole set as before and replaces the set's derived rows.
- A capture that keeps no state (not a rotation) has no cut: all rows final.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .alerts import CusumCarry, Settings
from .pipelines import bundle
from .pipelines.ingest.resume import (
    HELD,
    OLD_VENUES,
    STATE_FILE,
    StagedParts,
    drop_carried,
    read_header,
)
from .pipelines.match_carry import (
    INF,
    OMITTED_FLOWS,
    WINDOW_FILE,
    ack_rows,
    min_ns,
    no_row_before,
    ns_or_inf,
    stats_min_ns,
    window_key,
)
from .pipelines.store import STATE, partition_dir
from .pipelines.tables.schemas import TABLES, without_capture_id

if TYPE_CHECKING:
    import duckdb

SETTLE_NS = 2 * 10**9
"""Rows of a later file are this much after the set's last packet, at most."""
MARGIN_NS = 100_000_000
"""Input rows are kept this much further back than a window needs (``lookback``)."""
PENDING_NS = 300 * 10**9
"""Orders without a reply are waited for this long (their connections' rows kept)."""
VERSION = 3
"""Of what ``save`` writes: 3, its tables in one file (``STATE_TABLES``); 2, an Arrow IPC
file (lz4) each; 1, Parquet (no longer read: the command after one derives the set
whole, once)."""
DIR = "derive"
"""Sub-directory of a set's resume state: what ``carry`` keeps."""
STATE_TABLES = "state" + bundle.SUFFIX
"""In ``DIR``: the state's tables, one file (``pipelines.bundle``, uncompressed): as a
file each (lz4), writing, fsyncing and reading back its 12 tables cost ~13 ms a command
at 1M-packet files of answered orders, as one ~4 ms."""
DERIVED = ("causes", "feed_gaps", "alerts")
LATENCY_KINDS = ("latency_shift", "p99_high")

_EVENT_KINDS = ("retransmission", "fast_retransmission", "out_of_order", "gap",
                "duplicate_ack", "zero_window")
_MSG = ["flow_id", "direction", "stream_offset", "ts_first", "ts_last"]
_IN = pc.field("direction") == "in"
CARRY: dict[str, tuple[str, pc.Expression, list[str] | None]] = {
    "tcp_events": ("ts", pc.field("kind").isin(_EVENT_KINDS), None),
    "tcp_rtt": ("ts_ack", pc.field("method").is_null() | (pc.field("method") == "ack"),
                None),  # (TSecr rows: unread)
    "tls_records": ("ts_last", _IN & (pc.field("content_type") == 23),
                    ["flow_id", "direction", "content_type", "inner_content_type",
                     "ts_first", "ts_last"]),
    "ws_messages": ("ts_last", _IN, _MSG),
    "http_messages": ("ts_last", _IN, _MSG),
    "fix_messages": ("ts_last", _IN, _MSG),
}
"""Input tables whose recent rows are carried: (time column, which rows, columns).
Which rows: a filter as SQL's WHERE (a null drops the row), in pyarrow (a DuckDB
statement costs milliseconds, for rows already in memory)."""
CHECK = {"tcp_events": "ts", "tcp_rtt": "ts_sent", "tls_records": "ts_last",
         "ws_messages": "ts_last", "http_messages": "ts_last", "fix_messages": "ts_last"}
"""A later command's own rows must not precede the cut (else: derived whole)."""


def _read(files: list[Path], table: str, columns: list[str] | None = None,
          since: tuple[str, int] | None = None) -> pa.Table:
    """``table``'s rows in ``files`` (``columns`` only); ``since`` (column, ns): its row
    groups whose statistics say every time is older are not read (the rows a command
    keeps for the next are its last seconds: without this, keeping them read the whole
    file's part back, ~0.1 s at 6M-packet files and growing with the file)."""
    schema = without_capture_id(TABLES[table])
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    # (ParquetFile: ``pq.read_table`` goes through pyarrow.dataset, ~1 ms more a file,
    # and a command reads some thirty of them)
    parts = []
    for p in files:
        f = pq.ParquetFile(p)
        groups = None if since is None else _groups_since(f, *since)
        got = (f.read(columns=schema.names) if groups is None else
               f.read_row_groups(groups, columns=schema.names))
        parts.append(got.select(schema.names).cast(schema))
    return pa.concat_tables([schema.empty_table(), *parts])


def _groups_since(f: pq.ParquetFile, column: str, since: int) -> list[int] | None:
    """The row groups of ``f`` that may hold a ``column`` time (INT64 ns) from ``since``
    on (None: all of them, the file's statistics do not say)."""
    md = f.metadata
    if md.num_row_groups == 0:
        return None
    leaf = next((j for j in range(md.num_columns)
                 if md.row_group(0).column(j).path_in_schema == column), None)
    if leaf is None:
        return None
    keep = []
    for g in range(md.num_row_groups):
        chunk = md.row_group(g).column(leaf)
        stats = chunk.statistics
        if (chunk.physical_type != "INT64" or stats is None or not stats.has_min_max
                or stats.max_raw >= since):
            keep.append(g)
    return keep


@dataclass(slots=True)
class Carried:
    """What the previous command of the set kept (``DIR``)."""

    meta: dict[str, object]
    rows: dict[str, pa.Table]
    feed: pa.Table
    cusum: dict[tuple[object, object], dict[str, np.ndarray | int]]
    venues: pa.Table
    later: dict[tuple[object, object], dict[str, np.ndarray | int]] | None = None
    """``latency_shift``'s state at the answered cut ``Q`` (``alerts.CusumCarry``; None:
    not kept, a state of an earlier pcapflow)."""
    later_alarms: dict[tuple[object, object], list[tuple]] | None = None
    dack: pa.Table | None = None
    """``DACK`` (None: not kept)."""

    @classmethod
    def load(cls, path: Path) -> Carried | None:
        try:
            meta = json.loads((path / "meta.json").read_text())
            if meta.get("version") != VERSION:
                return None
            t = bundle.read(path / STATE_TABLES)
            out = cls(meta=meta, rows={n: t[n] for n in CARRY}, feed=t["feed"],
                      cusum=_cusum_load(t["cusum"]), venues=t["venues"], dack=t.get(DACK))
            if "qcut" in meta:
                out.later = _cusum_load(t["cusum_q"])
                out.later_alarms = _alarms_load(t["alarms_q"])
            return out
        except (OSError, ValueError, KeyError, pa.ArrowException):
            return None


def _cusum_load(t: pa.Table) -> dict[tuple[object, object], dict[str, np.ndarray | int]]:
    out: dict[tuple[object, object], dict[str, np.ndarray | int]] = {}
    for r in t.to_pylist():
        out[(r["venue"], r["endpoint"])] = {
            "st": np.array(r["st"], np.float64), "ref": np.array(r["ref"], np.float64),
            "base": int(r["base"]), "x": np.array(r["x"], np.float64),
            "t": np.array(r["t"], np.int64)}
    return out


def _cusum_table(series: dict[tuple[object, object], dict[str, np.ndarray | int]]) -> pa.Table:
    keys = sorted(series, key=lambda k: (str(k[0]), str(k[1])))
    return pa.table({
        "venue": pa.array([k[0] for k in keys], pa.string()),
        "endpoint": pa.array([k[1] for k in keys], pa.string()),
        "st": pa.array([series[k]["st"].tolist() for k in keys],  # type: ignore[union-attr]
                       pa.list_(pa.float64())),
        "ref": pa.array([series[k]["ref"].tolist() for k in keys],  # type: ignore[union-attr]
                        pa.list_(pa.float64())),
        "base": pa.array([int(series[k]["base"]) for k in keys], pa.int64()),
        "x": pa.array([series[k]["x"].tolist() for k in keys],  # type: ignore[union-attr]
                      pa.list_(pa.float64())),
        "t": pa.array([series[k]["t"].tolist() for k in keys],  # type: ignore[union-attr]
                      pa.list_(pa.int64()))})


_ALARM = pa.schema([("venue", pa.string()), ("endpoint", pa.string()), ("t0", pa.int64()),
                    ("t1", pa.int64()), ("direction", pa.int64()), ("ref", pa.float64()),
                    ("now", pa.float64()), ("n", pa.int64())])
"""``latency_shift``'s alarms of the orders from ``P`` to ``Q`` (``CusumCarry.later_alarms``):
per series, in the order found."""


def _alarms_table(alarms: dict[tuple[object, object], list[tuple]]) -> pa.Table:
    rows = [(*k, *a) for k in sorted(alarms, key=lambda k: (str(k[0]), str(k[1])))
            for a in alarms[k]]
    return pa.table([pa.array([r[i] for r in rows], f.type) for i, f in enumerate(_ALARM)],
                    schema=_ALARM)


def _alarms_load(t: pa.Table) -> dict[tuple[object, object], list[tuple]]:
    out: dict[tuple[object, object], list[tuple]] = {}
    for r in t.to_pylist():
        out.setdefault((r["venue"], r["endpoint"]), []).append(
            (r["t0"], r["t1"], r["direction"], r["ref"], r["now"], r["n"]))
    return out


def cusum_of(plan: Plan, latency: pa.Table | None, pcut: int, qcut: int
             ) -> CusumCarry:
    """``latency_shift``'s carry for this command: from the previous command's state at
    its order cut ``P``, or, when this command's ``P`` is that one, its ``Q`` not
    earlier, and the ack rows of orders from ``P`` to the previous ``Q`` as many as
    then (every one of them was answered before the previous cut: only a reply to an
    order that had none adds one), from its state at ``Q`` (``alerts.CusumCarry``)."""
    prev = plan.prev
    carry = CusumCarry(series=dict(prev.cusum) if prev else {},
                       since=int(prev.meta["pcut"]) if prev else None,  # type: ignore
                       until=pcut if plan.keep else None, at=qcut if plan.keep else None)
    if prev is None or prev.later is None or not plan.keep or carry.since != pcut:
        return carry
    q_prev = int(prev.meta["qcut"])  # type: ignore[call-overload]
    if qcut < q_prev or _acks_between(latency, pcut, q_prev, plan) != prev.meta["n_q"]:
        return carry
    carry.later, carry.later_alarms, carry.resume = dict(prev.later), prev.later_alarms, q_prev
    return carry


def p99_of(plan: Plan, latency: pa.Table | None, s: Settings
           ) -> tuple[int, list[dict[str, object]]] | None:
    """``p99_high``'s carried rows for this command (``alerts.p99_high``'s ``carried``):
    the previous command's rows of the buckets from its order cut ``P``'s to before its
    answered cut ``Q``'s, when the ack rows of those buckets are as they were (before
    ``P``: ``check``'s count; from ``P`` on: as many as then, as ``cusum_of``'s, since
    only a reply to an order that had none adds one) and the settings the same; else
    None (it reads every bucket from ``P``'s)."""
    prev = plan.prev
    got = prev.meta.get("p99") if prev is not None else None
    if not isinstance(got, dict) or got.get("settings") != _p99_settings(s):
        return None
    pcut, qb = int(got["pcut"]), int(got["qb"])
    if _acks_between(latency, pcut, qb, plan) != got["n"]:
        return None
    return qb, list(got["rows"])


def _p99_settings(s: Settings) -> list[object]:
    """What ``p99_high``'s rows depend on but its input (``p99_of``)."""
    return [float(s.bucket_s), float(s.p99_us), int(s.min_orders)]


def _p99_keep(plan: Plan, s: Settings, rows: list[dict[str, object]] | None,
              latency: pa.Table | None, pcut: int, qcut: int) -> dict[str, object] | None:
    """``meta["p99"]``: this command's ``p99_high`` rows of the buckets from ``pcut``'s to
    before ``qcut``'s, and the ack rows of orders from ``pcut`` to that bucket (``p99_of``);
    None: no such bucket, or the rows not given."""
    w = max(int(s.bucket_s * 1e9), 1)
    pb, qb = pcut // w * w, qcut // w * w
    if rows is None or qcut >= INF or qb <= pb:
        return None
    keep = [r for r in rows if r.get("kind") == "p99_high"
            and pb <= int(r["start_ts"]) and int(r["end_ts"]) < qb]  # type: ignore[call-overload]
    return {"settings": _p99_settings(s), "pcut": pcut, "qb": qb,
            "n": _acks_between(latency, pcut, qb, plan), "rows": keep}


def _acks_between(latency: pa.Table | None, lo: int, hi: int, plan: Plan | None = None
                  ) -> int:
    """``latency``'s ack legs with a latency of orders from ``lo`` to before ``hi``
    (``plan``: their order times kept on it for the command's other counts of the same
    rows, ``Plan.acks``: each took ~2 ms over a resumed command's window, four a
    command)."""
    if latency is None or latency.num_rows == 0 or hi <= lo:
        return 0
    if plan is not None and plan.acks is not None and plan.acks[0] is latency:
        o = plan.acks[1]
    else:
        o = ns_or_inf(latency.column("order_ts"))[ack_rows(latency)]
        if plan is not None:
            plan.acks = (latency, o)
    return int(np.count_nonzero((o >= lo) & (o < hi)))


@dataclass(slots=True)
class Plan:
    """One command's derive: which rows it reads, its cuts and the previous ones."""

    stage_dir: Path
    capture_id: str
    parts: StagedParts
    keep: bool
    last: int | None
    held: np.ndarray
    prev: Carried | None = None
    why_whole: str | None = None
    """Why this command derives over the whole set (None: it does not)."""
    window: dict[str, object] | None = None
    """The set's earlier matcher rows the derive is not given (``match_carry.Window``:
    ``since``, ``omitted``, ``omitted_ack``); None: it is given them all."""
    omitted_flows: np.ndarray | None = None
    """The connections of those rows."""
    omitted: dict[str, pa.Table] | None = None
    """Those rows, read from the set's parts (``whole``: derived over the whole set)."""
    pending: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    """``_pending`` at the cut ``cuts`` found (cut, result): ``save`` reads it again."""
    acks: tuple[pa.Table, np.ndarray] | None = None
    """``_acks_between``'s (a ``latency`` table, the order times of its ack rows)."""

    @property
    def state_dir(self) -> Path:
        return partition_dir(self.stage_dir.parent.parent, STATE, self.capture_id) / DIR

    @classmethod
    def of(cls, stage_dir: Path, capture_id: str) -> Plan:
        parts = StagedParts.of(stage_dir)
        state = stage_dir / STATE / STATE_FILE
        keep = state.is_file()
        last = int(read_header(state)["last_key"]) if keep else None
        held_file = stage_dir / STATE / HELD
        held = np.load(held_file) if held_file.is_file() else np.empty(0, np.int64)
        plan = cls(stage_dir, capture_id, parts, keep, last, held)
        if (stage_dir / WINDOW_FILE).is_file():
            plan.window = json.loads((stage_dir / WINDOW_FILE).read_text())
            plan.omitted_flows = pq.ParquetFile(stage_dir / OMITTED_FLOWS).read().column(
                "flow_id").to_numpy().astype(np.int64)
        if parts.resumed:
            path = plan.state_dir
            plan.prev = Carried.load(path) if path.is_dir() else None
            if plan.prev is None:
                plan.why_whole = "no derive state kept by the previous command"
        return plan


def check(plan: Plan, latency: pa.Table | None, flows: pa.Table) -> str | None:
    """Why the carried rows cannot be used (None: they can)."""
    prev = plan.prev
    assert prev is not None
    cut, pcut = int(prev.meta["cut"]), int(prev.meta["pcut"])  # type: ignore[call-overload]
    for t, col in CHECK.items():
        if no_row_before(plan.parts.fresh(t), col, cut):  # (the parts' statistics)
            continue
        fresh = _only_read(_read(plan.parts.fresh(t), t, [col, *_ALSO.get(t, [])]), t)
        if min_ns(fresh, col) < cut:
            return f"{t} rows before the previous cut"
    n_p, n_c = 0, 0  # (the rows not given: every one before both cuts, ``_window_ok``)
    if plan.window is not None:
        why = _window_ok(plan, prev, _cut(plan))
        if why is not None:
            return why
        n_p, n_c = _omitted_counts(plan)
    if int(prev.meta["n_p"]) < 0:  # type: ignore[call-overload]
        return "latency rows before the cuts not counted"
    if (latency is not None and latency.num_rows) or n_c:
        latency = latency if latency is not None else without_capture_id(
            TABLES["latency"]).empty_table()
        o, a = ns_or_inf(latency.column("order_ts")), ns_or_inf(latency.column("ack_ts"))
        a = np.where(a == INF, o, a)
        ack = ack_rows(latency)
        if n_p + int(np.count_nonzero(ack & (o < pcut))) != prev.meta["n_p"]:
            return "latency rows before the order cut changed"
        if n_c + int(np.count_nonzero(a < cut)) != prev.meta["n_c"]:
            return "latency rows before the cut changed"
        later = a >= cut
        k, k2 = int(prev.meta["k"]), int(prev.meta["k2"])  # type: ignore[call-overload]
        early = later & (o < k)
        if early.any():
            pend = np.asarray(prev.meta["pending_flows"], np.int64)
            fl = latency.column("flow_id").to_numpy(zero_copy_only=False)
            af = pc.fill_null(latency.column("ack_flow_id"), latency.column("flow_id")).to_numpy(
                zero_copy_only=False)
            ok = np.isin(fl, pend) & np.isin(af, pend) & (o >= k2)
            if (early & ~ok).any():
                return "a reply to an order older than the carried rows"
    # a venue learnt later changes the rows of earlier files: the venues of the flows
    # whose rows the previous command wrote provisionally (``save``), and of the set's
    # other flows as their rows stand (``resume.OLD_VENUES``)
    stored = plan.stage_dir / OLD_VENUES
    for was in (prev.venues, pq.ParquetFile(stored).read() if stored.is_file() else None):
        if was is not None and was.num_rows and _renamed(was, flows):
            return "a flow changed venue"
    return None


def _window_ok(plan: Plan, prev: Carried, cut: int) -> str | None:
    """Whether the matcher rows the derive is not given (``plan.window``) are older
    than all it reads: the causes of replies from the previous cut on, the latency
    alerts of orders from the previous order cut on (``p99_high``: from its bucket's
    start), the orders pending at this command's cut, those without a reply of the
    last ``PENDING_NS``."""
    from . import alerts, why

    assert plan.window is not None
    since = int(plan.window["since"])  # type: ignore[call-overload]
    w = max(int((why.SETTINGS or alerts.Settings()).bucket_s * 10**9), 1)
    pcut = int(prev.meta["pcut"])  # type: ignore[call-overload]
    reads = min(int(prev.meta["cut"]), pcut // w * w, cut,  # type: ignore[call-overload]
                (plan.last if plan.last is not None else INF) - PENDING_NS)
    if since > reads:
        return "matcher rows the derive reads are older than the carried window"
    return None


def _omitted_counts(plan: Plan) -> tuple[int, int]:
    """(ack legs with a latency, rows) of the ``latency`` rows the derive is not given."""
    if plan.window is None:
        return 0, 0
    omitted = plan.window["omitted"]
    assert isinstance(omitted, dict)
    return int(plan.window["omitted_ack"]), int(omitted.get("latency", 0))  # type: ignore


def _renamed(was: pa.Table, flows: pa.Table) -> bool:
    """Whether a flow of ``was`` (flow_id, venue) has another venue in ``flows``."""
    at = pc.index_in(was.column("flow_id"), value_set=flows.column("flow_id"))
    now = flows.column("venue").take(at)
    before = was.column("venue")
    same = pc.or_kleene(pc.is_null(at), pc.fill_null(pc.equal(now, before), False))
    same = pc.or_kleene(same, pc.and_(pc.is_null(now), pc.is_null(before)))
    return not pc.all(same).as_py()


WHOLE: list[str] = []
"""Why commands of this process derived a set whole (the tests read it)."""


_ALSO = {"tcp_rtt": ["method"]}


def _only_read(rows: pa.Table, table: str) -> pa.Table:
    """The rows of ``table`` the derive reads (RTT samples: those from ACKs)."""
    if table == "tcp_rtt" and rows.num_rows:
        return rows.filter(pc.fill_null(pc.equal(rows.column("method"), "ack"), True))
    return rows


def whole(plan: Plan, why: str) -> None:
    """Derive over the whole set: the set's earlier derived rows go (all made again)."""
    plan.why_whole = why
    WHOLE.append(why)
    plan.prev = None
    for t in DERIVED:  # (in the dataset: they go in this command's commit)
        drop_carried(plan.stage_dir, t, plan.parts.old.get(t, []))
        plan.parts.old[t] = []
    if plan.window is not None:  # the matcher rows it was not given: from the parts
        since = int(plan.window["since"])  # type: ignore[call-overload]
        plan.omitted = {}
        for t in ("orders", "acks", "latency", "unmatched"):
            rows = _read(plan.parts.old.get(t, []), t)
            plan.omitted[t] = rows.filter(pa.array(window_key(t, rows) < since))


def flows_of(plan: Plan, flows: pa.Table) -> pa.Table:
    """The ``flows`` rows of the connections whose rows this command reads (its own
    parts', the carried rows', those still open), not the whole set's."""
    keep = flow_ids_of(plan)
    return flows.filter(pc.is_in(flows.column("flow_id"), pa.array(keep, pa.int64())))


def flow_ids_of(plan: Plan) -> np.ndarray:
    """The ids of ``flows_of``'s connections (sorted, distinct)."""
    def distinct(col: pa.ChunkedArray) -> np.ndarray:  # (hashed: the file's rows are many)
        return pc.drop_null(pc.unique(col)).to_numpy(zero_copy_only=False)

    ids = [plan.held]
    # (``anomalies``: the flows of every event kind, the view's; ``tcp_events`` is in
    # ``CARRY``, read whole: its parts are the largest, read once)
    for t in (*CARRY, "anomalies"):
        ids.append(distinct(_read(plan.parts.fresh(t), t, ["flow_id"]).column("flow_id")))
        if t in CARRY and plan.prev is not None and plan.prev.rows[t].num_rows:
            ids.append(distinct(plan.prev.rows[t].column("flow_id")))
    if plan.prev is not None and plan.prev.feed.num_rows:
        ids.append(distinct(plan.prev.feed.column("flow_id")))
    return np.unique(np.concatenate([np.asarray(i, np.int64) for i in ids]))


def view_inputs(plan: Plan) -> tuple[dict[str, list[Path]], dict[str, pa.Table]]:
    """The files and the carried rows the derive's view reads."""
    if plan.prev is None:  # whole: every staged part (and the matcher's rows not given)
        files = {t: [*plan.parts.old.get(t, []), *plan.parts.fresh(t)] for t in TABLES}
        return files, {t: r for t, r in (plan.omitted or {}).items() if r.num_rows}
    files = {t: plan.parts.fresh(t) for t in TABLES}
    return files, {t: r for t, r in plan.prev.rows.items() if r.num_rows}


def cuts(plan: Plan, view: object, latency: pa.Table | None,
         unmatched: pa.Table | None) -> tuple[int, int, int]:
    """This command's cut ``C``, order cut ``P`` and answered cut ``Q`` (``INF``: no
    later file). ``Q``: ``P`` but for the orders still without a reply, before the
    oldest order a reply after ``C`` answers (``latency_shift``'s second state: an
    order never answered holds ``P`` back ``PENDING_NS``, not ``Q``)."""
    cut = _cut(plan)
    if cut == INF:
        return INF, INF, INF
    pcut = qcut = cut
    plan.pending = (cut, _pending(plan, latency, unmatched, cut))
    times, _, late = plan.pending[1]
    for o in times:
        pcut = min(pcut, int(o))
    for o in late:
        qcut = min(qcut, int(o))
    return cut, pcut, qcut


def _cut(plan: Plan) -> int:
    """This command's cut ``C`` (``INF``: no later file)."""
    if not plan.keep or plan.last is None:
        return INF
    cut = plan.last - SETTLE_NS
    for t, col in CHECK.items():
        low = None if t in _ALSO else stats_min_ns(plan.parts.tail.get(t, []), col)
        if low is not None:  # (exact: no row of it filtered out, ``_only_read``)
            cut = min(cut, low)
            continue
        tail = _only_read(_read(plan.parts.tail.get(t, []), t, [col, *_ALSO.get(t, [])]), t)
        cut = min(cut, min_ns(tail, col))
    return cut


def _given(plan: Plan, table: str, rows: pa.Table | None) -> pa.Table | None:
    """``rows`` of a matcher table and, derived over the whole set, its rows the
    derive was not given (``Plan.omitted``)."""
    more = (plan.omitted or {}).get(table)
    if more is None or more.num_rows == 0:
        return rows
    if rows is None:
        return more
    return pa.concat_tables([more.cast(rows.schema), rows])


def _pending(plan: Plan, latency: pa.Table | None, unmatched: pa.Table | None,
             cut: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order times and flows of the orders whose rows a later command may still
    change: replies after the cut, orders without one (of the last ``PENDING_NS``);
    and the order times of the former only."""
    latency, unmatched = _given(plan, "latency", latency), _given(plan, "unmatched", unmatched)
    times, flows = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    answered = times[0]
    if latency is not None and latency.num_rows:
        o, a = ns_or_inf(latency.column("order_ts")), ns_or_inf(latency.column("ack_ts"))
        late = np.where(a == INF, o, a) >= cut
        answered = o[late]
        times.append(answered)
        flows.append(latency.column("flow_id").to_numpy(zero_copy_only=False)[late])
        af = pc.fill_null(latency.column("ack_flow_id"), latency.column("flow_id"))
        flows.append(af.to_numpy(zero_copy_only=False)[late])
    if unmatched is not None and unmatched.num_rows and plan.last is not None:
        ts = ns_or_inf(unmatched.column("ts"))
        what = pc.fill_null(pc.equal(unmatched.column("what"), "order"), False).to_numpy(
            zero_copy_only=False)
        wait = what & (ts >= plan.last - PENDING_NS) & (ts < INF)
        times.append(ts[wait])
        flows.append(unmatched.column("flow_id").to_numpy(zero_copy_only=False)[wait])
    return np.concatenate(times), np.unique(np.concatenate(flows).astype(np.int64)), answered


def split(rows: pa.Table, settle: np.ndarray, before: int | None, cut: int
          ) -> tuple[pa.Table, pa.Table]:
    """``rows`` (with their settle times) not made by an earlier command (settled
    before its cut ``before``), as (final, provisional) at this command's ``cut``."""
    mine = settle >= (before if before is not None else -INF)
    fin = mine & (settle < cut)
    return rows.filter(pa.array(fin)), rows.filter(pa.array(mine & ~fin))


def lookback(s: Settings, table: str) -> int:
    """How far before the cut (or an open alert) the carried rows of ``table`` reach:
    TCP events, a storm's second and the one before and twice the episode gap; RTT
    samples, the microburst baseline and two intervals; market data, twice the
    episode gap; inbound messages and records (causes), ``MARGIN_NS`` (the orders
    answered later keep their TCP events and RTT samples: ``_pending``, ``save``)."""
    more = {"tcp_rtt": s.burst_baseline_s + 2 * s.burst_window_us / 1e6,
            "tcp_events": 2.0 + 2 * s.episode_gap_s,
            "feed": 2 * s.episode_gap_s}.get(table, 0.0)
    return MARGIN_NS + int(more * 1e9)


READ_BY = {"tcp_events": ("retransmission_storm", "zero_window"),
           "tcp_rtt": ("microburst",), "feed": ("feed_gap", "stale_feed")}
"""The carried inputs each kind of alert found over a window reads (the latency alerts:
their own state; ``clock_step``: ``tail_steps``). A provisional alert is found again by
the next command from its start: the inputs it reads are kept from there (``edge``),
the others from the cut only (an open storm held the market data and RTT samples back
with it: at 1M-packet files of answered traffic, a whole file's market data). A kind
not named here holds every input back."""


def edge(table: str, cut: int, open_starts: dict[str, int]) -> int:
    """Where the carried rows of ``table`` (``CARRY``'s, or ``feed``) reach back to
    before their lookback: the cut, or the start of a provisional alert of a kind
    that reads them (``READ_BY``; ``open_starts``: per kind, its oldest one's)."""
    named = {k for kinds in READ_BY.values() for k in kinds}
    reads = READ_BY.get(table, ())
    return min([cut, *(t for k, t in open_starts.items() if k in reads or k not in named)])


def save(plan: Plan, con: duckdb.DuckDBPyConnection, s: Settings, at: tuple[int, int, int],
         open_starts: dict[str, int], latency: pa.Table | None, unmatched: pa.Table | None,
         feed_rows: pa.Table, cusum: CusumCarry, flows: pa.Table,
         p99_rows: list[dict[str, object]] | None = None) -> None:
    """Write what the next command of the set carries (``DIR`` in the staged state);
    ``con``: the derive's DuckDB connection (a new one costs a tenth of a second);
    ``at``: the cuts (``cuts``); ``open_starts``: per kind of alert, the start of its
    oldest provisional one (``edge``); ``p99_rows``: this command's ``p99_high`` rows
    (``p99_of``; None: not kept)."""
    cut, pcut, qcut = at
    out = plan.stage_dir / STATE / DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # every table's rows reach at least this far back (the causes' messages and
    # records, read by no alert, the least: ``edge``)
    k = edge("ws_messages", cut, open_starts) - MARGIN_NS
    times, pend, _ = (plan.pending[1] if plan.pending is not None and plan.pending[0] == cut
                      else _pending(plan, latency, unmatched, cut))
    k2 = min(k, int(times.min())) if len(times) else k
    held = pa.table({"flow_id": pa.array(plan.held, pa.int64())})
    con.register("held", held)
    con.register("pend", pa.table({"flow_id": pa.array(pend, pa.int64())}))
    ordered = _order_flows(plan, latency, unmatched)
    con.register("ordered", pa.table({"flow_id": ordered}))
    tables: dict[str, pa.Table] = {}  # (``STATE_TABLES``: written once, at the end)
    for t, (col, where, columns) in CARRY.items():
        kt = edge(t, cut, open_starts) - lookback(s, t)
        # the connections of pending orders from the oldest order's time on: what
        # ``causes`` reads of an order's window (o, a]. Of the inbound messages and
        # records it reads the reply's, after the cut, and the message before it (the
        # anchor), so those are kept from ``kt`` as any connection's; of the RTT samples
        # those a delayed ACK can be (``causes.delayed_ack_candidates``), kept apart
        # (``DACK``: the microbursts read the rest from ``kt`` on): an order never
        # answered does not hold its connection's messages and samples ``PENDING_NS``
        # back, only its TCP events (few)
        kp = min(k2, kt) if t == "tcp_events" else kt
        sel = (f"(epoch_ns({col}) >= {kt} OR (epoch_ns({col}) >= {kp} AND flow_id IN "
               "(SELECT flow_id FROM pend)))")
        if t in CAUSES_ONLY:  # (a market-data connection's messages: its feed rows)
            sel = f"({sel} AND flow_id IN (SELECT flow_id FROM ordered))"
        if t == "tcp_rtt":  # per connection and direction, the last segment before
            anchor = ("SELECT * FROM r WHERE NOT " + sel + " QUALIFY row_number() OVER ("
                      "PARTITION BY flow_id, direction ORDER BY end_offset DESC) = 1")
        elif t.endswith("_messages"):  # per connection, the last message before
            anchor = ("SELECT * FROM r WHERE NOT " + sel + " QUALIFY row_number() OVER ("
                      "PARTITION BY flow_id ORDER BY stream_offset DESC) = 1")
        else:
            anchor = None
        # without an anchor (a connection's last row before, however old) only the rows
        # ``sel`` keeps are read: none older than ``kp``
        rows = _final_rows(plan, t, columns, where,
                           None if anchor is not None else (col, kp))
        con.register("r", rows)
        if rows.num_rows == 0:
            kept = rows
        elif anchor is None:  # (``sel`` in pyarrow: a DuckDB statement costs ~5 ms)
            kept = rows.filter(_sel(rows, col, kt, kp, pend,
                                    ordered if t in CAUSES_ONLY else None))
        else:
            near = ("(flow_id IN (SELECT flow_id FROM held) OR flow_id IN "
                    f"(SELECT flow_id FROM r WHERE {sel}))")
            # (the anchors first: older than the rows ``sel`` keeps, read in time order:
            # ``Dataset.of_capture``'s ``extra``)
            kept = con.sql(f"SELECT * FROM ({anchor}) WHERE {near} UNION ALL "
                           f"SELECT * FROM r WHERE {sel}").to_arrow_table()
        con.unregister("r")
        tables[t] = kept
        if t == "tcp_rtt":
            tables[DACK] = _dack(plan, rows, kept, col, min(k2, kt), kt, pend)
    con.register("f", feed_rows)
    kf = edge("feed", cut, open_starts) - lookback(s, "feed")
    near = ("(flow_id IN (SELECT flow_id FROM held) OR flow_id IN "
            f"(SELECT flow_id FROM f WHERE ts >= {kf}))")
    part = "PARTITION BY capture_id, flow_id, rule, stream"
    feed_kept = con.sql(f"""
        SELECT * FROM f WHERE ts >= {kf}
        UNION ALL
        SELECT * FROM (SELECT * FROM f WHERE ts < {kf} QUALIFY
            row_number() OVER ({part} ORDER BY stream_offset DESC, ts DESC) = 1
            OR row_number() OVER ({part} ORDER BY ts DESC, stream_offset DESC) = 1)
        WHERE {near}""").to_arrow_table()
    tables["feed"] = feed_kept
    tables["cusum"] = _cusum_table(cusum.series)
    if cusum.later is not None and cusum.later_alarms is not None:
        tables["cusum_q"] = _cusum_table(cusum.later)
        tables["alarms_q"] = _alarms_table(cusum.later_alarms)
    # the venues of the flows whose rows are provisional (the others' are in their rows)
    venues = flows.select(["flow_id", "venue"])
    tables["venues"] = venues.filter(pc.is_in(venues.column("flow_id"),
                                              pa.array(plan.held, pa.int64())))
    bundle.write(out / STATE_TABLES, tables)
    n_p = n_c = 0
    latency = _given(plan, "latency", latency)
    if plan.omitted is None and plan.window is not None:  # (rows not given: counted)
        n_p, n_c = _omitted_counts(plan)
        if min(cut, pcut) < int(plan.window["since"]):  # type: ignore[call-overload]
            n_p = n_c = -1  # (not known: the next command derives the set whole)
    if latency is not None and latency.num_rows and n_p >= 0:
        o, a = ns_or_inf(latency.column("order_ts")), ns_or_inf(latency.column("ack_ts"))
        a = np.where(a == INF, o, a)
        ack = ack_rows(latency)
        n_p += int(np.count_nonzero(ack & (o < pcut)))
        n_c += int(np.count_nonzero(a < cut))
    meta = {"version": VERSION, "cut": cut, "pcut": pcut, "k": k, "k2": k2,
            "pending_flows": [int(f) for f in pend], "n_p": n_p, "n_c": n_c}
    if cusum.later is not None:
        meta |= {"qcut": qcut, "n_q": _acks_between(latency, pcut, qcut, plan)}
    p99 = _p99_keep(plan, s, p99_rows, latency, pcut, qcut) if n_p >= 0 else None
    if p99 is not None:
        meta["p99"] = p99
    (out / "meta.json").write_text(json.dumps(meta))
    for name in ("held", "pend", "f", "ordered"):
        con.unregister(name)


def _sel(rows: pa.Table, col: str, kt: int, k2: int, pend: np.ndarray,
         ordered: pa.Array | None) -> pa.Array:
    """``save``'s ``sel`` over ``rows``: ``col`` from ``kt`` on, or from ``k2`` on for the
    connections of pending orders (``pend``); with ``ordered``, of those connections
    only (a null time: not kept, as SQL's WHERE)."""
    ts = rows.column(col).cast(pa.int64())
    flow = rows.column("flow_id")
    keep = pc.or_kleene(pc.greater_equal(ts, kt), pc.and_kleene(
        pc.greater_equal(ts, k2), pc.is_in(flow, value_set=pa.array(pend, pa.int64()))))
    if ordered is not None:
        keep = pc.and_kleene(keep, pc.is_in(flow, value_set=ordered))
    return pc.fill_null(keep, False)


DACK = "tcp_rtt_dack"
"""In the derive's state: the RTT samples of pending orders' connections, from the
oldest such order to the carried window of ``tcp_rtt``, that ``causes``' delayed ACK can
read (``Carried.dack``)."""


def _dack(plan: Plan, rows: pa.Table, kept: pa.Table, col: str, k2: int, kt: int,
          pend: np.ndarray) -> pa.Table:
    """``DACK``'s rows for the next command: of the previous command's and ``rows``
    (``tcp_rtt``'s carried and final rows), the samples ``causes`` can read as a delayed
    ACK, of the connections ``pend`` and times from ``k2`` to before ``kt``, but the
    anchors ``kept`` (``tcp_rtt``'s carried rows) holds (a segment's sample, by its
    connection, direction and end offset: ``causes`` reads both tables)."""
    from .causes import DACK_COLUMNS, delayed_ack_candidates

    cols = [*DACK_COLUMNS, "end_offset"]
    rows = rows.select(cols)
    if plan.prev is not None and plan.prev.dack is not None and plan.prev.dack.num_rows:
        rows = pa.concat_tables([plan.prev.dack.select(cols).cast(rows.schema), rows])
    if rows.num_rows == 0 or len(pend) == 0:
        return rows.slice(0, 0)
    ts = rows.column(col).cast(pa.int64())
    keep = pc.and_kleene(pc.and_kleene(pc.greater_equal(ts, k2), pc.less(ts, kt)),
                         pc.is_in(rows.column("flow_id"), value_set=pa.array(pend, pa.int64())))
    rows = rows.filter(pc.fill_null(keep, False))
    rows = rows.filter(delayed_ack_candidates(rows)) if rows.num_rows else rows
    if rows.num_rows and kept.num_rows:
        key = ["flow_id", "direction", "end_offset"]
        anchors = kept.filter(pc.fill_null(pc.less(kept.column(col).cast(pa.int64()), kt),
                                           False)).select(key)
        if anchors.num_rows:
            rows = rows.join(anchors, key, join_type="left anti").select(cols)
    return rows


CAUSES_ONLY = ("tls_records", "ws_messages", "http_messages", "fix_messages")
"""Carried for the causes only: rows of the connections that carry orders or replies."""


def _order_flows(plan: Plan, latency: pa.Table | None, unmatched: pa.Table | None
                 ) -> pa.Array:
    """The connections of the set's orders and replies (those of the matcher rows the
    derive was not given: ``Plan.omitted_flows``)."""
    # (``match_carry.order_flows``' ids, each column's distinct ones hashed first: a
    # resumed command's window holds minutes of rows, ~0.01 s to sort)
    ids = [np.empty(0, np.int64)]
    for t, cols in ((_given(plan, "latency", latency), ("flow_id", "ack_flow_id")),
                    (_given(plan, "unmatched", unmatched), ("flow_id",))):
        if t is not None and t.num_rows:
            ids += [pc.unique(pc.drop_null(t.column(c))).to_numpy().astype(np.int64)
                    for c in cols]
    if plan.omitted_flows is not None:
        ids.append(plan.omitted_flows)
    return pa.array(np.unique(np.concatenate(ids)), pa.int64())


def _final_rows(plan: Plan, table: str, columns: list[str] | None,
                where: pc.Expression, since: tuple[str, int] | None = None) -> pa.Table:
    """The previous command's carried rows and this command's final rows of ``table``
    (``since``: see ``_read``; the carried rows are all kept)."""
    rows = _read(plan.parts.new.get(table, []) if plan.prev is not None else
                 [*plan.parts.old.get(table, []), *plan.parts.new.get(table, [])],
                 table, columns, since)
    if rows.num_rows:
        rows = rows.filter(where)
    if plan.prev is not None and plan.prev.rows[table].num_rows:
        rows = pa.concat_tables([plan.prev.rows[table].cast(rows.schema), rows])
    return rows


def tail_keys(plan: Plan) -> pa.Table:
    """(flow_id, stream_offset) of this command's provisional inbound messages."""
    parts = [_read(plan.parts.tail.get(t, []), t, ["flow_id", "direction", "stream_offset"])
             for t in ("ws_messages", "fix_messages")]
    t = pa.concat_tables(parts)
    t = t.filter(pc.fill_null(pc.equal(t.column("direction"), "in"), False))
    return t.select(["flow_id", "stream_offset"])
