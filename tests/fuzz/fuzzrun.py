"""Run one fuzz target in this (child) process: ``python fuzzrun.py TARGET [options]``.

How this works: the parent (``test_fuzz.py`` or a developer's shell) starts one
child per target so that a segfault in compiled code, a hang the alarm cannot
interrupt (inside a Numba kernel) or a memory blow-up kills the child, not the
test session. The child limits its address space (``RLIMIT_AS``), arms a
wall-clock alarm around every input (``PER_INPUT_SECONDS``), writes each input
to ``WORKDIR/current.bin`` before running it (so a crash or hang is
reproducible from that file), and lets hypothesis generate and shrink mutated
seeds. On a failure it writes the shrunk input to ``WORKDIR/failure-TARGET.bin``
and exits 1; on success it prints one JSON line (examples, seconds).

``--replay FILE...`` runs the given inputs instead (the regression suite).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from fuzzlib import MEMORY_HEADROOM, PER_INPUT_SECONDS, long_factor  # noqa: E402

WARMUP_FACTOR = 10  # per-input bound multiplier while kernels load


class HangError(Exception):
    """An input ran longer than the per-input bound."""


def _alarm(signum: int, frame: object) -> None:
    raise HangError(f"input took more than {PER_INPUT_SECONDS} s")


def _vm_size() -> int:
    """This process's address space in bytes (Linux ``/proc``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(headroom: int) -> None:
    limit = _vm_size() + headroom
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class Runner:
    """Runs inputs under the alarm, remembering the last one on disk."""

    def __init__(self, run: object, workdir: Path, per_input: float) -> None:
        self.run = run
        self.current = workdir / "current.bin"
        self.per_input = per_input
        self.count = 0
        self.slowest = 0.0
        self.last: bytes = b""

    def __call__(self, data: bytes) -> None:
        self.last = data
        self.current.write_bytes(data)
        self.count += 1
        try:
            self._timed(data)
        except HangError:
            # once more: the first input down a new path may load a compiled kernel
            # from Numba's cache (seconds); a real hang hangs again
            self._timed(data)

    def _timed(self, data: bytes) -> None:
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, self.per_input)
        try:
            self.run(data)  # type: ignore[operator]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        self.slowest = max(self.slowest, time.perf_counter() - t0)


def _fuzz(name: str, runner: Runner, examples: int, seed: int | None) -> None:
    from fuzzlib import mutated
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed
    from targets import TARGETS

    seeds = TARGETS[name].seeds()

    @settings(max_examples=examples, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def fuzz(data: bytes) -> None:
        runner(data)

    if seed is not None:
        fuzz = hseed(seed)(fuzz)
    # the seeds themselves first, unmutated, under a lenient bound: the first input of
    # each kind loads compiled kernels from Numba's cache (seconds on a busy machine)
    strict = runner.per_input
    runner.per_input = strict * WARMUP_FACTOR
    for s in seeds:
        runner(s)
    runner.per_input, runner.slowest = strict, 0.0
    fuzz()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("--examples", type=int, default=None,
                    help="hypothesis examples (default: CI count x PCAPFLOW_FUZZ_LONG)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--memory", type=int, default=MEMORY_HEADROOM,
                    help="bytes of address space allowed on top of the loaded modules")
    ap.add_argument("--per-input", type=float, default=PER_INPUT_SECONDS)
    ap.add_argument("--replay", type=Path, nargs="*", default=None,
                    help="run these input files instead of fuzzing")
    args = ap.parse_args(argv)

    from targets import TARGETS, warm_kernels

    target = TARGETS[args.target]
    args.workdir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    # import the heavy modules (Numba kernels, pyarrow) before the alarm and the limit
    runner = Runner(target.run, args.workdir, args.per_input * WARMUP_FACTOR)
    runner(b"")
    warm_kernels()
    if target.seeds:
        seeds = target.seeds()
        if seeds:
            runner(seeds[0])  # the kernels a real input reaches, compiled unlimited
    _limit_memory(args.memory)
    runner.per_input, runner.slowest = args.per_input, 0.0
    t0 = time.perf_counter()
    try:
        if args.replay is not None:
            for path in args.replay:
                print(f"replay {path}", file=sys.stderr, flush=True)
                runner(path.read_bytes())
        else:
            examples = args.examples or target.examples * long_factor()
            _fuzz(args.target, runner, examples, args.seed)
    except BaseException as err:
        out = args.workdir / f"failure-{args.target}.bin"
        out.write_bytes(runner.last)
        traceback.print_exc()
        print(f"FAILED {args.target}: {type(err).__name__}; input ({len(runner.last)} bytes) "
              f"saved to {out}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"target": args.target, "inputs": runner.count,
                      "seconds": round(time.perf_counter() - t0, 2),
                      "slowest_input_s": round(runner.slowest, 3), "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
