"""A long ``watch_memory.py`` run's dataset at file K, and what a fresh worker's commands
cost on it: one checkout against another on the same set (issue 19, session 17).

    python benchmarks/watch_snapshot_ab.py RUN_TMP OUT [COMMANDS]   # RUN_TMP: its pcf-watchmem-*

The first call copies ``RUN_TMP/ds`` under the dataset's lock as hard links (the same
inodes: a copy would change them, and a set's ``FlowsIndex`` would then read every part)
into ``OUT/ds``, points the set's state at ``OUT/rot`` and writes the rotation's next
files there (``watch_rotation.rotate_in``, 20,000 packets a second). Each call then makes
``OUT/ds_run`` anew from it (hard links again: nothing writes a part in place) and, in
this process, as a ``pcapflow watch`` worker does, ingests the next ``COMMANDS`` + 1
files one command each with the status's reads and ``malloc_trim`` after each: per
command its CPU seconds and the RSS after it (the first: a fresh worker's first). Run it
with each checkout's Python in turn. Then ``known_addresses`` in a fresh process of the
copy (imports done before): its CPU and RSS, cold and warm.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402


def main() -> int:
    import pyarrow.compute
    import pyarrow.ipc
    import pyarrow.parquet  # noqa: F401
    from pcapflow.pipelines import store
    from pcapflow.pipelines.ingest import driver, resume
    from watch_rotation import START_NS, rotate_in

    from pcapflow import venues, watch

    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    commands = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    state = None
    if not (out / "ds").exists():
        out.mkdir(parents=True, exist_ok=True)
        with store.locked(run / "ds"):
            subprocess.run(["cp", "-al", str(run / "ds"), str(out / "ds")], check=True)
        state = next((out / "ds" / "_state").glob("capture_id=*/state.bin"))
        header, body = resume._read(state, body=True)
        head = json.dumps(header).replace(str(run / "rot"), str(out / "rot")).encode()
        tmp = state.with_name("state.tmp")  # (a new file: the link is the run's)
        tmp.write_bytes(resume.MAGIC + resume._HEADER.pack(len(head)) + head + body)
        os.replace(tmp, state)
    state = next((out / "ds" / "_state").glob("capture_id=*/state.bin"))
    header, _ = resume._read(state, body=True)
    n, end = int(header["n_files"]), int(header["last_files"][-1]["max_ts"])
    rot = out / "rot"
    rot.mkdir(exist_ok=True)
    for k in range(n, n + commands + 1):
        if not (rot / f"rot-{k:06d}.pcap").exists():
            end = int(rotate_in(rot, k, 20_000, 20_000, 1.0, START_NS, end, 1 << 30)
                      .cols["t"].max())
    root = out / "ds_run"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["cp", "-al", str(out / "ds"), str(root)], check=True)
    c0, r0 = time.process_time(), rss_mb()
    venues.known_addresses(root)
    c1, r1 = time.process_time(), rss_mb()
    venues.known_addresses(root)
    print(json.dumps({"known_addresses_cold_s": round(c1 - c0, 4),
                      "known_addresses_rss_mb": round(r1 - r0, 2),
                      "known_addresses_warm_s": round(time.process_time() - c1, 5)}))
    venues._KNOWN.clear()
    driver.SET_LISTS = False
    watch.ALLOCATOR.for_a_long_run()
    ingest = watch.watch_ingest(root, None, None, None)
    for k in range(n, n + commands + 1):
        path, started, c = str(rot / f"rot-{k:06d}.pcap"), time.time_ns(), time.process_time()
        watch.file_note(root, ingest(path), path, started)
        watch.ALLOCATOR.release()
        print(json.dumps({"file": k, "cpu_s": round(time.process_time() - c, 3),
                          "rss_mb": round(rss_mb(), 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
