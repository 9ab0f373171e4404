"""A dataset's numbers as Prometheus/OpenMetrics metrics (``pcapflow watch
--metrics-port``, ``pcapflow metrics``).

How this works. ``Totals`` holds cumulative values read from the tables: latency
histogram buckets per venue, endpoint and kind (the ``ack`` leg: order to reply),
counts of orders, unmatched, rejected, retransmissions, feed gaps (the stored
``feed_gaps`` table) and alerts (the stored ``alerts`` table, per kind, severity and
venue), and the files ingested; ``DatasetMetrics`` keeps them per capture too.
``DatasetMetrics.refresh`` keeps them equal to the dataset: it lists the
``captures`` partitions with a fingerprint each (``store.fingerprint``: the files'
names, inodes and mtimes); a capture that is new or changed (a rotation's set
resumed by one more file) is read alone (``Dataset(captures=...)``: only its
partitions are opened, every query grouped by capture) and replaces its old part of
the totals, and a capture removed is taken away. Of a rotation's set resumed by a
file, only what that command wrote is read: its final parts (later commands keep
them as they are; their totals are added to the earlier ones') and the provisional
``part-t*`` ones (``_read_parts``). So following a rotation costs one read of the
file just committed, never of the whole set or the whole dataset, and the
metrics are never more than a refresh away from the tables. Every value is an
aggregate over a table (DuckDB SQL below), never an estimate, so a scrape can be
checked against the tables exactly (``tests/e2e/test_live_metrics.py``).

``prometheus_client`` is optional (the ``live`` extra) and imported only when an
endpoint is served.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .parsers.errors import PcapflowError

if TYPE_CHECKING:
    from .dataset import Dataset

BUCKETS_NS: tuple[int, ...] = (
    50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    25_000_000, 50_000_000, 100_000_000, 250_000_000, 500_000_000, 1_000_000_000,
    2_500_000_000, 5_000_000_000, 10_000_000_000)
"""Upper bounds of the latency histogram's buckets (ns; exported in seconds, the
Prometheus unit): 50 µs to 10 s, about three per decade."""

PREFIX = "pcapflow"

INSTALL_HINT = ("metrics need the prometheus_client package: "
                "pip install 'pcapflow[live]' (or pip install prometheus_client)")


def require_prometheus() -> Any:
    """``prometheus_client``, or a ``PcapflowError`` saying what to install."""
    try:
        import prometheus_client
    except ImportError:
        raise PcapflowError(INSTALL_HINT) from None
    return prometheus_client


_BUCKET_SQL = "len(list_filter([{}], lambda b: b < latency_ns))".format(
    ", ".join(str(b) for b in BUCKETS_NS))
"""A latency's bucket: the number of upper bounds below it (Prometheus' ``le``:
a value equal to a bound counts in that bound's bucket)."""

QUERIES: dict[str, str] = {
    "latency": f"""
        SELECT capture_id, coalesce(venue, ''), coalesce(endpoint, ''), coalesce(kind, ''),
               {_BUCKET_SQL} AS bucket, count(*), sum(latency_ns)
        FROM latency WHERE leg = 'ack' AND latency_ns IS NOT NULL GROUP BY ALL""",
    "orders": """SELECT capture_id, coalesce(venue, ''), coalesce(kind, ''), count(*)
                 FROM orders GROUP BY ALL""",
    "unmatched": """SELECT capture_id, coalesce(venue, ''), coalesce(what, ''), count(*)
                    FROM unmatched GROUP BY ALL""",
    "rejected": """SELECT capture_id, coalesce(venue, ''), coalesce(endpoint, ''), count(*)
                   FROM latency WHERE leg = 'ack' AND status = 'rejected' GROUP BY ALL""",
    "retransmissions": """SELECT capture_id, coalesce(venue, ''),
                                 sum(retransmissions)::BIGINT FROM flows
                          GROUP BY ALL HAVING sum(retransmissions) > 0""",
    "feed_gaps": """SELECT capture_id, coalesce(venue, ''), count(*) FROM feed_gaps
                    GROUP BY ALL""",
    "alerts": """SELECT capture_id, coalesce(kind, ''), coalesce(severity, ''),
                        coalesce(venue, ''), count(*) FROM alerts GROUP BY ALL""",
    "files": "SELECT capture_id, count(*), max(last_ts) FROM captures GROUP BY ALL",
}
"""The SQL behind each metric (over the dataset's views)."""
METRIC_TABLES = ("latency", "orders", "unmatched", "flows", "feed_gaps", "alerts",
                 "captures")
