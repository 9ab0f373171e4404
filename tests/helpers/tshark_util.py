"""Test helper: run tshark (the independent oracle) and read its per-frame fields.

How the corpus cache works: ``corpus_fields`` asks tshark, in one run per capture, for
every per-frame field the corpus-wide tests need (``CORPUS_FIELDS``: frame times for
``test_clock_steps``, stream and tcp.analysis flags for ``test_tcp_analysis``), and
keeps tshark's exit status and output in a directory shared by the test run's processes
(``tshark_cache`` in tests/conftest.py), keyed by the file's content and the command. A
tshark start costs ~0.25 s of CPU, mostly start-up, so two tests over 269 captures
each paid ~60 s for the same runs. A lock per key makes a second process wait for the
first one's run instead of starting its own; results are written to a temporary file
and renamed into place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TSHARK = shutil.which("tshark")
AGGREGATOR = "\x1e"  # joins several occurrences of a field (JSON text has commas)

ANALYSIS_FIELDS = {
    "retransmission": "tcp.analysis.retransmission",
    "fast_retransmission": "tcp.analysis.fast_retransmission",
    "spurious_retransmission": "tcp.analysis.spurious_retransmission",
    "out_of_order": "tcp.analysis.out_of_order",
    "duplicate_ack": "tcp.analysis.duplicate_ack",
    "gap": "tcp.analysis.lost_segment",
    "acked_unseen": "tcp.analysis.ack_lost_segment",
    "keepalive": "tcp.analysis.keep_alive",
    "keepalive_ack": "tcp.analysis.keep_alive_ack",
    "zero_window": "tcp.analysis.zero_window",
    "zero_window_probe": "tcp.analysis.zero_window_probe",
    "window_update": "tcp.analysis.window_update",
    "window_full": "tcp.analysis.window_full",
}


CORPUS_FIELDS = ["frame.time_epoch", "tcp.stream", *ANALYSIS_FIELDS.values()]
"""Per-frame fields of ``corpus_fields``, in this order."""
CORPUS_OPTIONS = ["tcp.reassemble_out_of_order:FALSE"]  # only tcp.analysis depends on it


def need_tshark() -> str:
    if TSHARK is None:
        pytest.skip("tshark not installed")
    return TSHARK


def fields(path: str, names: list[str], *, display_filter: str | None = None,
           options: list[str] | None = None, every: bool = False,
           cache: Path | None = None) -> list[list[str]]:
    """One list of field values per frame (tab-separated tshark -T fields output).

    ``every``: all occurrences of a field in a frame, separated by ``AGGREGATOR``
    (several messages in one frame); otherwise only the first. ``cache``: see
    ``corpus_fields``.
    """
    cmd = [need_tshark(), "-n", "-r", path, "-T", "fields", "-E",
           "occurrence=a" if every else "occurrence=f", "-E", f"aggregator={AGGREGATOR}"]
    for o in options or []:
        cmd += ["-o", o]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in names:
        cmd += ["-e", f]
    code, out, err = _run(cmd, path, cache)
    if code != 0:
        raise RuntimeError(f"tshark failed: {err.strip()[:300]}")
    return _rows(out)


def corpus_fields(path: str, cache: Path | None) -> list[list[str]] | None:
    """``CORPUS_FIELDS`` of every frame of ``path`` (``fields`` with ``CORPUS_OPTIONS``),
    or None when tshark fails on the file (exit status not 0). ``cache``: the shared
    result directory (``tshark_cache`` fixture), None to run tshark every time."""
    cmd = [need_tshark(), "-n", "-r", path, "-T", "fields", "-E", "occurrence=f",
           "-E", f"aggregator={AGGREGATOR}"]
    for o in CORPUS_OPTIONS:
        cmd += ["-o", o]
    for f in CORPUS_FIELDS:
        cmd += ["-e", f]
    code, out, _ = _run(cmd, path, cache)
    return _rows(out) if code == 0 else None


def _rows(out: str) -> list[list[str]]:
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t") for line in lines]


def _run(cmd: list[str], path: str, cache: Path | None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``cmd``, which reads ``path``; from ``cache``
    when a process of this test run already ran it on a file of the same content."""
    if cache is None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    h = hashlib.sha256()
    h.update(json.dumps([a if a != path else "<capture>" for a in cmd]).encode())
    h.update(Path(path).read_bytes())
    entry = cache / f"{h.hexdigest()}.json"
    with open(cache / f"{entry.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        if not entry.exists():
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                                  check=False)
            fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump([proc.returncode, proc.stdout, proc.stderr], f)
            os.replace(tmp, entry)
        code, out, err = json.loads(entry.read_text())
    return code, out, err
