"""The tables an ingest derives from a capture's own tables: ``causes``, ``feed_gaps``, ``alerts``.

How this works. When the matcher has paired a capture's orders and replies
(``pipelines.match``), ``derive`` opens DuckDB views over that capture's
tables as they stand in the ingest's staging directory (``Dataset.of_capture``:
the same view names and columns as a dataset's, with the matcher's outputs and
the flows with their venues given as Arrow tables) and runs the same SQL the
analysis functions run over a dataset: ``causes.compute``, ``feed.find_gaps``
and ``alerts.alerts`` with the default ``alerts.Settings``. The rows are
written with the capture's other tables and committed with them, atomically
(``store.Staging.commit``); ``pcapflow match`` derives them again with the new
venues (``pipelines.match.rematch_capture``).

Alerts are per capture: a latency shift is found within one capture's orders,
and ``pcapflow alerts`` with other thresholds runs the detectors again over
the whole dataset.

A rotation ingested one file per command (``pipelines.ingest.resume``) is one
capture growing by a file per command: ``derive_staged`` then reads only the
parts this command wrote and what the set's previous command carried, writes
the rows no later file can change as final parts (kept by later commands as
they are) and the others as provisional ones, and saves what the next command
carries (``why_carry``: cuts, carried rows, the CUSUM's state, the checks that
fall back to the whole set). Each command costs O(its file), and the rows are
one ingest's.

The feed checks of a capture ingested whole (``feed_gaps``, stale feeds) need the
flows' venues only to leave out the streams of rules not theirs (``feed.Streams``),
and the microburst detector only to label its rows: ``FeedPrep`` works both out in a
thread while the matcher runs (its DuckDB, NumPy's sorts and the thread's own DuckDB
let go of the GIL), and the derive then only keeps and labels what the venues say.
On the application-layer benchmark capture that takes ~0.4 s of CPU off the serial
end of every ingest, sharded or not, which is part of what bounds ``--workers``
(``benchmarks/README.md``, "Session 12: workers").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pyarrow as pa
import pyarrow.compute as pc

from .pipelines.tables.schemas import TABLES, without_capture_id

if TYPE_CHECKING:
    import numpy as np

    from . import alerts, why_carry
    from .feed import Streams
    from .pipelines.match import MatchOutput

DERIVED = ("causes", "feed_gaps", "alerts")
"""Tables ``derive`` makes, in the order it makes them."""
LATENCY_ALERTS = ("latency_shift", "p99_high")
"""Alert kinds read from ``latency`` rows only."""
SETTINGS: alerts.Settings | None = None
"""The thresholds the ingest derives alerts with (None: ``alerts.Settings()``)."""


def _cast(table: pa.Table, name: str) -> pa.Table:
    """``table`` with the columns of ``name`` as written (no capture_id), in order."""
    schema = without_capture_id(TABLES[name])
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def derive(files: Mapping[str, Sequence[Path]], capture_id: str,
           tables: Mapping[str, pa.Table],
           scanned: pa.Table | None = None) -> dict[str, pa.Table]:
    """``causes``, ``feed_gaps`` and ``alerts`` of one capture, from its Parquet ``files``
    per table and the ``tables`` given as Arrow (the matcher's outputs, the flows);
    ``scanned``: the market-data ids the ingest read from the payloads
    (``pipelines.feed_scan.staged``), when it covered every message."""
    from . import alerts, causes, feed
    from .dataset import Dataset

    latency = tables.get("latency")
    # no latency rows: no causes (each explains an order) and no latency alerts, so
    # their SQL is not run (what every plain-TCP capture would pay)
    orders = latency is None or latency.num_rows > 0
    kinds = tuple(k for k in alerts.DETECTORS if orders or k not in LATENCY_ALERTS)
    with Dataset.of_capture(files, capture_id, tables) as view:
        # one thread: these queries are small next to the ingest that made their rows,
        # and DuckDB's parallel plans cost more CPU and memory than they save here
        view.con.execute("SET threads = 1")
        out = {"causes": _cast(
            causes.compute(view) if latency is None else
            causes.of_capture(view, latency, capture_id), "causes") if orders else
               without_capture_id(TABLES["causes"]).empty_table()}
        # each market-data payload parsed once, if at all (the ingest's scan)
        messages = feed.message_rows(view, scanned=scanned)
        gaps = feed.gaps_table(view, messages=messages)
        out["feed_gaps"] = _cast(gaps, "feed_gaps")
        out["alerts"] = _cast(alerts.find(view, SETTINGS or alerts.Settings(), kinds, gaps=gaps,
                                          messages=messages), "alerts")
    return out


def rederive(root: Path) -> Callable[..., dict[str, pa.Table]]:
    """``derive`` for ``pcapflow match`` over the dataset at ``root``: it replaces a
    capture's derived rows whole, so what a rotation's last command carried for the
    next (``why_carry``) is dropped first: the next command derives the set whole."""
    import shutil

    from . import why_carry
    from .pipelines.store import STATE, partition_dir

    def run(files: Mapping[str, Sequence[Path]], capture_id: str,
            tables: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
        shutil.rmtree(partition_dir(root, STATE, capture_id) / why_carry.DIR,
                      ignore_errors=True)
        return derive(files, capture_id, tables)
    return run


def staged_files(stage_dir: Path) -> dict[str, list[Path]]:
    """The Parquet parts of each table in an ingest's staging directory."""
    return {t: sorted((stage_dir / t).glob("*.parquet")) for t in TABLES}


Split = tuple[dict[str, pa.Table], dict[str, pa.Table]]
"""Derived rows as (final, provisional), per table."""


def _stale_ns() -> int:
    from . import alerts

    return int((SETTINGS or alerts.Settings()).stale_after_s * 1e9)


def _burst_key() -> tuple[int, int, float, float]:
    """What ``alerts._bursts`` is run with (``alerts.microburst``'s settings)."""
    from . import alerts

    st = SETTINGS or alerts.Settings()
    w = int(st.burst_window_us * 1000)
    return w, max(int(st.burst_baseline_s * 1e9) // w, 1), st.burst_min_bytes, st.burst_factor


class FeedPrep:
    """The derive's work that needs no venue, in a thread started before the matcher
    (module docstring): the ingest's scan of the staged ``ws_messages`` read back a
    side file at a time and its streams worked out (``feed.StreamWalk``; the rows kept,
    ``scanned``, only when that walk could not be done), then the microburst detector's
    episodes (``alerts._bursts``: ``tcp_rtt`` and the flows' first packets; the venue
    only labels its rows). ``derive_staged`` uses each when the derive reads those same
    files and, for the streams, nothing else gives market-data rows (no payload handed
    back whole, no FIX)."""

    def __init__(self, stage_dir: Path, capture_id: str | None = None,
                 flows: pa.Table | None = None) -> None:
        from .pipelines.ingest.resume import CARRIED, STATE_FILE
        from .pipelines.store import STATE

        # a rotation's command (it keeps state, or resumes a set: ``why_carry.Plan``)
        # derives otherwise: nothing to start
        self.whole = not ((stage_dir / STATE / STATE_FILE).is_file()
                          or (stage_dir / CARRIED).is_file())
        files = (staged_files(stage_dir) if self.whole else
                 {"ws_messages": [], "tcp_rtt": [], "fix_messages": []})
        self.ws_files = files["ws_messages"]
        self.fix_files = files["fix_messages"]
        self.rtt_files = files["tcp_rtt"]
        self.stale_ns = _stale_ns()
        self.burst_key = _burst_key()
        self.scanned: pa.Table | None = None
        self.streams: Streams | None = None
        self.bursts: list[tuple] | None = None
        self._feed = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stage_dir, capture_id, flows),
                                        daemon=True, name="pcapflow-feed-prep")
        if self.whole:
            self._thread.start()
        else:
            self._feed.set()

    def _run(self, stage_dir: Path, capture_id: str | None, flows: pa.Table | None) -> None:
        import pyarrow.parquet as pq

        from . import feed
        from .pipelines.feed_scan import read_part, staged, staged_parts

        try:
            # the scan's side files one at a time (no array of every message: the
            # ingest's peak memory was here), each stream's last message carried
            paths = staged_parts(stage_dir, self.ws_files)
            fix = any(pq.read_metadata(p).num_rows for p in self.fix_files)
            walk = feed.StreamWalk(self.stale_ns)
            for path in paths if paths is not None and not fix else ():
                if not walk.add(read_part(path)):
                    break
            if fix and paths is not None:  # FIX's rows come from the SQL: the derive
                self.scanned = staged(stage_dir, self.ws_files)  # takes the scan's rows
            elif paths is not None and walk.ok:
                self.streams = walk.finish()  # (``scanned``: read if the derive needs it)
            elif paths is not None:  # a payload handed back whole, or out of stream order
                self.scanned = staged(stage_dir, self.ws_files)
                if self.scanned is not None:
                    self.streams = feed.prepare(self.scanned, self.stale_ns)
        except Exception:  # only a head start: the derive reads the files itself
            self.scanned = self.streams = None
        finally:
            self._feed.set()
        if capture_id is None or flows is None:
            return
        try:
            self.bursts = _bursts_before_venues(stage_dir, capture_id, flows, self.rtt_files,
                                                self.burst_key)
        except Exception:
            self.bursts = None

    def wait(self) -> FeedPrep:
        """Once the feed part is done (the microburst part may still run)."""
        self._feed.wait()
        return self

    def bursts_done(self) -> list[tuple] | None:
        if self.whole:
            self._thread.join()
        return self.bursts


