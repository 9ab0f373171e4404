"""Tables for people and for pipes: what every command prints is rendered here.

How this works. A table is a header and rows of strings (numbers already formatted),
with the columns to right-align. On a terminal it becomes a rich ``Table`` that fits
the terminal's width. ``layout`` gives every column its whole width if the table fits;
otherwise the widest text columns narrow first, never below their longest unbreakable
piece. Numbers, headings and the columns in ``WHOLE`` (addresses, times, verdicts) are
never broken; other text (endpoints, SNIs, paths) is wrapped by ``wrap`` between words
or path parts, else between the words of a CamelCase name (``OrderCancel`` /
``Request``), where a reader expects it, never inside a word. ``fit`` leaves out the
caller's droppable columns (said under the table) while the table would not fit, or
only with a cell wrapped to more than ``MAX_LINES`` lines.
When stdout is not a terminal (``| less``, ``> file``, a test) it is plain text: one
header line, one line per row, columns aligned and separated by at least two spaces,
nothing cut or wrapped, no colour, no box; titles and notes go to stderr, so the
table on stdout stays parseable.

Durations in a column share one unit chosen for that column (``duration_unit``):
µs while its largest value is under 10 ms, else ms; values keep four or five
significant digits (``7.125``, ``812.4``, ``13.62``), so a column stays 7 characters
wide and a report of nine columns fits 80.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich loads when a table goes to a terminal: a piped one needs none of it
    from rich.console import Console
    from rich.table import Table

MS_FROM_US = 10_000.0
"""A duration column switches from µs to ms when its largest value reaches this (µs)."""


def duration_unit(values_us: Iterable[float | None]) -> tuple[str, float]:
    """(unit, divisor from µs) for a column of durations in µs: ("µs", 1) or ("ms", 1000)."""
    biggest = max((abs(v) for v in values_us if v is not None and not math.isnan(v)),
                  default=0.0)
    return ("ms", 1000.0) if biggest >= MS_FROM_US else ("µs", 1.0)


def number(value: float | None) -> str:
    """1-3 decimals by magnitude (7.125, 81.24, 812.4, 13,623.3); '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) < 10:
        return f"{value:,.3f}"
    if abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.1f}"


def plain(header: Sequence[str], rows: Sequence[Sequence[str]],
          right: Iterable[int] = ()) -> str:
    """Aligned plain text: header line, one line per row, two spaces between columns."""
    right = set(right)
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)]) + "\n"


_BREAKS = re.compile(r"(?<=[ /_.,:;=&?-])|(?<=[a-z0-9)])(?=[A-Z(])")
"""Where a text cell may wrap: after a space or a separator (``/``, ``_``, ``.``, ``-``,
...) and between the words of a CamelCase name (``OrderCancel|Request``)."""


_STRONG_BREAKS = re.compile(r"(?<=[ /])")
"""The breaks tried first: between words and path components."""


def pieces(cell: str, pattern: re.Pattern[str] = _BREAKS) -> list[str]:
    """A cell cut where it may wrap (``pieces("POST /api/v3/order")`` =
    ``["POST ", "/", "api/", "v3/", "order"]``)."""
    return [p for p in pattern.split(cell) if p]


def wrap(cell: str, width: int) -> str:
    """``cell`` in lines of at most ``width`` characters, broken between words or path
    components if that is enough, else also where ``pieces`` allows (a piece longer than
    the line is cut, the last resort)."""
    if len(cell) <= width:
        return cell
    strong = _wrap(cell, width, _STRONG_BREAKS)
    if all(len(ln) <= width for ln in strong):
        return "\n".join(strong)
    return "\n".join(_wrap(cell, width, _BREAKS))