"""The tables ``QUERIES`` read."""
TAIL_PARTS = "part-t"
"""Name prefix of a rotation's provisional parts (``pipelines.ingest.resume``), written
again by its next command; its other parts are kept as they are."""

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "orders": ("Order actions sent (orders table)", ("venue", "kind")),
    "unmatched": ("Orders without reply and replies without order (unmatched table)",
                  ("venue", "what")),
    "rejected": ("Replies that rejected an order (latency table, status rejected)",
                 ("venue", "endpoint")),
    "retransmissions": ("TCP retransmissions on the venue's connections (flows table)",
                        ("venue",)),
    "feed_gaps": ("Breaks in market-data sequence numbers (feed_gaps table)", ("venue",)),
    "alerts": ("Alerts each capture's ingest found (alerts table; venue empty when an "
               "alert is tied to none)", ("kind", "severity", "venue")),
}


@dataclass
class Totals:
    """Cumulative metric values of some captures (see the module docstring)."""

    latency: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    """(venue, endpoint, kind) -> per-bucket counts (``len(BUCKETS_NS) + 1``: the
    last is +Inf), then the sum of latencies in ns."""
    counters: dict[str, dict[tuple[str, ...], int]] = field(
        default_factory=lambda: {name: {} for name in COUNTERS})
    files: int = 0
    captures: int = 0
    last_packet_ns: int | None = None

    def add(self, other: Totals, sign: int = 1) -> None:
        """Add ``other``'s values (``sign=-1``: take them away; a series left at zero is
        dropped, as a read of the tables has none)."""
        for key, row in other.latency.items():
            mine = self.latency.setdefault(key, [0] * (len(BUCKETS_NS) + 2))
            for i, v in enumerate(row):
                mine[i] += sign * v
            if sign < 0 and not any(mine):
                del self.latency[key]
        for name, values in other.counters.items():
            mine_c = self.counters.setdefault(name, {})
            for ckey, n in values.items():
                mine_c[ckey] = mine_c.get(ckey, 0) + sign * n
                if sign < 0 and mine_c[ckey] == 0:
                    del mine_c[ckey]
        self.files += sign * other.files
        self.captures += sign * other.captures
        if sign > 0 and other.last_packet_ns is not None:
            self.last_packet_ns = max(self.last_packet_ns or 0, other.last_packet_ns)


def read_by_capture(ds: Dataset) -> dict[str, Totals]:
    """The totals of each capture ``ds`` reads (``Dataset(captures=...)`` narrows it)."""
    out: dict[str, Totals] = {}

    def of(cid: str) -> Totals:
        t = out.get(cid)
        if t is None:
            t = out[cid] = Totals()
        return t

    for cid, venue, endpoint, kind, bucket, n, total in ds.fetchall(QUERIES["latency"]):
        row = of(cid).latency.setdefault((venue, endpoint, kind),
                                         [0] * (len(BUCKETS_NS) + 2))
        row[int(bucket)] += int(n)
        row[-1] += int(total)
    for name in COUNTERS:
        for cid, *key, n in ds.fetchall(QUERIES[name]):
            of(cid).counters[name][tuple(key)] = int(n)
    for cid, files, last in ds.fetchall(QUERIES["files"]):
        t = of(cid)
        t.files, t.captures = int(files), 1
        t.last_packet_ns = None if last is None else _ns(last)
    return out


def read_totals(ds: Dataset) -> Totals:
    """The totals of every capture ``ds`` reads, together."""
    t = Totals()
    for one in read_by_capture(ds).values():
        t.add(one)
    return t


def _ns(ts: object) -> int:
    """A DuckDB timestamp (a datetime, or a pandas Timestamp) as ns since the epoch."""
    import pandas as pd

    return int(pd.Timestamp(ts).value)


def _partitions(root: Path) -> dict[str, str]:
    """capture_id -> fingerprint of every capture in the dataset."""
    from .pipelines import store

    part = root / "captures"
    if not part.is_dir():
        return {}
    ids = [p.name.removeprefix("capture_id=") for p in part.iterdir()
           if p.name.startswith("capture_id=")]
    return {c: store.fingerprint(root, c) for c in ids}