FEW_ORDERS = 100_000
"""``latency`` rows read (a rotation's later command: those ``causes.since_rows``
gives) up to which the derive reads ``causes``' rows (a few per order at most, mostly
none) with ``Dataset.small_arrow`` (an extra copy of them, ~0.02 s of CPU less; ~0.05
s less on a resumed command at 1M-packet files, whose view holds minutes of rows)."""

SPAN_ROWS = 100_000
"""``tcp_rtt`` rows up to which ``_no_burst_in_files`` reads the files' columns (more:
the detector runs, as before; reading them would cost a large capture more than the
check saves)."""


def _no_burst_in_files(rtt_files: list[Path], min_bytes: float) -> bool:
    """``alerts.no_burst_possible`` over staged ``tcp_rtt`` parts: first by their
    statistics alone (every connection's ``end_offset`` span is within the files'
    smallest and largest: a small capture's streams are below ``min_bytes`` whole),
    then, for up to ``SPAN_ROWS`` rows, per connection and direction."""
    import pyarrow.parquet as pq

    from . import alerts

    if min_bytes <= 0:
        return False
    if not rtt_files:
        return True
    meta = [pq.read_metadata(p) for p in rtt_files]
    lo = hi = None
    try:
        for m in meta:
            col = m.schema.names.index("end_offset")
            for g in range(m.num_row_groups):
                st = m.row_group(g).column(col).statistics
                if m.row_group(g).num_rows == 0:
                    continue
                if st is None or not st.has_min_max:
                    raise ValueError("no statistics")
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
    except ValueError:
        lo = hi = None
    else:
        if lo is None or hi - lo < min_bytes:
            return True
    if sum(m.num_rows for m in meta) > SPAN_ROWS:
        return False
    rtt = pa.concat_tables([pq.ParquetFile(p).read(columns=["flow_id", "direction", "end_offset"])
                            for p in rtt_files])
    return alerts.no_burst_possible(rtt, min_bytes)


