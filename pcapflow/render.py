"""Tables for people and for pipes: what every command prints is rendered here.

How this works. A table is a header and rows of strings (numbers already formatted),
with the columns to right-align. On a terminal it becomes a rich ``Table`` that fits
the terminal's width: numbers never wrap or shrink (``no_wrap``), text columns
(endpoints, SNIs, paths) wrap where they must, which is where a reader expects it.
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
from collections.abc import Iterable, Sequence

from rich import box
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


TEXT_MIN_WIDTH = 15
"""A text column is never squeezed narrower than this (or its longest cell, if shorter)."""


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (),
               *, title: str | None = None, caption: str | None = None) -> Table:
    """A terminal table: numbers whole and right-aligned, text columns wrap if they must.

    No box: columns are two spaces apart, which is what lets nine columns of a report
    fit 80 characters."""
    right = set(right)
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for i, h in enumerate(header):
        longest = max([len(h), *(len(r[i]) for r in rows)])
        if i in right:
            table.add_column(h, justify="right", no_wrap=True, min_width=longest)
        else:
            table.add_column(h, overflow="fold", min_width=min(longest, TEXT_MIN_WIDTH))
    for r in rows:
        table.add_row(*r)
    return table


def min_width(header: Sequence[str], rows: Sequence[Sequence[str]],
              right: Iterable[int] = ()) -> int:
    """The narrowest ``rich_table`` can be: numbers whole, text at ``TEXT_MIN_WIDTH``."""
    right = set(right)
    total = 2 * (len(header) - 1)
    for i, h in enumerate(header):
        longest = max([len(h), *(len(r[i]) for r in rows)])
        total += longest if i in right else min(longest, TEXT_MIN_WIDTH)
    return total


def fit(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int],
        width: int, droppable: Sequence[str]
        ) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Leave out the ``droppable`` columns (by heading, in order) until the table fits
    ``width``; returns the table and the headings left out (to be said under it)."""
    header, rows, right = list(header), [list(r) for r in rows], list(right)
    dropped: list[str] = []
    for name in droppable:
        if min_width(header, rows, right) <= width:
            break
        if name not in header:
            continue
        i = header.index(name)
        header.pop(i)
        for r in rows:
            r.pop(i)
        right = [j - (j > i) for j in right if j != i]
        dropped.append(name)
    return header, rows, right, dropped


def show(header: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = (), *,
         out: Console, err: Console, title: str | None = None,
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
        out.print(rich_table(header, rows, right, title=title), highlight=False)
        for n in notes:
            out.print(f"[dim]{n}[/dim]", highlight=False)
        return
    if title:
        err.print(title, highlight=False, soft_wrap=True)
    out.file.write(plain(header, rows, right))
    out.file.flush()
    for n in notes:
        err.print(n, highlight=False, soft_wrap=True)
