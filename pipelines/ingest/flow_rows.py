"""The ``flows`` table: rows of retired flows, their venues, written in batches.

How this works. The ``flows`` table is written as flows are retired, not at the end, so memory
follows the flows held, not the capture's total: after each chunk the tracker
hands over the flows it retired (ended a while ago, or evicted; see
``parsers.tcp.analysis``), the application layer hands over their columns (SNI,
ALPN, ...: ``AppLayer.retire``), and ``FlowRows`` writes their rows in batches.
With a matcher, a flow's ``venue`` is the matcher's answer, known only at the end.
So ``FlowRows`` keeps two side files in the staging directory (one pair per process
of a sharded ingest): flows with application-layer data (a detected protocol, an
SNI, a Host) go to the matcher with the message tables at the end; the others (the
many, in a capture of scans or of millions of tiny connections) have no messages,
so their venue depends on their server address alone (``match.ADDRESS_KEY``). At
the end the matcher names a venue per distinct address of theirs, once
(``Matcher.venues``), and their rows are read back in batches with it joined on,
before the final match (which derives tables from every staged flow).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...parsers.decode import IPPROTO_TCP, ip_to_str
from ...parsers.protocols.columns import ts_array
from ...parsers.tcp.analysis import END_REASONS
from .. import store
from ..tables.rows import with_venues
from ..tables.schemas import FLOWS, without_capture_id
from ..venue_rules import ADDRESS_KEY, ADDRESS_VENUES
from .resume import (
    OLD_PARTIAL,
    OLD_PLAIN,
    OLD_VENUES,
    TAIL_PREFIX,
    OldFlows,
    _app_mask,
    drop_carried,
    read_parts_rows,
)

if TYPE_CHECKING:
    from ..match import Matcher

# Rows of flows without application-layer data buffered, and read back, per batch.
FLOW_BATCH_ROWS = 1 << 16
APP_COLUMNS = ("app_protocol", "sni", "alpn", "alpn_offered", "tls_version", "tls_cipher",
               "tls_keylog", "http_host", "ws_path", "venue", "venue_source")
"""``flows`` columns the application layer (``AppLayer.retire``) and the matcher fill."""

FLOW_SCHEMA = without_capture_id(FLOWS)
_END_TEXT = np.array([END_REASONS[k] for k in range(len(END_REASONS))], dtype=object)


def _ip_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Text form of address column pairs, one ``ip_to_str`` per distinct address."""
    if hi.size == 0:
        return pa.array([], type=pa.string())
    pairs = np.stack([hi, lo], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    text = pa.array([ip_to_str(h, lo_) for h, lo_ in uniq], type=pa.string())
    return text.take(pa.array(inverse.reshape(-1).astype(np.int64)))


def _flow_rows(c: dict[str, np.ndarray], app: dict[int, dict[str, object]]) -> pa.Table:
    """``flows`` rows (venue NULL) for the tracker's columns of retired flows."""
    fids = c["flow_id"]
    rtt = c["handshake_rtt_ns"]
    cols: dict[str, object] = {
        "flow_id": pa.array(fids.astype(np.int64)),
        "transport": pa.array(np.where(c["proto"] == IPPROTO_TCP, "tcp", "udp").astype(object)),
        "ip_version": pa.array(c["ip_version"].astype(np.int8)),
        "client_ip": _ip_strings(c["a_hi"], c["a_lo"]),
        "client_port": pa.array(c["client_port"].astype(np.int32)),
        "server_ip": _ip_strings(c["b_hi"], c["b_lo"]),
        "server_port": pa.array(c["server_port"].astype(np.int32)),
        "vlan": pa.array(c["vlan"].astype(np.int32), mask=c["vlan"] < 0),
        "first_ts": ts_array(c["first_ts"]),
        "last_ts": ts_array(c["last_ts"]),
        "duration_ns": pa.array(c["last_ts"] - c["first_ts"]),
        "first_packet": pa.array(c["first_index"]),
        "syn_seen": pa.array(c["syn_seen"]),
        "end_reason": pa.array(_END_TEXT[c["end"]], type=pa.string()),
        "handshake_rtt_ns": pa.array(rtt, mask=rtt < 0),
    }
    for name in ("packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out",
                 "payload_bytes_in", "retransmissions", "out_of_order", "gaps", "duplicate_acks"):
        cols[name] = pa.array(c[name])
    # each flow's dict looked up once, and only the columns some flow has built (a
    # rotation's command retires every flow still held at its end: ~10^4 rows)
    infos = [app.get(i) for i in fids.tolist()] if app else []
    present: set[str] = set().union(*(d for d in infos if d))
    for name in APP_COLUMNS:
        if name in present:
            values = [d.get(name) if d is not None else None for d in infos]
            cols[name] = pa.array(values, type=pa.string())
        else:
            cols[name] = pa.nulls(fids.size, type=pa.string())
    return pa.table(cols, schema=FLOW_SCHEMA)


def _held(rows: pa.Table, held: np.ndarray | None) -> pa.Array:
    """Which of ``rows`` are of the flows ``held`` (a BooleanArray)."""
    ids = rows.column("flow_id").to_numpy()
    return pa.array(np.isin(ids, held) if held is not None and len(held)
                    else np.zeros(len(ids), bool))


def _app_first(old: OldFlows) -> tuple[OldFlows, int]:
    """``old`` with its rows of flows with application-layer data first (as
    ``_has_app_data`` tells them: an app_protocol but ``unknown``, or any of the
    other ``APP_COLUMNS`` but the venue's), and how many they are."""
    rows = old.rows.cast(FLOW_SCHEMA)
    app = pc.fill_null(pc.not_equal(rows.column("app_protocol"), "unknown"), False)
    for name in APP_COLUMNS:
        if name not in ("app_protocol", "venue", "venue_source"):
            app = pc.or_(app, pc.is_valid(rows.column(name)))
    mask = app.to_numpy(zero_copy_only=False)
    n = int(mask.sum())
    if n in (0, len(mask)) or mask[:n].all():  # (already in that order: no copy)
        return dataclasses.replace(old, rows=rows, n_app=n), n
    keep = pa.array(mask)
    return (dataclasses.replace(
        old, rows=pa.concat_tables([rows.filter(keep), rows.filter(pc.invert(keep))]),
        part=np.concatenate([old.part[mask], old.part[~mask]]),
        row=None if old.row is None else np.concatenate([old.row[mask], old.row[~mask]]),
        n_app=n), n)


def _has_app_data(info: dict[str, object]) -> bool:
    """Whether a flow may have message rows (the matcher needs it with them)."""
    return any(v is not None for k, v in info.items() if k != "app_protocol") or (
        info.get("app_protocol") not in (None, "unknown"))


class SideFiles(NamedTuple):
    """A worker's side files (``FlowRows.finish(final=False)``): its flows with
    application-layer data, and the others (None: no such flows)."""

    with_app: Path | None
    without_app: Path | None


def _addresses(parts: Sequence[Path]) -> pa.Table:
    """The distinct ``ADDRESS_KEY`` values of the flows in ``parts``."""
    seen: set[tuple[object, ...]] = set()
    for p in parts:
        for batch in pq.ParquetFile(p).iter_batches(FLOW_BATCH_ROWS, columns=list(ADDRESS_KEY)):
            # the batch's distinct keys by their columns' dictionary codes (not Arrow's
            # group_by: it imports pyarrow.acero and pyarrow.dataset, ~0.2 s of CPU)
            key = np.zeros(batch.num_rows, np.int64)
            for k in ADDRESS_KEY:
                codes = pc.dictionary_encode(batch.column(k), null_encoding="encode")
                key = key * (len(codes.dictionary) + 1) + codes.indices.to_numpy()
            first = np.unique(key, return_index=True)[1]
            distinct = batch.take(pa.array(first))
            seen.update(zip(*(distinct.column(k).to_pylist() for k in ADDRESS_KEY),
                            strict=True))
    keys = sorted(seen, key=lambda k: tuple((v is None, v) for v in k))
    schema = pa.schema([ADDRESS_VENUES.field(k) for k in ADDRESS_KEY])
    return pa.table([pa.array([k[i] for k in keys], schema.field(i).type)
                     for i in range(len(ADDRESS_KEY))], schema=schema)


def _key(t: pa.Table) -> pa.Array:
    """One string per row standing for its ``ADDRESS_KEY`` (NUL for a NULL protocol,
    which no protocol name holds)."""
    return pc.binary_join_element_wise(
        t.column("server_ip"), pc.cast(t.column("server_port"), pa.string()),
        pc.fill_null(t.column("app_protocol"), "\0"), "|")


def _with_address_venues(rows: pa.Table, venues: pa.Table) -> pa.Table:
    """``rows`` with the venue and its source of their address (a join on ``_key``)."""
    at = pc.index_in(_key(rows), value_set=_key(venues))
    for col in ("venue", "venue_source"):
        rows = rows.set_column(rows.schema.get_field_index(col), col,
                               venues.column(col).take(at))
    return rows


class FlowRows:
    """Writes the ``flows`` rows of retired flows (see the module docstring)."""

    def __init__(self, staging: store.Staging, matcher: Matcher | None) -> None:
        self.staging = staging
        self.matcher = matcher
        self.batch: list[pa.Table] = []
        self.batch_rows = 0
        self._with_app: pq.ParquetWriter | None = None
        self._without_app: pq.ParquetWriter | None = None
        worker = staging.part_prefix.rstrip("-")  # one pair of side files per process
        suffix = f"-{worker}.parquet" if worker else ".parquet"
        self._with_app_path = staging.dir / f"_flows_with_app_data{suffix}"
        self._ids: list[np.ndarray] = []
        # final parts written past the switch to provisional ones are named as the
        # ingest's other final parts (``part-f<k>-<n>``: this file's, in the set)
        self._final_prefix = staging.part_prefix
        self._without_app_path = staging.dir / f"_flows_without_app_data{suffix}"
        self.anomaly_codes: dict[str, int] = {}
        """Codes of the ``anomalies`` rows the matcher gave (``match_carry.IdBound``)."""
        self.anomalies_final = 0
        """... of them in final parts (a rotation's provisional ones are made again)."""

    def written(self) -> np.ndarray:
        """The ids of the flows given rows (``add``) so far."""
        return np.concatenate([np.empty(0, np.int64), *self._ids])

    def add(self, cols: dict[str, np.ndarray], app: dict[int, dict[str, object]]) -> None:
        self._ids.append(cols["flow_id"].astype(np.int64))
        rows = _flow_rows(cols, app)
        if self.matcher is None:
            self.staging.write("flows", rows)
            return
        # (of these rows' flows only: ``app`` may hold the columns of more, the flows a
        # rotation's command retires at its end whose rows the set holds already)
        later = {f for f in cols["flow_id"].tolist()
                 if (info := app.get(f)) is not None and _has_app_data(info)}
        if later:
            mask = pa.array(np.isin(cols["flow_id"], np.fromiter(later, np.int64, len(later))))
            if self._with_app is None:
                self._with_app = pq.ParquetWriter(self._with_app_path, FLOW_SCHEMA)
            self._with_app.write_table(rows.filter(mask))
            rows = rows.filter(pc.invert(mask))
        self.batch.append(rows)
        self.batch_rows += rows.num_rows
        if self.batch_rows >= FLOW_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """The buffered rows of flows without application-layer data to their side file."""
        if not self.batch:
            return
        rows = pa.concat_tables(self.batch)
        self.batch, self.batch_rows = [], 0
        if rows.num_rows:
            if self._without_app is None:
                self._without_app = pq.ParquetWriter(self._without_app_path, FLOW_SCHEMA)
            self._without_app.write_table(rows)

    def _close(self) -> SideFiles:
        self.flush()
        out = []
        for attr, path in (("_with_app", self._with_app_path),
                           ("_without_app", self._without_app_path)):
            writer = getattr(self, attr)
            if writer is not None:
                writer.close()
                setattr(self, attr, None)
            out.append(path if writer is not None else None)
        return SideFiles(*out)

    def finish(self, *, final: bool = True, more: Sequence[Path] = (),
               more_without_app: Sequence[Path] = (),
               capture_id: str | None = None, old: OldFlows | None = None,
               held: np.ndarray | None = None) -> SideFiles:
        """End of capture: venues of the flows without application-layer data, their
        rows, then the matcher's run over the message tables and the other flows.

        A worker process of a sharded ingest (``final=False``) leaves its flows in
        their side files and returns their paths; the parent passes those files as
        ``more`` (with application-layer data) and ``more_without_app``, joined with
        its own. ``capture_id`` goes to the matcher (which may derive tables:
        ``Matcher``).

        A rotation's command (``pipelines.ingest.resume``): ``held``, the flows still
        open at the file's end, whose rows are provisional (``part-t*``: made again
        by the next command); every other row is final. ``old``: the set's rows
        (``OldFlows``), given to the matcher after this file's; of them only the
        parts to rewrite, and those where a flow's venue changed, are written again.
        """
        if self.matcher is None:
            return SideFiles(None, None)
        mine = self._close()
        if not final:
            return mine
        parts = [p for p in (mine.with_app, *more) if p is not None]
        plain = [p for p in (mine.without_app, *more_without_app) if p is not None]
        split = held is not None and self.staging.part_prefix == TAIL_PREFIX
        later: list[pa.Table] = []  # (rows of held flows: provisional, written last)
        if plain:
            venues = self.matcher.venues(_addresses(plain))
            with self._final(split):
                for p in plain:
                    for batch in pq.ParquetFile(p).iter_batches(FLOW_BATCH_ROWS):
                        rows = _with_address_venues(
                            pa.Table.from_batches([batch], schema=FLOW_SCHEMA), venues)
                        if split:
                            now = _held(rows, held)
                            later.append(rows.filter(now))
                            rows = rows.filter(pc.invert(now))
                        self.staging.write("flows", rows)
        for rows in later:
            self.staging.write("flows", rows)
        # (ParquetFile, not pq.read_table: that imports pyarrow.dataset, ~0.2 s of CPU)
        rows = pa.concat_tables([FLOW_SCHEMA.empty_table(), *(
            pq.ParquetFile(p).read().cast(FLOW_SCHEMA) for p in parts)])
        n_new = rows.num_rows
        n_app = 0
        if old is not None:  # after this file's: ``venue_infer`` takes the first it meets
            # (the set's flows without application-layer data keep the venue of their
            # address, as when they were written: not the matcher's, as in one ingest;
            # the derived tables read them beside the staged ones: ``OLD_PLAIN``)
            old, n_app = _app_first(old)
            # (a scratch file the derive reads once, in this command: written plain, no
            # dictionaries or statistics, 3.7x faster than by default: 0.035 against
            # 0.128 s for the 114,370 rows of a 1-s rotation's 300th file, read 2x faster)
            pq.write_table(old.rows.slice(n_app), self.staging.dir / OLD_PLAIN,
                           compression="none", use_dictionary=False, write_statistics=False)
            if old.partial:  # (the others' rows, if the derive needs them: ``set_flows``)
                (self.staging.dir / OLD_PARTIAL).touch()
            # (the derive's check that no flow changed venue: only these can)
            pq.write_table(old.rows.slice(0, n_app).select(["flow_id", "venue"]),
                           self.staging.dir / OLD_VENUES)
            rows = pa.concat_tables([rows, old.rows.slice(0, n_app)]).combine_chunks()
        self.staging.close_writers()  # the matcher reads the staged message tables
        for p in (*parts, *plain):
            p.unlink()
        # The parsing is over: Arrow's allocator (the system's by default,
        # pcapflow/__init__.py; mimalloc or jemalloc if the user chose) still holds pages the
        # chunks' batches and the writer thread freed, and DuckDB (the matcher, the derived
        # tables) allocates its own on top, at the ingest's peak. Handing them back first
        # lowers what it starts from by ~45-90 MB in one process (the CLI's peak on a
        # 1M-packet TLS WebSocket capture: ~10-15 MB, as DuckDB's own pages dominate it).
        pa.default_memory_pool().release_unused()
        matched = self.matcher(self.staging.dir, rows, capture_id)
        venued = with_venues(rows, matched.flow_venue, matched.flow_venue_source)
        if old is not None:
            self._write_old(old, pa.concat_tables([venued.slice(n_new),
                                                   old.rows.slice(n_app)]))
            venued = venued.slice(0, n_new)
        if split:
            now = _held(venued, held)
            with self._final(True):
                self.staging.write("flows", venued.filter(pc.invert(now)))
            venued = venued.filter(now)
        self.staging.write("flows", venued)
        for table, out in matched.tables.items():
            self.staging.write(table, out)
        self._count(matched.tables.get("anomalies"))
        self._write_final(matched.final)
        return SideFiles(None, None)

    def _write_final(self, tables: dict[str, pa.Table]) -> None:
        """Rows final even when this file's end writes provisional parts (a rotation's
        derived rows that no later file can change: ``pcapflow.why_carry``): parts
        of their own, not ``part-t*``, which the next command of the set keeps."""
        if not tables:
            return
        self.anomalies_final += self._count(tables.get("anomalies"))
        with self._final(True):
            for table, out in tables.items():
                self.staging.write(table, out)

    def _count(self, rows: pa.Table | None) -> int:
        """Count the codes of the matcher's ``anomalies`` rows (``anomaly_codes``)."""
        if rows is None:
            return 0
        for code in rows.column("code").to_pylist():
            self.anomaly_codes[code] = self.anomaly_codes.get(code, 0) + 1
        return rows.num_rows

    def write_final(self, rows: pa.Table) -> None:
        """``flows`` rows written as final parts (``_write_final``)."""
        if rows.num_rows:
            self._write_final({"flows": rows})

    @contextlib.contextmanager
    def _final(self, on: bool) -> Iterator[None]:
        """While on, this ingest's writes go to final parts, even past the switch to
        provisional ones (``_write_final``)."""
        tail = self.staging.part_prefix
        if not on or tail != TAIL_PREFIX:
            yield
            return
        self.staging.close_writers()
        self.staging.part_prefix = self._final_prefix
        try:
            yield
        finally:
            self.staging.close_writers()
            self.staging.part_prefix = tail

    def _write_old(self, old: OldFlows, venued: pa.Table) -> None:
        """The set's ``flows`` rows written again (final): those of ``old.rewrite``'s
        parts, and of every part one of whose flows the matcher now gives another
        venue (that part goes in the commit: ``resume.drop_carried``)."""
        changed = np.zeros(venued.num_rows, bool)
        for col in ("venue", "venue_source"):
            now, was = venued.column(col), old.rows.column(col)
            same = pc.fill_null(pc.equal(now, was), False)
            same = pc.or_kleene(same, pc.and_(pc.is_null(now), pc.is_null(was)))
            changed |= ~same.to_numpy(zero_copy_only=False)
        moved = old.part_names(changed) - old.rewrite
        if moved:  # (drop_carried goes by the parts' names)
            drop_carried(self.staging.dir, "flows", [Path(n) for n in sorted(moved)])
        again = old.rewrite | moved
        if not again:
            return
        if not old.partial or not moved:
            self.write_final(venued.filter(pa.array(old.in_parts(again))))
            return
        # (read with the set's index: the rows of the moved parts without application-
        # layer data were not read; in the order a whole read gives, the application-layer
        # rows of the parts first, then the others part by part)
        assert old.n_app >= 0 and old.where is not None
        plain = old.rows.slice(old.n_app)
        code = old.part[old.n_app:]
        pieces = [venued.slice(0, old.n_app).filter(pa.array(old.in_parts(again)[:old.n_app]))]
        for name in sorted(again):
            if name in moved:
                root, capture_id = old.where
                rows = read_parts_rows(root, capture_id, [name]).cast(FLOW_SCHEMA)
                pieces.append(rows.filter(pa.array(~_app_mask(rows))))
            else:
                pieces.append(plain.filter(pa.array(code == old.names.index(name))))
        self.write_final(pa.concat_tables([p.cast(FLOW_SCHEMA) for p in pieces]))