CLOCK_STEPS = ("clock_step_back", "clock_step_forward")
"""``anomalies`` codes ``alerts.clock_step`` reads."""


def nothing_to_derive(stage_dir: Path, message_tables: Sequence[str]) -> bool:
    """Whether ``derive_staged`` of this ingest would find no row, told without DuckDB.

    It holds for a capture's own rows (no rotation state kept or carried: the
    ``FeedPrep.whole`` case) in which none of ``message_tables`` (the matcher's:
    ``pipelines.match.MESSAGE_TABLES``) has a staged part: no order (so no
    ``latency`` row, hence no cause and no latency alert) and no market data (no feed
    gap, no stale feed); and where the TCP layer's detectors are silent by the checks
    the derive itself makes before running their queries: no zero-window event and no
    flow with ``storm_per_s`` retransmissions in a second (``alerts.silent_tcp_detectors``
    over the staged ``tcp_events``), no interval that can reach ``burst_min_bytes``
    (``_no_burst_in_files``), no clock step among the staged ``anomalies``. A plain
    TCP capture's ingest then opens no DuckDB database at its end (~0.1 s of CPU of a
    1 MB capture's ~0.5: the views, the queries, and DuckDB's import)."""
    import pyarrow.parquet as pq

    from . import alerts
    from .pipelines.ingest.resume import CARRIED, STATE_FILE
    from .pipelines.store import STATE

    if (stage_dir / STATE / STATE_FILE).is_file() or (stage_dir / CARRIED).is_file():
        return False
    files = staged_files(stage_dir)
    if any(files[t] for t in message_tables):
        return False
    s = SETTINGS or alerts.Settings()
    if any(pc.any(pc.is_in(pq.ParquetFile(p).read(columns=["code"]).column("code"),
                           pa.array(CLOCK_STEPS))).as_py() for p in files["anomalies"]):
        return False
    events = [pq.ParquetFile(p).read(columns=["flow_id", "kind", "direction", "ts"])
              for p in files["tcp_events"]]
    rows = pa.concat_tables([pa.table({
        "f": e.column("flow_id").cast(pa.int64()), "kind": e.column("kind"),
        "direction": e.column("direction"), "t": e.column("ts").cast(pa.int64())})
        for e in events]) if events else None
    if rows is not None:
        rows = rows.filter(pc.is_in(rows.column("kind"), pa.array(alerts.TCP_EVENT_KINDS)))
    silent = (alerts.silent_tcp_detectors(rows, s) if rows is not None
              else {"zero_window", "retransmission_storm"})
    if not {"zero_window", "retransmission_storm"} <= silent:
        return False
    return _no_burst_in_files(files["tcp_rtt"], s.burst_min_bytes)


