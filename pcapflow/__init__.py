"""pcapflow: order-to-ack latency of trading traffic, measured on the wire.

    import pcapflow
    pcapflow.ingest(["capture.pcap"], keylog=["keys.log"], data="pcapflow_data")
    ds = pcapflow.open("pcapflow_data")
    ds.sql("SELECT * FROM flows").df()

The heavy pieces (DuckDB, Numba kernels) load on first use, so importing
``pcapflow.parsers`` alone stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Dataset", "__version__", "ingest", "open"]

TYPE_CHECKING = False  # not `from typing import ...`: a console script starts faster
if TYPE_CHECKING:
    from .api import ingest
    from .dataset import Dataset, open


def __getattr__(name: str) -> object:
    if name == "ingest":
        from .api import ingest

        return ingest
    if name in ("Dataset", "open"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'pcapflow' has no attribute {name!r}")
