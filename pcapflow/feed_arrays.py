"""``feed_gaps`` and the market-data alerts' windows of one capture, in Arrow and NumPy.

How this works. The ingest has the capture's market-data messages at hand as
a table of ``feed.messages_sql``'s rows (``feed.stage_messages``); the SQL of
``feed.gaps_sql`` and of the ``feed_gap`` and ``stale_feed`` detectors
(``pcapflow.alerts``) would sort them again in DuckDB, window by window. Here
the same answers come from one sort per question over the Arrow columns:

- ``gaps``: the messages with an id, sorted by stream (capture, flow, rule,
  stream) and by ``stream_offset``, ``ts`` (the SQL's window order); each one
  is checked against the one before it in its stream (``lag``), as ``gaps_sql``
  says, and the breaks come out in its order (ts, capture, flow, rule, stream);
- ``episodes``: rows of one key less than a gap apart (``alerts._episodes``);
- ``silences``: each message to the next of its stream, or to its connection's
  end (``alerts.stale_feed``).

A dataset-wide answer (``pcapflow alerts --recompute``, ``Dataset.feed_gaps``)
runs the SQL; tests hold both to the same rows (the stored tables against a
recompute and the golden baselines).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .pipelines.tables import schemas


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes equal where the values are equal (nulls: -1)."""
    if pa.types.is_integer(column.type):
        arr = pc.fill_null(column, -(2**62)).to_numpy()
        return np.asarray(arr, np.int64)
    enc = pc.dictionary_encode(column).combine_chunks()
    return pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _same_as_previous(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Per row of a table sorted by ``keys``: the row before it has the same keys."""
    return _same(np.stack([_codes(table.column(k)) for k in keys]) if keys else
                 np.zeros((0, table.num_rows), np.int64))


def _same(codes: np.ndarray) -> np.ndarray:
    """Per column of ``codes`` (keys x rows, sorted): the column before has equal keys."""
    n = codes.shape[1]
    same = np.zeros(n, np.bool_)
    if n > 1:
        same[1:] = (codes[:, 1:] == codes[:, :-1]).all(axis=0)
    return same


def _stream_order(m: pa.Table, *then: str) -> tuple[np.ndarray, np.ndarray]:
    """The order of ``m`` by stream (``STREAM``, compared by equality only: codes) and
    then by the integer columns ``then``; and per row in that order, whether the row
    before is of the same stream."""
    codes = np.stack([_codes(m.column(k)) for k in STREAM])
    extra = [m.column(c).cast(pa.int64()).to_numpy() for c in then]
    order = np.lexsort((*reversed(extra), *reversed(list(codes))))
    return order, _same(codes[:, order])


def _ints(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, validity) of an integer column."""
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    return pc.fill_null(column, 0).to_numpy().astype(np.int64), valid


STREAM = ["capture_id", "flow_id", "rule", "stream"]


def gaps(messages: pa.Table) -> pa.Table:
    """``feed.gaps_sql``'s rows (``FEED_GAPS``) of ``messages`` (``messages_sql``'s rows)."""
    m = messages.filter(pc.is_valid(messages.column("last_id")))
    order, same = _stream_order(m, "stream_offset", "ts")
    last, _ = _ints(m.column("last_id"))
    first, first_ok = _ints(m.column("first_id"))
    prev, prev_ok = _ints(m.column("prev_id"))
    ts = m.column("ts").to_numpy().astype(np.int64)
    reset = pc.fill_null(m.column("reset"), False).to_numpy(zero_copy_only=False)
    # in stream order: each message against the one before it
    last, first, first_ok, prev, prev_ok = (x[order] for x in (last, first, first_ok, prev,
                                                                prev_ok))
    ts, reset = ts[order], reset[order]
    prev_last, prev_ts = np.roll(last, 1), np.roll(ts, 1)
    expected = np.where(prev_ok, prev_last, prev_last + 1)
    got = np.where(prev_ok, prev, first)
    keep = same & ~reset & (prev_ok | first_ok) & (got != expected)
    idx = np.flatnonzero(keep)
    got_k, exp_k, nxt = got[idx], expected[idx], ~prev_ok[idx]
    rows = pa.array(order[idx])
    table = pa.table({
        **{k: m.column(k).take(rows) for k in ("capture_id", "venue", "flow_id", "rule",
                                               "stream")},
        "ts": pa.array(ts[idx]).cast(schemas.TS),
        "prev_ts": pa.array(prev_ts[idx]).cast(schemas.TS),
        "check": pc.if_else(pa.array(nxt), "next", "prev"),
        "expected": pa.array(exp_k, pa.int64()), "got": pa.array(got_k, pa.int64()),
        "missing": pa.array(got_k - exp_k, pa.int64(), mask=~(nxt & (got_k > exp_k))),
        "kind": pc.if_else(pa.array(got_k > exp_k), "gap", "backwards")})
    order = pc.sort_indices(table, [(k, "ascending") for k in
                                    ("ts", "capture_id", "flow_id", "rule", "stream")])
    return table.take(order)


def episodes(keys: pa.Table, t: np.ndarray, gap_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of rows with equal ``keys`` whose times ``t`` are at most ``gap_ns`` apart (as
    ``alerts._episodes``): (order, episode id per row in that order)."""
    names = keys.column_names
    table = keys.append_column("_t", pa.array(t))
    order = pc.sort_indices(table, [(k, "ascending") for k in names] + [("_t", "ascending")])
    s = table.take(order)
    ts = t[order.to_numpy()]
    same = _same_as_previous(s.select(names), names)
    near = np.zeros(len(ts), np.bool_)
    near[1:] = ts[1:] - ts[:-1] <= gap_ns
    starts = ~(same & near)
    return order.to_numpy(), np.cumsum(starts) - 1


def silences(messages: pa.Table, flow_last: dict[tuple[str, int], int],
             stale_ns: int) -> list[tuple]:
    """``alerts.stale_feed``'s rows: (capture_id, venue, flow_id, rule, stream, ts, until,
    at_end) for each message followed by more than ``stale_ns`` of silence on its stream
    (to the next message, or to its connection's last packet), in time order."""
    m = messages.filter(pc.not_equal(messages.column("rule"), "fix_seq"))
    if m.num_rows == 0:
        return []
    order, same = _stream_order(m, "ts")
    m = m.take(pa.array(order))
    ts = m.column("ts").to_numpy().astype(np.int64)
    same_next = np.zeros(len(ts), np.bool_)
    same_next[:-1] = same[1:]
    until = np.roll(ts, -1)
    flows = m.column("flow_id").to_numpy()
    last = np.flatnonzero(~same_next)  # a stream's last message: silent to the flow's end
    cids = m.column("capture_id").take(pa.array(last)).to_pylist()
    until[last] = [flow_last.get((c, int(f)), -(2**62)) for c, f in zip(
        cids, flows[last], strict=True)]
    known = same_next | (until != -(2**62))
    hit = np.flatnonzero(known & (until - ts > stale_ns))
    pick = m.take(pa.array(hit)).select(["capture_id", "venue", "rule", "stream"]).to_pylist()
    rows = [(p["capture_id"], p["venue"], int(flows[i]), p["rule"], p["stream"], int(ts[i]),
             int(until[i]), not bool(same_next[i])) for p, i in zip(pick, hit, strict=True)]
    rows.sort(key=lambda r: r[5])
    return rows