def _bursts_before_venues(stage_dir: Path, capture_id: str, flows: pa.Table,
                          rtt_files: list[Path], key: tuple[int, int, float, float]
                          ) -> list[tuple] | None:
    """``alerts._bursts`` over the staged ``tcp_rtt`` and the flows as they stand
    before the matcher (the staged ones and those it is given: the same ``first_ts``
    as after it; ``venue`` null, filled in by ``derive_staged``)."""
    import pyarrow.parquet as pq

    from . import alerts
    from .dataset import Dataset

    w, span, min_bytes, _ = key
    if _no_burst_in_files(rtt_files, min_bytes):
        return []  # (nothing to find: no DuckDB views made, no query run)
    schema = without_capture_id(TABLES["flows"])
    rows = pa.concat_tables([schema.empty_table(), *(
        pq.ParquetFile(p).read().cast(schema) for p in staged_files(stage_dir)["flows"]),
        flows.select(schema.names).cast(schema)])
    # (``_no_burst_in_files``: there are rows; ``alerts._bursts`` would ask the view which
    # capture they are of, and the flows' view for their first times)
    first = rows.column("first_ts")
    first_ns = pc.cast(first, pa.timestamp("ns", getattr(first.type, "tz", None))).cast(
        pa.int64())
    listed = list(zip(rows.column("flow_id").to_pylist(), first_ns.to_pylist(),
                      rows.column("venue").to_pylist(), strict=True))
    with Dataset.of_capture({"tcp_rtt": rtt_files}, capture_id,
                            views=("tcp_rtt",)) as view:  # (all the detector reads)
        view.con.execute("SET threads = 1")
        return alerts.bursts_of_capture(view, capture_id, listed,
                                        SETTINGS or alerts.Settings(), w, span)


