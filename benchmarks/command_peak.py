"""The peak of Python memory each resumed command of a rotation allocates (tracemalloc),
against the set's size: what a command does per file already in the set.

    python benchmarks/command_peak.py FILES [PACKETS]   # one JSON line per file

One process ingests ``watch_rotation.py``'s one-second files of PACKETS packets (2,000)
one command each, as ``pcapflow watch`` does; per command: the traced peak over what
was live before it (``peak_mb``), what is live after it (``live_mb``), its CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from watch_rotation import START_NS, rotate_in

    import pcapflow

    files = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    tmp = Path(tempfile.mkdtemp(prefix="pcf-peak-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    end = 0
    tracemalloc.start(1)
    for k in range(files):
        end = int(rotate_in(d, k, n, n, 1.0, START_NS, end, 3).cols["t"].max())
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        c0 = time.process_time()
        pcapflow.ingest([[str(d / f"rot-{k:06d}.pcap")]], data=root)
        cur, peak = tracemalloc.get_traced_memory()
        print(json.dumps({"file": k, "peak_mb": round((peak - base) / 1e6, 3),
                          "live_mb": round(cur / 1e6, 3),
                          "cpu_s": round(time.process_time() - c0, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
