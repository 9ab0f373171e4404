"""What the benchmarks read of their own process from ``/proc`` (Linux)."""

from __future__ import annotations


def rss_mb() -> float:
    """This process's resident set size now, in MiB (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
