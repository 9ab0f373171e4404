"""pcapflow: order-to-ack latency of trading traffic, measured on the wire.

    import pcapflow
    pcapflow.ingest(["capture.pcap"], keylog=["keys.log"], data="pcapflow_data")
    ds = pcapflow.open("pcapflow_data")
    ds                                   # what it holds: captures, flows, orders, venues
    ds.latency("binance", endpoint="order.place", since="2026-11-23")   # pandas, ns times
    ds.percentiles(by="endpoint")        # p50/p90/p99/p99.9 per group, in µs
    before.compare(after, by="endpoint") # changes with bootstrap CIs and a verdict per group
    ds.sql("SELECT * FROM flows").df()   # any DuckDB SQL over the tables

The API:

- ``ingest(paths, keylog=, data=, venues=, workers=, ...)``: captures into a dataset;
- ``open(data)`` -> ``Dataset``: ``latency``, ``percentiles``, ``compare``, ``plot``,
  ``sql``, ``df``, ``table``;
- ``pcapflow.compare.compare(before, after, by=)``: before/after per group (what
  ``Dataset.compare`` and ``pcapflow compare`` run);
- ``pcapflow.verify.verify(capture, data)``: pcapflow's rows against Wireshark's
  dissection of the same frames (``pcapflow verify``; needs tshark and the ``verify``
  extra).

Tables and columns: docs/tables.md; venue maps: docs/venue-map.md. The heavy pieces
(DuckDB, Numba kernels) load on first use, so importing ``pcapflow.parsers`` alone
stays cheap.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Arrow's own allocator (mimalloc or jemalloc in pyarrow's wheels) keeps freed pages:
# a `pcapflow watch` process grew 10-20 MB per rotation file with it; with the system
# allocator, at the same CPU, it stays flat on 500,000-packet files and grows half as
# much on 3M-packet ones (benchmarks/README.md, "Arrow's allocator"; watch_memory.py).
# Arrow's C++ reads the variable once, when pyarrow is first imported:
# a process that imports pyarrow before pcapflow keeps Arrow's allocator
# (`pyarrow.set_memory_pool` would change only what Python asks for, not the Parquet
# reader's and writer's buffers); a user's own setting wins.
_os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__all__ = ["Dataset", "__version__", "ingest", "open"]

TYPE_CHECKING = False  # not `from typing import ...`: a console script starts faster
if TYPE_CHECKING:
    from .api import ingest
    from .dataset import Dataset, open

# name -> (module, attribute): loaded on first use
_LAZY = {"ingest": ("api", "ingest"), "Dataset": ("dataset", "Dataset"),
         "open": ("dataset", "open")}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    raise AttributeError(f"module 'pcapflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (``help(pcapflow)`` lists it, loading it on the way)."""
    return sorted({*globals(), *_LAZY})