@dataclass
class LiveState:
    """What ``pcapflow watch`` adds to the dataset's metrics (gauges of its own)."""

    files_behind: int = 0
    files_ingested_run: int = 0
    files_lost: int = 0
    last_file: str = ""
    last_ingest_unix: float = 0.0


_COMMAND = re.compile(r"part-f(\d+)-")


def _command(name: str) -> int:
    """The set's command that wrote a final part: ``part-f<k>-``, the first command's 0."""
    m = _COMMAND.match(name)
    return int(m.group(1)) if m else 0


_DIGEST_MASK = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReadParts:
    """A capture's final parts read so far, in a few numbers: a rotation's command
    ``k`` writes its final parts as ``part-f<k>-*`` and leaves the earlier ones as
    they are, so those read are the parts of commands up to ``upto``, checked by
    their count and a digest of their names and inodes (``pcapflow match`` writes a
    set's parts anew, maybe under the same names). A set of parts grew by ~2 kB a
    file (one entry a table a file) in a watch that runs for days (issue 19)."""

    upto: int
    count: int
    digest: int


@dataclass(slots=True)
class Listing:
    """One pass over a capture's parts of ``METRIC_TABLES`` (``DatasetMetrics._list``):
    every final part in a few numbers (``every``), those of commands up to ``upto``
    likewise (``before``: to compare with the ``ReadParts`` kept), and by name only
    the final parts of later commands (``added``) and the provisional ones (``tail``).
    Nothing is kept per part of the set: a watch lists a set that grows by a part a
    table a file for days, and a listing held whole made the watch process's peak,
    and with it its heap, grow with the set (issue 19)."""

    every: ReadParts
    before: ReadParts
    added: dict[str, list[str]]
    tail: dict[str, list[str]]


def list_parts(listing: dict[str, Iterable[tuple[str, int]]], upto: int,
               names_after: int | None = None) -> Listing:
    """``Listing`` of ``listing`` (table -> a stream of (part name, inode)), the parts
    of commands up to ``upto`` in ``before``; the final parts of commands after
    ``names_after`` (``upto`` by default) named in ``added``."""
    after = upto if names_after is None else names_after
    n_all = n_old = d_all = d_old = 0
    top = -1
    added: dict[str, list[str]] = {}
    tail: dict[str, list[str]] = {}
    for table, entries in listing.items():
        new_t: list[str] = []
        tail_t: list[str] = []
        for name, ino in entries:
            if name.startswith(TAIL_PARTS):
                tail_t.append(name)
                continue
            k = _command(name)
            h = hash((f"{table}/{name}", ino))
            n_all += 1
            d_all += h
            top = max(top, k)
            if k <= upto:
                n_old += 1
                d_old += h
            if k > after:
                new_t.append(name)
        added[table], tail[table] = sorted(new_t), sorted(tail_t)
    return Listing(ReadParts(top, n_all, d_all & _DIGEST_MASK),
                   ReadParts(upto, n_old, d_old & _DIGEST_MASK), added, tail)