def _wrap(cell: str, width: int, pattern: re.Pattern[str]) -> list[str]:
    lines: list[str] = []
    line = ""
    for piece in pieces(cell, pattern):
        if pattern is _STRONG_BREAKS and len(piece.rstrip()) > width:
            return [piece]  # too long without the finer breaks: the caller uses them
        while len(piece) > width:  # no break point left: cut
            if line:
                lines.append(line.rstrip())
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len((line + piece).rstrip()) > width:
            lines.append(line.rstrip())
            line = piece.lstrip()
        else:
            line += piece
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]
            ) -> tuple[list[int], list[int]]:
    """(natural, narrowest) width of each column: numbers, headings and the columns
    headed in ``WHOLE`` are never broken; other text may wrap between its ``pieces``."""
    natural, narrow = [], []
    for i, h in enumerate(header):
        cells = [r[i] for r in rows]
        whole = max([len(h), *map(len, cells)])
        natural.append(whole)
        if i in right or h in WHOLE:
            narrow.append(whole)
        else:
            longest_piece = max((len(p.strip()) for c in cells for p in pieces(c)), default=0)
            narrow.append(min(whole, max(len(h), longest_piece)))
    return natural, narrow


def layout(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int],
           width: int | None) -> list[int]:
    """Column widths for ``width`` characters: every column whole if that fits, else the
    widest text columns narrowed first (never below their narrowest)."""
    right = set(right)
    natural, narrow = _widths(header, rows, right)
    if width is None:
        return natural
    cols = list(natural)
    over = sum(cols) + GAP * (len(cols) - 1) - width
    while over > 0:
        shrinkable = [i for i in range(len(cols)) if cols[i] > narrow[i]]
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: (cols[j] - narrow[j], cols[j]))
        cols[i] -= 1
        over -= 1
    return cols


GAP = 2
"""Spaces between two columns."""
WHOLE = frozenset({"client", "server", "proto", "start", "start (UTC)", "end", "ts", "time",
                   "verdict", "severity"})
"""Headings of text columns never wrapped (addresses, times): a broken address misleads."""


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (),
               *, title: str | None = None, caption: str | None = None,
               width: int | None = None) -> Table:
    """A terminal table: numbers whole and right-aligned, text columns wrapped (between
    words, after a ``/``, inside a CamelCase name) only if the table would not fit
    ``width`` otherwise.

    No box: columns are two spaces apart, which is what lets nine columns of a report
    fit 80 characters."""
    from rich import box
    from rich.table import Table

    right = set(right)
    widths = layout(header, rows, right, width)
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if i in right else "left", no_wrap=True,
                         overflow="fold", width=widths[i])
    for r in rows:
        table.add_row(*(c if i in right else wrap(c, widths[i]) for i, c in enumerate(r)))
    return table


def min_width(header: Sequence[str], rows: Sequence[Sequence[str]],
              right: Iterable[int] = ()) -> int:
    """The narrowest ``rich_table`` can be: numbers whole, text between its pieces."""
    _, narrow = _widths(header, rows, set(right))
    return sum(narrow) + GAP * (len(header) - 1)


MAX_LINES = 2
"""A cell wrapped to more lines than this is harder to read than a column left out."""


def lines_needed(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int],
                 width: int) -> int:
    """The most lines a cell takes when the table is laid out for ``width``."""
    right = set(right)
    widths = layout(header, rows, right, width)
    return max((wrap(r[i], widths[i]).count("\n") + 1 for r in rows
                for i in range(len(header)) if i not in right), default=1)


def escape(text: object) -> str:
    """``text`` shown as itself in a line printed with markup: a path or message with
    ``[...]`` in it (``pip install 'pcapflow[live]'``, ``cap[1].pcap``) is not a style
    tag. Text without ``[`` is returned as it is, without importing rich (a
    ``LazyConsole`` prints such a line itself)."""
    text = str(text)
    if "[" not in text:
        return text
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def note(console: Console | LazyConsole, text: str, style: str | None = None) -> None:
    """A line under a table: on a terminal wrapped between words at its width, piped one
    line (so a script can grep it). With a ``style``, ``text`` is plain text (a note
    naming a capture ``a[1].pcap`` shows its brackets); without, it may hold markup."""
    terminal = console.is_terminal  # (piped, a style shows nothing: plain text is the same)
    if style:
        text = escape(text)
    console.print(f"[{style}]{text}[/{style}]" if style and terminal else text,
                  highlight=False, soft_wrap=not terminal)


def natural_width(header: Sequence[str], rows: Sequence[Sequence[str]],
                  right: Iterable[int] = ()) -> int:
    """The width of ``rich_table`` with nothing wrapped."""
    natural, _ = _widths(header, rows, set(right))
    return sum(natural) + GAP * (len(header) - 1)


