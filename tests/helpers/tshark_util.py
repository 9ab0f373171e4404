"""Test helper: run tshark (the independent oracle) and read its per-frame fields."""

from __future__ import annotations

import shutil
import subprocess

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


def need_tshark() -> str:
    if TSHARK is None:
        pytest.skip("tshark not installed")
    return TSHARK


def fields(path: str, names: list[str], *, display_filter: str | None = None,
           options: list[str] | None = None, every: bool = False) -> list[list[str]]:
    """One list of field values per frame (tab-separated tshark -T fields output).

    ``every``: all occurrences of a field in a frame, separated by ``AGGREGATOR``
    (several messages in one frame); otherwise only the first.
    """
    cmd = [need_tshark(), "-n", "-r", path, "-T", "fields", "-E",
           "occurrence=a" if every else "occurrence=f", "-E", f"aggregator={AGGREGATOR}"]
    for o in options or []:
        cmd += ["-o", o]
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in names:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tshark failed: {proc.stderr.strip()[:300]}")
    out = proc.stdout
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split("\t") for line in lines]