class DatasetMetrics:
    """Metrics of one dataset directory, kept equal to its tables by ``refresh``."""

    def __init__(self, root: Path, live: LiveState | None = None) -> None:
        self.root = root
        self.live = live
        self.totals = Totals()
        self.by_capture: dict[str, Totals] = {}
        """Each capture's part of ``totals`` (a changed capture is replaced, alone)."""
        self._seen: dict[str, str] = {}
        self._kept: dict[str, tuple[ReadParts, Totals | None]] = {}
        """Per capture: its final parts read so far (a rotation's later commands keep
        them as they are: ``ReadParts``) and their totals (None: not apart)."""
        self._lock = threading.Lock()
        self.refreshed_unix = 0.0

    def refresh(self, added: list[str] | None = None, removed: Sequence[str] = ()) -> None:
        """Bring the totals up to the dataset: the captures added or changed since are
        read again (alone), those removed are taken away. ``added``: the caller knows
        what changed (``watch``: the capture it just committed, maybe a resumed set
        grown by a file, and the ones that commit replaced), so the other partitions
        are not listed again."""
        from .dataset import Dataset
        from .pipelines import store

        if not self.root.is_dir():
            return
        if added is not None and self._seen and all(added):
            now = dict(self._seen)
            for c in removed:
                now.pop(c, None)
            now.update({c: store.fingerprint(self.root, c) for c in added})
            now = {c: fp for c, fp in now.items() if fp}  # (an empty one: gone)
        else:
            now = _partitions(self.root)
        gone = [c for c in self._seen if self._seen[c] != now.get(c)]
        new = [c for c in now if self._seen.get(c) != now[c]]
        if not gone and not new:
            self.refreshed_unix = time.time()
            return
        fresh: dict[str, Totals] = {}
        whole = [c for c in new if c not in self._kept]
        for c in new:
            if c in self._kept:
                t = self._read_parts(c)
                if t is None:
                    whole.append(c)
                else:
                    fresh[c] = t
        if whole:
            with Dataset(self.root, captures=whole) as ds:
                fresh.update(read_by_capture(ds))
            for c in whole:  # what a next file of this capture's set keeps
                self._kept[c] = (self._final_parts(c), None)
        for c in gone:
            if c not in now:
                self._kept.pop(c, None)
        totals = Totals()
        totals.add(self.totals)
        by_capture = dict(self.by_capture)
        for c in gone:
            old = by_capture.pop(c, None)
            if old is not None:
                totals.add(old, sign=-1)
        for c, t in fresh.items():
            by_capture[c] = t
            totals.add(t)
        totals.last_packet_ns = max((t.last_packet_ns for t in by_capture.values()
                                     if t.last_packet_ns is not None), default=None)
        with self._lock:
            self.totals, self.by_capture, self._seen = totals, by_capture, now
            self.refreshed_unix = time.time()

    def compacted(self, capture_id: str, changes: Iterable[Any]) -> None:
        """A compaction merged final parts of ``capture_id`` already read (``changes``:
        ``pipelines.compact.Change``s, of parts of commands up to the last read: a
        resumed command compacts the set but its own parts): the same rows, so what was
        read of them stands; only the parts' count and digest follow. Parts of a later
        command, or a capture not followed by parts: read again as usual."""
        kept = self._kept.get(capture_id)
        if kept is None:
            return
        before, acc = kept
        count, digest = before.count, before.digest
        for ch in changes:
            if ch.capture_id != capture_id or ch.table not in METRIC_TABLES:
                continue
            for sign, entries in ((-1, ch.removed), (1, ch.added)):
                for name, ino in entries:
                    if _command(name) > before.upto:
                        return  # (not read yet)
                    count += sign
                    digest += sign * hash((f"{ch.table}/{name}", ino))
        self._kept[capture_id] = (ReadParts(before.upto, count, digest & _DIGEST_MASK), acc)

    def _entries(self, table: str, capture_id: str) -> Iterator[tuple[str, int]]:
        """(name, inode) of a table's parts of a capture, one at a time, from the
        directory's entries (no ``stat`` and no path object per part)."""
        import os

        from .pipelines import store

        try:
            with os.scandir(store.partition_dir(self.root, table, capture_id)) as it:
                for e in it:
                    if e.name.endswith(".parquet"):
                        yield e.name, e.inode()
        except FileNotFoundError:
            return

    def _list(self, capture_id: str, upto: int, names_after: int | None = None) -> Listing:
        return list_parts({t: self._entries(t, capture_id) for t in METRIC_TABLES},
                          upto, names_after)

    def _final_parts(self, capture_id: str) -> ReadParts:
        return self._list(capture_id, -1, names_after=1 << 62).every

    def _read_parts(self, capture_id: str) -> Totals | None:
        """The totals of a capture read before whose final parts are all still there
        (a rotation's set resumed by a file): the final parts added since are read and
        added to what the earlier ones gave, the provisional ones (``part-t*``, written
        again by every command) read again; None when a final part went (the capture
        was replaced: read it whole)."""
        from .dataset import Dataset
        from .pipelines import store

        before, acc = self._kept[capture_id]
        # (the first time apart: the final parts read so far, once)
        listing = self._list(capture_id, before.upto,
                             names_after=before.upto if acc is not None else -1)
        if (listing.before.count, listing.before.digest) != (before.count, before.digest):
            return None
        totals = Totals()
        if acc is not None:
            totals.add(acc)
        if any(listing.added.values()):
            files = {t: [store.partition_dir(self.root, t, capture_id) / n for n in names]
                     for t, names in listing.added.items()}
            with Dataset.of_capture(files, capture_id, internal=False) as ds:
                for t in read_by_capture(ds).values():
                    totals.add(t)
        acc = Totals()
        acc.add(totals)
        self._kept[capture_id] = (listing.every, acc)
        if any(listing.tail.values()):
            tail = {t: [store.partition_dir(self.root, t, capture_id) / n for n in names]
                    for t, names in listing.tail.items()}
            with Dataset.of_capture(tail, capture_id, internal=False) as ds:
                for t in read_by_capture(ds).values():
                    totals.add(t)
        totals.captures = 1
        return totals

    def families(self) -> Iterator[Any]:
        """The metric families (prometheus_client objects) of the current totals."""
        require_prometheus()  # one line saying what to install, not an ImportError
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            t = self.totals
        hist = HistogramMetricFamily(
            f"{PREFIX}_order_ack_latency_seconds",
            "Order-to-ack latency on the wire (latency table, leg ack)",
            labels=["venue", "endpoint", "kind"])
        for (venue, endpoint, kind), row in sorted(t.latency.items()):
            cum, buckets = 0, []
            for bound, n in zip((*BUCKETS_NS, None), row[:-1], strict=True):
                cum += n
                buckets.append(("+Inf" if bound is None else _le(bound), cum))
            hist.add_metric([venue, endpoint, kind], buckets, row[-1] / 1e9)
        yield hist
        for name, (doc, labels) in COUNTERS.items():
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))
            for key, n in sorted(t.counters.get(name, {}).items()):
                c.add_metric(list(key), n)
            yield c
        c = CounterMetricFamily(f"{PREFIX}_files_ingested", "Capture files in the dataset "
                                "(captures table rows)")
        c.add_metric([], t.files)
        yield c
        g = GaugeMetricFamily(f"{PREFIX}_captures", "Captures in the dataset (capture ids)")
        g.add_metric([], t.captures)
        yield g
        if t.last_packet_ns is not None:
            g = GaugeMetricFamily(f"{PREFIX}_last_packet_timestamp_seconds",
                                  "Time of the newest packet ingested (Unix seconds)")
            g.add_metric([], t.last_packet_ns / 1e9)
            yield g
            g = GaugeMetricFamily(f"{PREFIX}_lag_seconds", "Now minus the newest packet "
                                  "ingested: how far the dataset is behind the wire")
            g.add_metric([], max(0.0, time.time() - t.last_packet_ns / 1e9))
            yield g
        if self.live is not None:
            g = GaugeMetricFamily(f"{PREFIX}_watch_files_behind",
                                  "Complete capture files waiting to be ingested")
            g.add_metric([], self.live.files_behind)
            yield g
            c = CounterMetricFamily(f"{PREFIX}_watch_files_ingested",
                                    "Files this watch process ingested")
            c.add_metric([], self.live.files_ingested_run)
            yield c
            c = CounterMetricFamily(f"{PREFIX}_watch_files_lost",
                                    "Files the recording overwrote or deleted before this "
                                    "watch ingested them")
            c.add_metric([], self.live.files_lost)
            yield c

    def collect(self) -> Iterator[Any]:  # the prometheus_client Collector protocol
        yield from self.families()


def _le(bound_ns: int) -> str:
    """A bucket bound in seconds as Prometheus writes it (``0.00005``, ``2.5``)."""
    return repr(bound_ns / 1e9)


class Server:
    """An OpenMetrics/Prometheus endpoint over ``DatasetMetrics`` (``/metrics``)."""

    def __init__(self, metrics: DatasetMetrics, port: int, addr: str = "0.0.0.0",
                 refresh_on_scrape: bool = False) -> None:
        pc = require_prometheus()
        self.metrics = metrics
        registry = pc.CollectorRegistry(auto_describe=False)
        outer = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                if refresh_on_scrape:
                    # a scrape that fails to read (a file replaced under it): the last totals
                    with contextlib.suppress(Exception):
                        outer.metrics.refresh()
                yield from outer.metrics.families()

        registry.register(_Collector())
        try:
            self.httpd, self.thread = pc.start_http_server(port, addr=addr, registry=registry)
        except (OSError, OverflowError) as err:  # in use, no such address; out of range
            raise PcapflowError(f"metrics port {port}: {getattr(err, 'strerror', None) or err}"
                                ) from err
        self.port = self.httpd.server_port

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
