"""Peak RSS of ``pcapflow ingest`` on captures of several sizes: is memory flat?

How this works: each capture (``FILE`` or ``FILE:KEYLOG``) is ingested by the
installed ``pcapflow`` script into a fresh dataset, with ``--workers 1`` and
``--workers auto``, for ``--rounds`` rounds (round robin, so a busy moment of a
shared machine hits all alike). Peak RSS is the child's ``ru_maxrss`` from
``wait4``: the largest of the process and its waited-for children (a worker of a
sharded ingest counts on its own, not summed), CPU its user + system time.
One JSON line per run on stdout; ``--json`` writes them all.

    python benchmarks/peak_rss.py /tmp/bench.pcap /tmp/bench3m.pcap \\
        /tmp/ws.pcap:/tmp/ws.keylog --json results/rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("captures", nargs="+", help="FILE or FILE:KEYLOG")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pcapflow", default=str(Path(sys.executable).parent / "pcapflow"))
    ap.add_argument("--json", help="write every run here")
    a = ap.parse_args(argv)
    cases = [tuple(c.split(":", 1)) if ":" in c else (c, "") for c in a.captures]
    runs = []
    for _ in range(a.rounds):
        for cap, key in cases:
            for workers in ("1", "auto"):
                data = tempfile.mkdtemp(prefix="pcapflow-rss-")
                cmd = [a.pcapflow, "ingest", cap, "--workers", workers, "--data", data,
                       *(["--keylog", key] if key else [])]
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                _, status, ru = os.wait4(p.pid, 0)
                err = p.stderr.read().decode(errors="replace")[-300:] if p.stderr else ""
                run = {"capture": os.path.basename(cap), "size_mb": os.path.getsize(cap) / 1e6,
                       "workers": workers, "rc": os.waitstatus_to_exitcode(status),
                       "rss_mb": ru.ru_maxrss / 1024, "cpu": ru.ru_utime + ru.ru_stime,
                       "wall": time.perf_counter() - t0, "load": load}
                if run["rc"]:
                    run["stderr"] = err
                print(json.dumps(run), flush=True)
                runs.append(run)
                shutil.rmtree(data, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
