"""What resuming costs a rotation's k-th command, against a fresh ingest of the same file.

    python benchmarks/resume_overhead.py --files 60 --rotate-s 1 --pps 50000 --every 10 \\
        --json benchmarks/results/resume_overhead.json

The files are ``rotation_per_command.py``'s (``make_capture.py`` traffic, ``pps *
rotate_s`` packets each, one after the other in time, named as a rotation's). Each
is ingested by its own ``pcapflow.ingest`` call in this warm process, resuming the
set (as ``pcapflow watch`` does). Every ``--every`` calls the same file is then
ingested again, twice, into datasets of its own: ``fresh`` (a rotation's first
file: it keeps resume state) and ``fresh_nostate`` (``resume=False``: a capture of
its own). Per call: CPU seconds of this process (``time.process_time``) and the
named steps inside it (``STEPS``, always: the resume machinery, the state's save,
the ``flows`` rows, the derive's state, the matcher and its carry, the venues the
dataset knows, the commit), so what grows with k shows by name.
``slope_*``: least-squares CPU seconds per file already in the set, over the calls
after the first ``--skip``; ``ratio``: the resumed call over the fresh one, per
sampled k.

``--at K --dir DIR`` (one file, alternated between two checkouts): the rotation's
files are read from ``DIR`` (written there first if absent: ``rot-*.pcap``); the
process warms on two small files, ingests files ``0..K-1`` once into
``DIR/set-LABEL`` (not timed; kept for the next run with the same ``--label``: a
set made by that checkout's code), then ``--repeat`` times ingests file ``K``
resumed onto a copy of that set, fresh and fresh without state, and prints one
JSON line per round (CPU seconds and steps of each). Run it with each checkout's
Python in turn:

    for i in 1 2 3; do for v in main resume15c; do
      nice -n 10 /work/venv-$v/bin/python benchmarks/resume_overhead.py --at 2 \\
          --dir /tmp/r60 --rotate-s 60 --label $v --json-lines /tmp/r60.jsonl; done; done

(``--rotate-s 60 --pps 50000``: files of 3M packets, written by the first run.)
``--link`` copies the set as hard links (its files keep their inodes, as in a watched
dataset; with a copy the set's ``FlowsIndex`` is never usable, ``resume.old_flows``).
``--order alternate`` runs the fresh ingest of file K before the resumed one in odd
rounds (the default, ``resumed-first``, as before: the resumed ingest first in every
round, so what the first ingest after the set's copy pays fell on it alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402
from rotation_per_command import _timer, slope  # noqa: E402

STEPS = (
    # (module, attribute, name): CPU seconds spent inside, per call
    ("pcapflow.pipelines.ingest.resume", "find", "find"),
    ("pcapflow.pipelines.ingest.resume", "carry", "carry"),
    ("pcapflow.pipelines.ingest.resume", "carry_candidates", "carry"),
    ("pcapflow.pipelines.ingest.resume", "old_flows", "old_flows"),
    ("pcapflow.pipelines.ingest.resume", "snapshot", "snapshot"),
    ("pcapflow.pipelines.ingest.resume", "restore", "restore"),
    ("pcapflow.pipelines.ingest.resume.Previous", "load", "load"),
    ("pcapflow.pipelines.ingest.flow_rows.FlowRows", "finish", "flows_finish"),
    ("pcapflow.venues", "match_tables", "match"),
    ("pcapflow.why", "derive_staged", "derive"),
    ("pcapflow.why_carry.Plan", "of", "derive_plan"),
    ("pcapflow.why_carry", "save", "derive_save"),
    ("pcapflow.why_carry", "check", "derive_check"),
    ("pcapflow.why_carry", "flows_of", "derive_flows_of"),
    ("pcapflow.pipelines.store.Staging", "commit", "commit"),
    ("pcapflow.pipelines.ingest.driver", "_keep_state", "keep_state"),
    ("pcapflow.pipelines.match_carry", "match", "match_carry"),
    ("pcapflow.pipelines.match", "flow_rules", "flow_rules"),
    ("pcapflow.venues", "known_addresses", "known_addresses"),
    # the rest of a resumed command's bookkeeping (session 18)
    ("pcapflow.pipelines.store", "fingerprint", "fingerprint"),
    ("pcapflow.pipelines.store", "_captures_with", "captures_with"),
    ("pcapflow.pipelines.store.Staging", "_fsync_all", "fsync_staged"),
    ("pcapflow.pipelines.store", "_apply", "commit_moves"),
    ("pcapflow.pipelines.ingest.driver", "_set_captures", "set_captures"),
    ("pcapflow.pipelines.ingest.driver", "_stable_before", "stable_before"),
    ("pcapflow.pipelines.ingest.resume", "keep_flows", "keep_flows"),
    ("pcapflow.pipelines.ingest.resume", "carried_flows", "carried_flows"),
    ("pcapflow.pipelines.ingest.known", "stage", "known_stage"),
    # a resumed command's compaction of the set's earlier parts (issue 19, session 21):
    # at 1M-packet files it merges 8 parts of a tier every 8th command
    ("pcapflow.pipelines.compact", "after_ingest", "compact"),
)


def _instrument(spent: dict[str, float]) -> list[str]:
    import importlib

    names = []
    for mod, attr, name in STEPS:
        owner: Any
        try:
            owner = importlib.import_module(mod)
        except ImportError:  # a class in a module
            m, _, cls = mod.rpartition(".")
            try:
                owner = getattr(importlib.import_module(m), cls)
            except (ImportError, AttributeError):
                continue
        fn = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if fn is None:
            continue  # (a step the code under test does not have)
        if isinstance(fn, classmethod):
            inner = fn.__func__
            setattr(owner, attr, classmethod(
                lambda cls, *a, _f=inner, _n=name, **k: _timer(
                    spent, _n, lambda: _f(cls, *a, **k))()))
        else:
            setattr(owner, attr, _timer(spent, name, fn))
        names.append(name)
    return sorted(set(names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--rotate-s", type=float, default=1.0)
    ap.add_argument("--pps", type=int, default=50_000)
    ap.add_argument("--every", type=int, default=10, help="fresh ingests every N calls")
    ap.add_argument("--skip", type=int, default=2, help="calls left out of the slope")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default=None)
    ap.add_argument("--at", type=int, default=None, help="time file K only (see above)")
    ap.add_argument("--dir", default=None, help="the rotation's files (--at)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of --at in this process")
    ap.add_argument("--json-lines", default=None, help="--at: append each round here")
    ap.add_argument("--answered", action="store_true",
                    help="--at: the files are make_capture.py --answered traffic (every "
                    "FIX order gets its reply; written into --dir if absent)")
    ap.add_argument("--order", choices=("resumed-first", "fresh-first", "alternate"),
                    default="resumed-first",
                    help="--at: which ingest of file K runs first in a round (alternate: "
                    "resumed first in even rounds, fresh first in odd ones)")
    ap.add_argument("--link", action="store_true",
                    help="--at: copy the set as hard links (the same inodes, as in the dataset "
                    "a watch keeps: the set's FlowsIndex is usable; a copy gives every part "
                    "a new inode, so each resumed ingest read every flows part)")
    ap.add_argument("--no-nostate", action="store_true",
                    help="--at: no third ingest without resume state (a round's time: two "
                    "ingests, not three)")
    a = ap.parse_args(argv)
    if a.at is not None:
        return _at(a)

    from watch_rotation import write_rotation

    import pcapflow

    spent: dict[str, float] = {}
    names = _instrument(spent)
    tmp = Path(tempfile.mkdtemp(prefix="pcf-resov-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    files = write_rotation(d, a.files, a.pps, a.rotate_s)  # first: writing is not timed
    for f in files[:2]:  # Numba kernels loaded, the resume path's too
        pcapflow.ingest([[str(f)]], data=tmp / "warm")

    def timed(f: Path, data: Path, **kw: Any) -> tuple[float, dict[str, float], Any]:
        spent.clear()
        c0 = time.process_time()
        r = pcapflow.ingest([[str(f)]], data=data, **kw)[0]
        return time.process_time() - c0, dict(spent), r

    rows = []
    for k, f in enumerate(files):
        cpu, steps, r = timed(f, root)
        assert k == 0 or r.resumed_from is not None, (k, r)
        row: dict[str, Any] = {"k": k, "cpu_s": round(cpu, 4),
                               **{s: round(steps.get(s, 0.0), 4) for s in names},
                               "rss_mb": round(rss_mb(), 1)}
        if k and k % a.every == 0:
            for label, kw in (("fresh", {}), ("fresh_nostate", {"resume": False})):
                fd = tmp / f"fresh-{k}"
                c, st, _ = timed(f, fd, **kw)
                row[f"{label}_s"] = round(c, 4)
                row[f"{label}_steps"] = {s: round(v, 4) for s, v in st.items()}
                shutil.rmtree(fd)
            row["ratio"] = round(cpu / row["fresh_s"], 3)
            row["ratio_nostate"] = round(cpu / row["fresh_nostate_s"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    tail = rows[a.skip:]
    ks = [float(r["k"]) for r in tail]
    res: dict[str, Any] = {"label": a.label, "files": a.files, "rotate_s": a.rotate_s,
                           "pps": a.pps, "load_avg_at_end": os.getloadavg()}
    for col in ("cpu_s", *names, "rss_mb"):
        b0, b1 = slope(ks, [float(r.get(col, 0.0)) for r in tail])
        res[f"slope_{col}"] = {"intercept": round(b0, 4), "per_file": round(b1, 5)}
    sampled = [r for r in rows if "ratio" in r]
    res["ratios"] = {r["k"]: [r["ratio"], r["ratio_nostate"]] for r in sampled}
    res["per_call"] = rows
    print(json.dumps({k: v for k, v in res.items() if k != "per_call"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _at(a: argparse.Namespace) -> int:
    """``--at K``: file K resumed, fresh and fresh without state (module docstring)."""
    from watch_rotation import write_rotation

    import pcapflow

    assert a.dir and a.label, "--at needs --dir and --label"
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    files = sorted(d.glob("rot-*.pcap"))
    if len(files) < a.at + 1:
        files = write_rotation(d, a.at + 1, a.pps, a.rotate_s, answered=a.answered)
    warm = d / "warm"
    if not warm.is_dir():
        warm.mkdir()
        write_rotation(warm, 2, 50_000, 1.0)
    spent: dict[str, float] = {}
    _instrument(spent)
    tmp = Path(tempfile.mkdtemp(prefix="pcf-resov-", dir=d))
    try:
        for f in sorted(warm.glob("rot-*.pcap")):  # Numba kernels, the resume path's
            pcapflow.ingest([[str(f)]], data=tmp / "warm")
        base = d / f"set-{a.label}"
        if not base.is_dir():
            part = d / f".set-{a.label}.tmp"
            shutil.rmtree(part, ignore_errors=True)
            for f in files[: a.at]:
                pcapflow.ingest([[str(f)]], data=part)
            part.rename(base)

        def timed(data: Path, **kw: Any) -> dict[str, Any]:
            spent.clear()
            c0 = time.process_time()
            r = pcapflow.ingest([[str(files[a.at])]], data=data, **kw)[0]
            cpu = time.process_time() - c0
            return {"cpu_s": round(cpu, 4), "resumed": r.resumed_from is not None,
                    "steps": {s: round(v, 4) for s, v in sorted(spent.items())}}

        for rnd in range(a.repeat):
            first = ("fresh" if a.order == "fresh-first"
                     or (a.order == "alternate" and rnd % 2) else "resumed")
            row: dict[str, Any] = {"label": a.label, "k": a.at, "file": str(files[a.at]),
                                   "load_avg_1min": os.getloadavg()[0], "first": first}
            # (the commit replaces files, never writes one in place: links are safe)
            shutil.copytree(base, tmp / "set", copy_function=os.link if a.link else shutil.copy2)
            if first == "fresh":
                row["fresh"] = timed(tmp / "fresh")
            row["resumed"] = timed(tmp / "set")
            assert row["resumed"]["resumed"], row
            if first == "resumed":
                row["fresh"] = timed(tmp / "fresh")
            if not a.no_nostate:
                row["nostate"] = timed(tmp / "nostate", resume=False)
            for x in ("set", "fresh", "nostate"):
                shutil.rmtree(tmp / x, ignore_errors=True)
            row["ratio"] = round(row["resumed"]["cpu_s"] / row["fresh"]["cpu_s"], 3)
            if not a.no_nostate:
                row["ratio_nostate"] = round(row["resumed"]["cpu_s"] / row["nostate"]["cpu_s"],
                                             3)
            line = json.dumps(row)
            print(line, flush=True)
            if a.json_lines:
                with open(a.json_lines, "a") as fh:
                    fh.write(line + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
