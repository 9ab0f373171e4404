"""Where an ingest's memory goes: RSS phase by phase in one process.

How this works: the capture is ingested in this process through ``pcapflow.ingest``
(the CLI's defaults, ``--workers 1`` unless ``--auto``) while a thread samples
``/proc/self/statm`` every 5 ms. Functions of the end of the ingest are wrapped to
mark phases (``FlowRows.finish``, the matcher's ``match_tables``, the derive's
``derive_staged``, the commit; ``--deep``: every function of ``pipelines.match``,
``pipelines.feed_scan``, ``feed``, ``alerts``, ``causes``, ``why``, ``why_carry``),
and each phase's RSS at its start, its peak and its end is printed (a phase entered
many times keeps its first start). The main loop is reported at each tenth of the
capture's bytes: RSS, Arrow's pool, ``RssAnon``/``RssFile`` and glibc's arenas
(``mallinfo2``: in use and free but held); ``--trace`` adds ``tracemalloc`` (slow).

    python benchmarks/rss_phases.py /work/bench/ws1m_c.pcap --keylog /work/bench/ws1m_c.keylog

MB here are 1e6 bytes (``peak_rss.py`` reports MiB). pcapflow is imported before
pyarrow, so that Arrow uses the allocator pcapflow chooses (``pcapflow/__init__.py``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def status_mb(*keys: str) -> list[float]:
    got: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                got[k] = int(v.split()[0]) / 1e3
    return [got.get(k, 0.0) for k in keys]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo_mb() -> tuple[float, float]:
    """glibc's arenas: (in use, free but held), MB; zeros elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
    except (OSError, AttributeError):
        return 0.0, 0.0
    return mi.uordblks / 1e6, mi.fordblks / 1e6


class Phases:
    """RSS per phase: [start, peak, end], fed by the sampler and the wrappers."""

    def __init__(self) -> None:
        self.stack = ["start"]
        self.stats: dict[str, list[float]] = {}
        self.order: list[str] = []
        self.stop = threading.Event()

    def sample(self) -> None:
        while not self.stop.wait(0.005):
            r = rss_mb()
            st = self.stats.setdefault(self.stack[-1], [r, r, r])
            st[1], st[2] = max(st[1], r), r

    def enter(self, name: str) -> None:
        r = rss_mb()
        if name not in self.stats:
            self.order.append(name)
            self.stats[name] = [r, r, r]
        self.stack.append(name)

    def leave(self, name: str) -> None:
        r = rss_mb()
        st = self.stats[name]
        st[1], st[2] = max(st[1], r), r
        self.stack.pop()

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        f: Callable[..., Any] = getattr(owner, attr)

        def wrapped(*a: Any, **k: Any) -> Any:
            self.enter(name)
            try:
                return f(*a, **k)
            finally:
                self.leave(name)

        setattr(owner, attr, wrapped)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog")
    ap.add_argument("--auto", action="store_true", help="--workers auto (this process's part)")
    ap.add_argument("--deep", action="store_true", help="a phase per function of the end")
    ap.add_argument("--trace", action="store_true", help="tracemalloc too (slow)")
    a = ap.parse_args(argv)

    import pcapflow  # noqa: I001 (before pyarrow: its allocator choice)
    import pyarrow as pa

    import pcapflow.venues as venues
    import pcapflow.why as why
    from pcapflow.pipelines import store
    from pcapflow.pipelines.ingest import flow_rows

    ph = Phases()
    ph.wrap(flow_rows.FlowRows, "finish", "flows.finish")
    ph.wrap(venues, "match_tables", "match_tables")
    ph.wrap(why, "derive_staged", "derive")
    ph.wrap(store.Staging, "commit", "commit")
    if a.deep:
        from pcapflow.pipelines import feed_scan, match

        import pcapflow.alerts as alerts
        import pcapflow.causes as causes
        import pcapflow.feed as feed
        import pcapflow.why_carry as why_carry

        for mod in (match, feed_scan, feed, alerts, causes, why, why_carry):
            for name, f in list(vars(mod).items()):
                if (
                    isinstance(f, types.FunctionType)
                    and f.__module__ == mod.__name__
                    and name != "derive_staged"
                ):
                    ph.wrap(mod, name, f"{mod.__name__.rsplit('.', 1)[-1]}.{name}")
    if a.trace:
        import tracemalloc

        tracemalloc.start()
    marks: list[str] = []
    total = os.path.getsize(a.capture)
    step = [0.0]

    def progress(_path: str, nbytes: int, packets: int) -> None:
        if nbytes / total < step[0]:
            return
        step[0] += 0.1
        anon, file = status_mb("RssAnon", "RssFile")
        used, held = mallinfo_mb()
        traced = ""
        if a.trace:
            import tracemalloc

            traced = f" traced {tracemalloc.get_traced_memory()[0] / 1e6:6.1f}"
        marks.append(
            f"  {nbytes / total:4.2f} {packets:9d} {rss_mb():6.0f} "
            f"{pa.total_allocated_bytes() / 1e6:6.1f} {anon:6.0f} {file:5.0f} "
            f"{used:6.0f} {held:6.0f}{traced}"
        )

    threading.Thread(target=ph.sample, daemon=True).start()
    data = tempfile.mkdtemp(prefix="pcapflow-phases-")
    try:
        ph.enter("ingest")
        cpu0 = time.process_time()
        pcapflow.ingest(
            [a.capture],
            keylog=[a.keylog] if a.keylog else None,
            data=data,
            workers="auto" if a.auto else 1,
            progress=progress,
        )
        cpu = time.process_time() - cpu0
        ph.leave("ingest")
    finally:
        ph.stop.set()
        shutil.rmtree(data, ignore_errors=True)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.capture}: CPU {cpu:.2f} s (this process), peak RSS {peak:.0f} MiB")
    print(
        "main loop: share of bytes, packets, RSS, Arrow pool, RssAnon, RssFile, "
        "glibc in use, glibc free held (MB)"
    )
    print("\n".join(marks))
    print("phase: RSS at start / peak / end (MB)")
    for name in ph.order:
        s, p, e = ph.stats[name]
        print(f"  {name:32s} {s:6.0f} {p:6.0f} {e:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
