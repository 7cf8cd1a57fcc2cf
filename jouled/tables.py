"""Tables that fit the terminal: each column has a priority, and secondary columns are dropped before a value is cut.

A run id, a device name or an energy value is never truncated: such columns are `whole` (never wrapped, at least as
wide as their widest cell). Text columns may `wrap` at spaces, long unbroken strings (NB201 arch strings) may `fold`.
`fit_columns` is the pure decision; `print_table` renders with rich and names what it hid in one dim line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.control import strip_control_codes
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jouled.cli_common import WideOpt as WideOpt  # re-exported: defined with the other shared options

Fit = Literal["whole", "wrap", "fold"]
Cell = str | Text

# rich's default table: one space of padding either side of each cell and a vertical line before, between and after
PAD = 2


@dataclass(frozen=True)
class Column:
    header: str
    priority: int = 0  # 0: always shown; the larger the number, the earlier the column is dropped
    justify: Literal["left", "right", "center"] = "left"
    fit: Fit = "whole"
    fold_min: int = 16  # narrowest a `fold` column gets


def make_console(*, stderr: bool = False, wide_width: int | None = None) -> Console:
    """A console made at call time, so it reads $COLUMNS now (not when the module was imported)."""
    return Console(stderr=stderr, width=wide_width) if wide_width else Console(stderr=stderr)


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def _lines(cell: Cell) -> list[str]:
    return _text(cell).plain.split("\n")


def _cell_len(s: str) -> int:
    return cell_len(strip_control_codes(s))  # Text(s).cell_len, without building a Text per cell


def cell_widths(col: Column, cells: Sequence[Cell]) -> tuple[int, int]:
    """(narrowest, natural) content width of a column: a `whole` column never gets narrower than its widest line;
    a `wrap` column than its longest word; a `fold` column than `fold_min` (or its natural width if smaller)."""
    lines = [ln for c in [col.header, *cells] for ln in _lines(c)]
    natural = max((_cell_len(ln) for ln in lines), default=0)
    if col.fit == "whole":
        return natural, natural
    if col.fit == "wrap":
        words = [w for ln in lines for w in ln.split()]
        return max((_cell_len(w) for w in words), default=0), natural
    return min(natural, col.fold_min), natural


def table_width(content_widths: Sequence[int]) -> int:
    """Total width of a rich table (default box, edges shown) whose columns have these content widths."""
    return sum(w + PAD for w in content_widths) + len(content_widths) + 1


def fit_columns(min_widths: Sequence[int], priorities: Sequence[int], width: int) -> list[bool]:
    """Which columns to keep so the table is at most `width` wide.

    Columns are dropped in order of decreasing priority (the rightmost first among equals) until the rest fit; a
    dropped column that fits in what is left is then brought back. Priority-0 columns are always kept, even when they
    alone are too wide (then the caller's terminal wraps, but no value is cut)."""
    n = len(min_widths)
    keep = [True] * n
    order = sorted(range(n), key=lambda i: (-priorities[i], -i))
    droppable = [i for i in order if priorities[i] > 0]

    def fits() -> bool:
        return table_width([w for w, k in zip(min_widths, keep, strict=True) if k]) <= width

    dropped: list[int] = []
    for i in droppable:
        if fits():
            break
        keep[i] = False
        dropped.append(i)
    for i in reversed(dropped):  # most important first
        keep[i] = True
        if not fits():
            keep[i] = False
    return keep


def print_table(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    wide: bool = False,
    console: Console | None = None,
    caption: str | None = None,
) -> list[str]:
    """Print `rows` under `columns`, fitted to the console width (all columns with `wide`); returns the hidden headers."""
    con = console or make_console()
    widths = [cell_widths(c, [r[i] for r in rows]) for i, c in enumerate(columns)]
    if wide:
        keep = [True] * len(columns)
        natural = table_width([nat for _, nat in widths])
        if natural > con.width:  # --wide: let the table be as wide as it needs, the terminal wraps or scrolls
            con = Console(file=con.file, width=natural, stderr=con.stderr)
    else:
        keep = fit_columns([mn for mn, _ in widths], [c.priority for c in columns], con.width)
    t = Table(title=title, caption=caption)
    for c, (mn, _), k in zip(columns, widths, keep, strict=True):
        if not k:
            continue
        if c.fit == "whole":
            # a fixed width (its widest cell, known here): rich then measures none of its cells again
            t.add_column(c.header, justify=c.justify, no_wrap=True, min_width=mn, width=mn)
        else:
            t.add_column(c.header, justify=c.justify, overflow="fold", min_width=mn)
    for r in rows:
        t.add_row(*[_text(cell) for cell, k in zip(r, keep, strict=True) if k])
    con.print(t)
    hidden = [" ".join(c.header.split()) for c, k in zip(columns, keep, strict=True) if not k]
    if hidden:
        con.print(f"[dim]hidden at {con.width} columns: {escape(', '.join(hidden))} — use --wide[/]", highlight=False)
    return hidden


