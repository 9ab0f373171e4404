"""Capture clock steps (parsers/capture/clock.py) against tshark's reading of the times.

Every capture of the public corpus is read by pcapflow's reader, which flags each
packet stamped more than 10 ms before the latest earlier packet (and not right
after another such packet); tshark prints every frame's time, from which the
same rule is applied here in plain Python. The packet indexes must be the same.
Several real captures have such steps (a packet stamped in 1970 after packets of
2018, a capture clock set back by 47 s); the rest must have none.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from helpers.paths import PUBLIC
from helpers.tshark_util import corpus_fields
from pcapflow.parsers.capture.capset import open_set
from pcapflow.parsers.capture.clock import STEP_BACK_NS

SUFFIXES = {".pcap", ".pcapng", ".cap", ".gz", ".zst"}
pytestmark = [
    pytest.mark.skipif(PUBLIC is None or not PUBLIC.is_dir(), reason="no public captures"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
]


def _ours(path: str) -> list[int]:
    found = []
    with open_set([path], hash=False) as reader:
        for chunk in reader:
            found += [int(a.detail.split()[1]) for a in chunk.anomalies
                      if a.code == "clock_step_back"]
    return found


def _tsharks(path: str, cache: Path) -> list[int] | None:
    # frame.time_epoch, first of the fields the corpus tests share one tshark run for
    rows = corpus_fields(path, cache)
    if rows is None:
        return None  # a file tshark cannot read whole: not this test's oracle
    times = [r[0] for r in rows]
    if any(len(t.partition(".")[2]) > 9 for t in times):
        return None  # a sub-second field out of range (timestamp_invalid_*): read apart
    steps, latest, prev_back = [], None, False
    for i, text in enumerate(times):
        t = int(Decimal(text) * 10**9)
        back = latest is not None and latest - t > STEP_BACK_NS
        if back and not prev_back:
            steps.append(i)
        prev_back = back
        latest = t if latest is None else max(latest, t)
    return steps


def test_steps_back_are_where_tshark_sees_them(tshark_cache: Path) -> None:
    assert PUBLIC is not None
    caps = sorted(str(p) for p in PUBLIC.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    compared, with_steps = 0, 0
    for path in caps:
        want = _tsharks(path, tshark_cache)
        if want is None:
            continue
        try:
            got = _ours(path)
        except Exception:  # unreadable for pcapflow too: other tests cover those files
            continue
        assert got == want, path
        compared += 1
        with_steps += bool(got)
    print(f"{compared} captures compared, {with_steps} with clock steps back")
    assert compared >= 200 and with_steps >= 3