def derive_staged(stage_dir: Path, capture_id: str, flows: pa.Table,
                  matched: MatchOutput, prep: FeedPrep | None = None) -> Split:
    """``derive`` at the end of an ingest: the staged tables, the flows the matcher
    was given (with its venues) besides those already staged, and its outputs. A
    rotation's file ingested on its own derives from its own rows and what the set's
    previous command carried (``why_carry``): (final rows, provisional rows).
    ``prep``: the feed work started beside the matcher (``FeedPrep``)."""
    import pyarrow.parquet as pq

    from . import why_carry
    from .pipelines.feed_scan import staged
    from .pipelines.tables.rows import with_venues

    schema = without_capture_id(TABLES["flows"])
    # (ParquetFile, not pq.read_table: that imports pyarrow.dataset, ~0.1-0.2 s of CPU)
    from .pipelines.ingest import resume
    from .pipelines.ingest.resume import OLD_PLAIN  # (the set's flows not matched)

    old_plain = [stage_dir / OLD_PLAIN] if (stage_dir / OLD_PLAIN).is_file() else []
    staged_flows = [pq.ParquetFile(p).read().cast(schema)
                    for p in [*staged_files(stage_dir)["flows"], *old_plain]]
    all_flows = pa.concat_tables([schema.empty_table(), *staged_flows, with_venues(
        flows.select(schema.names), matched.flow_venue, matched.flow_venue_source)])
    plan = why_carry.Plan.of(stage_dir, capture_id)
    partial = (stage_dir / resume.OLD_PARTIAL).is_file()
    need = None
    read = all_flows
    if plan.prev is not None:
        need = why_carry.flow_ids_of(plan)
        if partial:  # the set's rows of the flows this command reads, not read yet
            all_flows = _with_near(stage_dir, capture_id, all_flows, need)
        why = why_carry.check(plan, matched.tables.get("latency"), all_flows)
        if why is not None:
            why_carry.whole(plan, why)
    elif plan.parts.resumed:
        why_carry.whole(plan, plan.why_whole or "no derive state")
    if plan.prev is None and partial:  # (over the whole set: every row of its flows)
        rest = resume.set_flows(stage_dir)
        rest = rest.filter(pa.array(~resume._app_mask(rest)))
        all_flows = pa.concat_tables([read, rest.cast(schema)])
    tables = {**matched.tables, "flows": all_flows}
    if plan.keep:  # what the next command's derive may read of this one's flows
        _keep_near(stage_dir, all_flows, need if need is not None
                   else why_carry.flow_ids_of(plan))
    files, extra = why_carry.view_inputs(plan)
    files.pop("flows", None)
    view_tables = dict(tables)
    if plan.prev is not None:  # the flows of the rows read (the set's: for the checks)
        assert need is not None
        view_tables["flows"] = all_flows.filter(pc.is_in(all_flows.column("flow_id"),
                                                         pa.array(need, pa.int64())))
    streams = None
    whole = plan.prev is None and not plan.keep and not plan.parts.resumed
    if prep is not None and not prep.whole:
        prep = None
    if prep is not None and sorted(prep.wait().ws_files) == sorted(files["ws_messages"]):
        if (whole and prep.stale_ns == _stale_ns()
                and not any(pq.read_metadata(p).num_rows for p in files["fix_messages"])):
            streams = prep.streams
        scanned = None
        if streams is None:  # (``prep`` keeps the scan's rows only when it needed them)
            scanned = (prep.scanned if prep.scanned is not None else
                       staged(stage_dir, files["ws_messages"]))
    else:
        scanned = staged(stage_dir, files["ws_messages"])
    bursts = None
    if (prep is not None and whole and prep.burst_key == _burst_key()
            and sorted(prep.rtt_files) == sorted(files["tcp_rtt"])):
        bursts = _with_flow_venues(prep, all_flows)
    prep = None
    # (the scan's rows passed on, not kept here: freed once the messages' rows are made)
    return _derive_carried(plan, files, extra, view_tables, scanned, all_flows, streams,
                           bursts)


