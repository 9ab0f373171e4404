"""A watched set's compaction replayed over its parts: per file, the parts of that
file's command are linked into a new dataset (hard links) and the set compacted as the
command's end would (``compact.after_ingest``: tiers, the command's own parts left out);
CPU of each compaction and the parts per table after it.

    python benchmarks/compact_replay.py OUT DS:CAPTURE[:OFFSET] ... [--every 100]

Each source is a dataset's capture (a rotation's set, one part per file per table);
several sources are one set, their commands numbered on (``OFFSET``: added to the
source's ``part-f<k>-`` numbers). ``OUT`` (new) ends as the whole set, compacted; a
JSON line per ``--every`` files and one at the end. The state (``FlowsIndex``) is not
replayed: each compaction rewrites it besides (a few ms: read and write its Arrow files).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path


def _k(name: str) -> int:
    m = re.match(r"part-f(\d+)-", name)
    return int(m.group(1)) if m else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--capture", default="replayed")
    ap.add_argument("--no-compact", action="store_true",
                    help="link the parts only (the set as a watch without compaction left it)")
    a = ap.parse_args(argv)
    from pcapflow.pipelines import compact, store
    from pcapflow.pipelines.ingest import known, resume  # noqa: F401  (as an ingest has)

    out = Path(a.out)
    out.mkdir(parents=True)
    by_k: dict[int, list[tuple[str, Path]]] = {}
    tails: list[tuple[str, Path, int]] = []
    for i, src in enumerate(a.sources):
        ds, cid, *rest = src.split(":")
        off = int(rest[0]) if rest else 0
        for tdir in sorted(Path(ds).iterdir()):
            if tdir.name.startswith((".", "_")) or not tdir.is_dir():
                continue
            part = tdir / f"capture_id={cid}"
            if not part.is_dir():
                continue
            for f in part.glob("*.parquet"):
                if f.name.startswith("part-t"):  # (provisional: linked at the end)
                    tails.append((tdir.name, f, i))
                    continue
                by_k.setdefault(_k(f.name) + off, []).append((tdir.name, f))
    cpu_all = cpu_max = 0.0
    rows = 0
    for k in sorted(by_k):
        for table, f in by_k[k]:
            d = store.partition_dir(out, table, a.capture)
            d.mkdir(parents=True, exist_ok=True)
            name = f.name if not k else re.sub(r"^part-(?:f\d+-)?", f"part-f{k}-", f.name)
            os.link(f, d / name)
        if k == max(by_k):  # (the provisional parts: each source's, as its set left them)
            for table, f, i in tails:
                d = store.partition_dir(out, table, a.capture)
                d.mkdir(parents=True, exist_ok=True)
                os.link(f, d / f"part-t{i}-{f.name}")
        c0 = time.process_time()
        changes = [] if a.no_compact else compact.compact_capture(out, a.capture,
                                                                  exclude_newest=True)
        cpu = time.process_time() - c0
        cpu_all += cpu
        cpu_max = max(cpu_max, cpu)
        rows += 1
        if rows % a.every == 0 or k == max(by_k):
            counts = compact.partition_counts(out, a.capture)
            print(json.dumps({"files": rows, "cpu_s": round(cpu, 4),
                              "cpu_s_mean": round(cpu_all / rows, 5),
                              "cpu_s_max": round(cpu_max, 4),
                              "merged_now": sum(len(c.removed) for c in changes),
                              "parts": counts, "max_parts": max(counts.values())}),
                  flush=True)
    print(json.dumps({"files": rows, "compact_cpu_s_total": round(cpu_all, 3),
                      "stats": compact.STATS}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