def fit(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int],
        width: int, droppable: Sequence[str]
        ) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Leave out the ``droppable`` columns (by heading, in order) until the table fits
    ``width`` with no cell wrapped to more than ``MAX_LINES`` lines; returns the table
    and the headings left out (to be said under it)."""
    head, body, right_ = list(header), [list(r) for r in rows], list(right)
    dropped: list[str] = []
    for name in droppable:
        if min_width(head, body, right_) <= width \
                and lines_needed(head, body, right_, width) <= MAX_LINES:
            break
        if name not in head:
            continue
        i = head.index(name)
        head.pop(i)
        for r in body:
            r.pop(i)
        right_ = [j - (j > i) for j in right_ if j != i]
        dropped.append(name)
    return head, body, right_, dropped


class LazyConsole:
    """A rich ``Console`` made on first use (``Console(**kwargs)``): importing rich is
    ~30-50 ms of CPU that a command printing plain text to a pipe never needs.

    ``is_terminal`` and ``file`` answer without rich when they can: a stream that is
    not a tty, with neither ``TTY_COMPATIBLE`` nor ``FORCE_COLOR`` set, is no terminal
    to rich either (``Console.is_terminal``); anything else asks the real console."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: Console | None = None

    def get(self) -> Console:
        """The rich console itself (made now if need be)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return self._console

    @property
    def file(self) -> Any:
        if self._console is None and self._kwargs.get("file") is None:
            return sys.stderr if self._kwargs.get("stderr") else sys.stdout
        return self.get().file

    @property
    def is_terminal(self) -> bool:
        if self._console is None and not ({"TTY_COMPATIBLE", "FORCE_COLOR"} & os.environ.keys()):
            isatty = getattr(self.file, "isatty", None)
            try:
                if isatty is None or not isatty():
                    return False
            except ValueError:  # a closed stream
                return False
        return self.get().is_terminal

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """``Console.print``; one line of plain text to a pipe is written without rich
        (``plain_line``): what rich would write there, character for character."""
        if (self._console is None and len(objects) == 1 and isinstance(objects[0], str)
                and set(kwargs) <= {"highlight", "soft_wrap"}
                and kwargs.get("soft_wrap", self._kwargs.get("soft_wrap", False))
                and set(self._kwargs) <= {"stderr", "soft_wrap"}
                and plain_line(objects[0]) and not self.is_terminal):
            self.file.write(objects[0] + "\n")
            self.file.flush()
            return
        self.get().print(*objects, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


_RICH_SYNTAX = re.compile(r"[\[\]\\\t]|:\S*?:")
"""What rich reads in a printed string: markup (``[bold]``, ``\\[``), emoji codes
(``:smile:``) and tabs (expanded)."""


def plain_line(text: str) -> bool:
    """Does rich print ``text`` unchanged to a pipe (with ``soft_wrap``: no wrapping)?
    True for printable text with no markup, emoji code or tab in it."""
    return text.isprintable() and _RICH_SYNTAX.search(text) is None


def show(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (), *,
         out: Console | LazyConsole, err: Console | LazyConsole, title: str | None = None,
         notes: Sequence[str] = (), droppable: Sequence[str] = ()) -> None:
    """Print a table on ``out``: fitted to the terminal, or plain when piped.

    On a terminal, the ``droppable`` columns (by heading, in order) are left out while
    the table is wider than the terminal, and a note names them."""
    if out.is_terminal:
        header, rows, right, dropped = fit(header, rows, right, out.width, droppable)
        notes = list(notes)
        if dropped:
            notes.append(f"{', '.join(dropped)} left out to fit {out.width} columns "
                         "(piped or --format csv: every column)")
        out.print(rich_table(header, rows, right, title=title, width=out.width),
                  highlight=False)
        for n in notes:
            note(out, n, "dim")
        return
    if title:
        err.print(title, highlight=False, soft_wrap=True)
    out.file.write(plain(header, rows, right))
    out.file.flush()
    for n in notes:
        err.print(n, highlight=False, soft_wrap=True)