def _with_near(stage_dir: Path, capture_id: str, flows: pa.Table, need: np.ndarray
               ) -> pa.Table:
    """``flows`` with the set's rows of the flows ``need`` it lacks: the command read
    only some of the set's ``flows`` parts (``resume.OLD_PARTIAL``); the previous
    command kept the rows of the flows its derive read (``_keep_near``), which cover
    what this one's carried rows read; any other is read from the set's parts."""
    import numpy as np
    import pyarrow.parquet as pq

    from .pipelines.ingest import resume
    from .pipelines.store import STATE, partition_dir

    have = flows.column("flow_id").to_numpy()
    missing = np.setdiff1d(need, have)
    if not len(missing):
        return flows
    schema = flows.schema
    more = []
    path = partition_dir(stage_dir.parent.parent, STATE, capture_id) / resume.FLOWS_DIR / NEAR
    if path.is_file():
        near = pq.ParquetFile(path).read()
        near = near.filter(pc.is_in(near.column("flow_id"), pa.array(missing, pa.int64())))
        more.append(near.select(schema.names).cast(schema))
        missing = np.setdiff1d(missing, near.column("flow_id").to_numpy())
    if len(missing):
        more.append(resume.set_flows(stage_dir, missing).select(schema.names).cast(schema))
    return pa.concat_tables([flows, *more])


NEAR = "near.parquet"
"""In a set's ``resume.FlowsIndex`` directory: the ``flows`` rows of the flows a
command's derive read (``_keep_near``)."""


def _keep_near(stage_dir: Path, flows: pa.Table, ids: np.ndarray) -> None:
    """Stage the rows of ``flows`` of the flows ``ids`` (those this derive read: every
    flow the rows it carries to the next command are of, ``why_carry.flow_ids_of``)."""
    import pyarrow.parquet as pq

    from .pipelines.ingest import resume
    from .pipelines.store import STATE

    out = stage_dir / STATE / resume.FLOWS_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = flows.filter(pc.is_in(flows.column("flow_id"), pa.array(ids, pa.int64())))
    pq.write_table(rows, out / NEAR)


def _with_flow_venues(prep: FeedPrep, flows: pa.Table) -> Callable[[], list[tuple] | None]:
    """``prep``'s microburst episodes, once done, with each flow's venue (None: the
    derive runs the detector itself)."""

    def get() -> list[tuple] | None:
        rows = prep.bursts_done()
        if rows is None:
            return None
        venue = dict(zip(flows.column("flow_id").to_pylist(), flows.column("venue").to_pylist(),
                         strict=True))
        return [(r[0], r[1], r[2], venue.get(r[1]), *r[4:]) for r in rows]
    return get


