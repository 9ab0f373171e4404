"""SIGINT and SIGTERM stop an ingest at a safe point, and a command within two seconds.

Why not Python's default (``KeyboardInterrupt`` at whatever bytecode runs next)?
During an ingest that bytecode can be:

1. a Python function a Numba kernel calls back while it runs (Numba's
   ``serialize._numba_unpickle``, when compiled code builds an exception object or
   a constant): the kernel's C wrapper does not expect an exception there, returns
   a result with it still set, and the user reads ``SystemError: CPUDispatcher(<function
   ws_payloads ...>) returned a result with an exception set`` instead of one line;
2. the ``join`` of the Parquet writer thread (``store.Staging``), or the moment
   between a lock's ``acquire`` and the ``try`` that releases it: the clean-up then
   closes files the writer thread is still closing, or waits on a lock that is never
   released, and the process hangs in a futex wait (at exit, with a daemon thread
   still inside Arrow, or in the clean-up itself);
3. a worker just forked, before it ignores SIGINT: it would run its parent's
   clean-up (removing the shared staging directory) as if it were the parent.

So inside ``deferred()`` the handlers only *record* the signal, in the process that
installed them (a forked worker ignores it: its parent stops it), and the work calls
``check()`` at safe points (after each chunk, before matching, before the commit,
while it waits for its workers), which raises ``KeyboardInterrupt`` there; the usual
``except BaseException`` clean-up then runs (staging removed, workers killed).

The command line (``install_cli``) adds a bound: outside ``deferred()`` (start-up,
queries, reports) a signal ends the process at once; inside, if the clean-up has not
ended it ``GRACE`` seconds after the signal (a long kernel, a stuck wait), or on a
second signal, it writes its one line, kills the workers it tracks and leaves with
``os._exit(130)``. A dataset never depends on a clean exit: ``store`` removes the
staging directory of a dead process and rolls a journal forward.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

GRACE = 1.2
"""Seconds from the first signal to the forced exit of a command (``install_cli``)."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130

_owner: int | None = None
"""The pid of the process whose handlers these are (a fork inherits them, not the role)."""
_cli_message: str | None = None
"""Set by ``install_cli``: the one line a forced exit writes; None in a library."""
_depth = 0
_pending: int | None = None
_children: set[int] = set()
committed: list[str] = []
"""Captures this process committed (``done``), for the one line of an interrupt."""


def _handler(signum: int, frame: object) -> None:
    global _pending
    if os.getpid() != _owner:
        return  # a forked worker: its parent stops it (and reads its pipe)
    if _cli_message is not None and (_depth == 0 or _pending is not None):
        exit_now()  # nothing to clean up yet, or a second signal: leave at once
    if _pending is not None:
        raise KeyboardInterrupt  # a library's second Ctrl-C: the user insists
    _pending = signum
    if _cli_message is not None:
        signal.setitimer(signal.ITIMER_REAL, GRACE)


def _alarm(signum: int, frame: object) -> None:
    if os.getpid() == _owner and _pending is not None:
        exit_now()


def _install() -> dict[int, object]:
    global _owner
    _owner = os.getpid()
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def install_cli(message: str) -> None:
    """The command line's handlers (see the module docstring); ``message`` is its one line."""
    global _cli_message
    if threading.current_thread() is not threading.main_thread():
        return
    _cli_message = message
    _install()
    signal.signal(signal.SIGALRM, _alarm)


def set_message(text: str) -> None:
    """Change the command's one line (``pcapflow watch`` says what it has kept so far);
    no effect in a library (no ``install_cli``)."""
    global _cli_message
    if _cli_message is not None:
        _cli_message = text


def exit_now() -> None:
    """Write the one line and end the process with 130, now (kills tracked workers)."""
    with contextlib.suppress(Exception):
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s in (*SIGNALS, signal.SIGALRM):
            signal.signal(s, signal.SIG_IGN)
    for pid in list(_children):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.write(2, (message() + "\n").encode())
    os._exit(EXIT_CODE)


def message() -> str:
    """The one line: the command's, or, once captures of this command were committed,
    which ones are kept (each capture commits on its own)."""
    if not committed:
        return _cli_message or "interrupted"
    names = ", ".join(os.path.basename(p) for p in committed[:3])
    more = f" and {len(committed) - 3} more" if len(committed) > 3 else ""
    return (f"interrupted: {len(committed)} capture(s) of this command were ingested and "
            f"are kept ({names}{more}); the one in progress left the dataset as it was")


def done(path: str) -> None:
    """A capture of this command was committed (see ``message``)."""
    committed.append(str(path))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals received inside only take effect at ``check()`` (module docstring).

    In a library (no ``install_cli``) the handlers are installed for the duration and
    restored after; outside the main thread nothing changes (Python delivers signals
    to the main thread only).
    """
    global _depth, _pending
    saved: dict[int, object] | None = None
    if _depth == 0 and _cli_message is None:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = _install()
    _depth += 1
    try:
        yield
        check()
    finally:
        _depth -= 1
        if saved is not None:
            for s, h in saved.items():
                signal.signal(s, h)  # type: ignore[arg-type]
            _pending = None


def pending() -> int | None:
    """The signal recorded and not yet acted on (None: none)."""
    return _pending if os.getpid() == _owner else None


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a signal was recorded (a safe point)."""
    if _pending is not None and os.getpid() == _owner:
        raise KeyboardInterrupt


def track(pid: int) -> None:
    """A worker process a forced exit must kill first."""
    _children.add(pid)


def untrack(pid: int) -> None:
    _children.discard(pid)
