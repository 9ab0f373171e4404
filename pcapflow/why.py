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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from .pipelines.tables.schemas import TABLES, without_capture_id

if TYPE_CHECKING:
    from .pipelines.match import MatchOutput

DERIVED = ("causes", "feed_gaps", "alerts")
"""Tables ``derive`` makes, in the order it makes them."""
LATENCY_ALERTS = ("latency_shift", "p99_high")
"""Alert kinds read from ``latency`` rows only."""


def _cast(table: pa.Table, name: str) -> pa.Table:
    """``table`` with the columns of ``name`` as written (no capture_id), in order."""
    schema = without_capture_id(TABLES[name])
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def derive(files: Mapping[str, Sequence[Path]], capture_id: str,
           tables: Mapping[str, pa.Table]) -> dict[str, pa.Table]:
    """``causes``, ``feed_gaps`` and ``alerts`` of one capture, from its Parquet ``files``
    per table and the ``tables`` given as Arrow (the matcher's outputs, the flows)."""
    from . import alerts, causes, feed
    from .dataset import Dataset

    latency = tables.get("latency")
    # no latency rows: no causes (each explains an order) and no latency alerts, so
    # their SQL is not run (what every plain-TCP capture would pay)
    orders = latency is None or latency.num_rows > 0
    kinds = tuple(k for k in alerts.DETECTORS if orders or k not in LATENCY_ALERTS)
    with Dataset.of_capture(files, capture_id, tables) as view:
        out = {"causes": _cast(causes.compute(view), "causes") if orders else
               without_capture_id(TABLES["causes"]).empty_table()}
        messages = feed.stage_messages(view)  # each market-data payload parsed once
        gaps = feed.gaps_table(view, messages=messages)
        out["feed_gaps"] = _cast(gaps, "feed_gaps")
        out["alerts"] = _cast(alerts.find(view, alerts.Settings(), kinds, gaps=gaps,
                                          messages=messages), "alerts")
    return out


def staged_files(stage_dir: Path) -> dict[str, list[Path]]:
    """The Parquet parts of each table in an ingest's staging directory."""
    return {t: sorted((stage_dir / t).glob("*.parquet")) for t in TABLES}


def derive_staged(stage_dir: Path, capture_id: str, flows: pa.Table,
                  matched: MatchOutput) -> dict[str, pa.Table]:
    """``derive`` at the end of an ingest: the staged tables, the flows the matcher
    was given (with its venues) besides those already staged, and its outputs."""
    import pyarrow.parquet as pq

    from .pipelines.tables.rows import with_venues

    files = staged_files(stage_dir)
    schema = without_capture_id(TABLES["flows"])
    staged = [pq.read_table(p, schema=schema) for p in files.pop("flows")]
    all_flows = pa.concat_tables([schema.empty_table(), *staged, with_venues(
        flows.select(schema.names), matched.flow_venue, matched.flow_venue_source)])
    return derive(files, capture_id, {**matched.tables, "flows": all_flows})
