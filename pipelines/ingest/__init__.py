"""One capture's ingest, one module per job (the data flows down this list):

- ``driver``: reads the capture in chunks and drives the stages below; commits.
- ``packet_rows``: per-packet rows (``tcp_events``, decode ``anomalies``, ``packets``).
- ``app_layer``: reassembly and the protocol sessions (the registry's), message rows.
- ``flow_rows``: the ``flows`` table, and the matcher's run at the end.
- ``shards``: several processes on one capture (flow ownership, pipes).
- ``resume``: a rotation's next file, ingested by a later command, resumes the
  connections the previous one left open (their state kept with the dataset).
"""

from .driver import (
    AppFactory,
    IngestResult,
    ProgressFn,
    can_shard,
    ingest_capture,
    stage_capture,
)
from .shards import Shard

__all__ = ["AppFactory", "IngestResult", "ProgressFn", "Shard", "can_shard", "ingest_capture",
           "stage_capture"]