def _derive_carried(plan: why_carry.Plan, files: Mapping[str, Sequence[Path]],
                    extra: Mapping[str, pa.Table], tables: Mapping[str, pa.Table],
                    scanned: pa.Table | None, all_flows: pa.Table,
                    streams: Streams | None = None,
                    bursts: Callable[[], list[tuple] | None] | None = None) -> Split:
    """``derive`` of one command of a capture (set): rows split at its cuts, the rows
    an earlier command made left out, what the next command carries saved;
    ``streams``: the feed checks' streams worked out already (``FeedPrep``: then
    ``scanned`` is not read); ``bursts``: gives the microburst episodes found
    already (``FeedPrep``), or None."""
    from . import alerts, causes, feed
    from . import why_carry as wc
    from .dataset import Dataset

    latency, unmatched = tables.get("latency"), tables.get("unmatched")
    orders = latency is None or latency.num_rows > 0
    kinds = tuple(k for k in alerts.DETECTORS if k != "clock_step"
                  and (orders or k not in LATENCY_ALERTS))
    prev = plan.prev
    if (prev is None and not plan.keep and not plan.parts.resumed  # (a capture's own rows)
            and alerts.no_storm_possible(all_flows, (SETTINGS or alerts.Settings()).storm_per_s)):
        kinds = tuple(k for k in kinds if k != "retransmission_storm")
    c_prev = int(prev.meta["cut"]) if prev else None  # type: ignore[call-overload]
    p_prev = int(prev.meta["pcut"]) if prev else None  # type: ignore[call-overload]
    final: dict[str, pa.Table] = {}
    prov: dict[str, pa.Table] = {}
    own = prev is None and not plan.keep and not plan.parts.resumed and not extra
    # (a capture's own rows: no view of the tables nothing here reads, ~0.7 ms each)
    with Dataset.of_capture(files, plan.capture_id, tables, extra,
                            views=[t for t in TABLES if t not in UNREAD] if own else None
                            ) as view:
        view.con.execute("SET threads = 1")  # (see ``derive``)
        cut, pcut, qcut = wc.cuts(plan, view, latency, unmatched)
        events = None  # (a capture's own: its TCP anomalies read once, for the checks)
        if own:
            events = alerts.tcp_events_rows(view)
            silent = alerts.silent_tcp_detectors(events, SETTINGS or alerts.Settings())
            kinds = tuple(k for k in kinds if k not in silent)
        storms = (alerts.storm_rows(events, all_flows, plan.capture_id,
                                    (SETTINGS or alerts.Settings()).storm_per_s)
                  if events is not None and "retransmission_storm" in kinds else None)
        if orders:
            acks = tables.get("acks")
            given = (causes.since_rows(latency, acks, c_prev)
                     if c_prev is not None and latency is not None and acks is not None
                     else None)
            # (few: the latency rows it reads, those given when given: a resumed
            # command's view holds minutes of them, it reads the last seconds')
            read = given["latency"] if given is not None else latency
            if prev is None and latency is not None and "latency" not in extra:
                # (the SQL over the orders that may have a cause only, if any)
                rows = _cast(causes.of_capture(view, latency, plan.capture_id, events,
                                               few=latency.num_rows <= FEW_ORDERS), "causes")
            else:
                rows = _cast(causes.compute(view, since=c_prev,
                                            more_rtt=prev.dack if prev else None,
                                            capture_id=plan.capture_id, given=given,
                                            few=read is not None
                                            and read.num_rows <= FEW_ORDERS), "causes")
            read = None
            given = None
            settle = (wc.ns_or_inf(rows.column("order_ts"))
                      + pc_fill0(rows.column("latency_ns")))
            final["causes"], prov["causes"] = wc.split(rows, settle, c_prev, cut)
        else:
            final["causes"] = prov["causes"] = without_capture_id(TABLES["causes"]).empty_table()
        silences: list[tuple] | None = None
        feed_msg: pa.Table | None = None
        named = None
        if streams is not None:  # (``FeedPrep``: only a plain ingest's derive has them)
            named = view.small_arrow("SELECT flow_id, capture_id, venue, "
                                     "epoch_ns(last_ts) AS last_ts FROM flows ORDER BY flow_id")
        if streams is not None and named is not None and feed.usable(named):
            gaps = feed.gaps_for(streams, named)
            silences = feed.silences_for(streams, named)
        else:
            feed_msg = feed.message_rows(view, scanned=scanned)
            scanned = None
            if prev is not None and prev.feed.num_rows:
                feed_msg = feed.as_messages(pa.concat_tables([feed.as_messages(prev.feed),
                                                              feed_msg]))
            gaps = feed.gaps_table(view, messages=feed_msg)
        streams = named = None
        final["feed_gaps"], prov["feed_gaps"] = wc.split(
            _cast(gaps, "feed_gaps"), wc.ns_or_inf(gaps.column("ts")), c_prev, cut)
        cusum = wc.cusum_of(plan, latency, pcut, qcut)
        s = SETTINGS or alerts.Settings()
        p99 = wc.p99_of(plan, latency, s)
        # (the latency alerts' rows: the view's window holds minutes of them, each of
        # those alerts reads from its previous order cut on: ``alerts.RecentLatency``)
        rows = alerts.find_rows(view, s, kinds, gaps=gaps, messages=feed_msg, cusum=cusum,
                                orders_since=p_prev, silences=silences,
                                bursts=bursts() if bursts is not None else None,
                                latency=latency if prev is not None or own else None,
                                storms=storms, p99=p99)
        held = set(plan.held.tolist())
        fin_rows, prov_rows = [], []
        open_starts: dict[str, int] = {}  # (per kind: the oldest provisional alert's start)
        for r in rows:
            settle = int(r["_settle"])  # type: ignore[call-overload]
            if r.get("_flow_end") and r.get("flow_id") in held:
                settle = wc.INF  # silent until now: the connection goes on
            before, at = (p_prev, pcut) if r.get("_orders") else (c_prev, cut)
            if before is not None and settle < before:
                continue
            if settle < at:
                fin_rows.append(r)
            else:
                prov_rows.append(r)
                if not r.get("_orders"):
                    kind, start = str(r["kind"]), int(r["start_ts"])  # type: ignore
                    open_starts[kind] = min(open_starts.get(kind, wc.INF), start)
        tail_anomalies = wc._read(plan.parts.tail.get("anomalies", []), "anomalies",
                                  ["ts", "code"])
        tail_steps = {int(t) for t in wc.ns_or_inf(tail_anomalies.filter(pc.fill_null(pc.is_in(
            tail_anomalies.column("code"), pa.array(["clock_step_back", "clock_step_forward"])),
            False)).column("ts"))}
        # (no ``anomalies`` rows anywhere: nothing to read, no query)
        has_anomalies = bool(files.get("anomalies")) or "anomalies" in tables or \
            "anomalies" in extra
        for r in alerts.clock_step(view, s) if has_anomalies else []:
            start = cast(int, r["start_ts"])
            (prov_rows if int(start) in tail_steps else fin_rows).append(r)
        final["alerts"] = _cast(alerts.table_of(fin_rows), "alerts")
        prov["alerts"] = _cast(alerts.table_of(prov_rows), "alerts")
        if plan.keep:
            keys = wc.tail_keys(plan)
            view.con.register("_tail_keys", keys)
            assert feed_msg is not None  # (``streams`` are never a rotation's: see above)
            view.con.register("feed_msg", feed_msg)
            feed_rows = view.con.sql(
                "SELECT * FROM feed_msg m WHERE NOT EXISTS (SELECT 1 FROM _tail_keys k "
                "WHERE k.flow_id = m.flow_id AND k.stream_offset = m.stream_offset)"
            ).to_arrow_table()
            wc.save(plan, view.con, s, (cut, pcut, qcut), open_starts, latency, unmatched,
                    feed_rows, cusum, all_flows,
                    [r for r in rows if r["kind"] == "p99_high"] if orders else None)
    return final, prov


UNREAD = frozenset({"captures", "packets", "orders", "unmatched", *DERIVED})
"""Tables the derive of a capture's own rows reads nothing of (``_derive_carried``)."""


def pc_fill0(col: pa.ChunkedArray) -> object:
    """Null as 0, as int64 NumPy."""
    return pc.fill_null(col.cast(pa.int64()), 0).to_numpy()
