"""Progress bars on stderr for work longer than a couple of seconds; the pure code only calls `on_progress(done, total)`.

A bar is drawn only when stderr is a terminal (never into a pipe, a log or a test runner) and not with
`--no-progress`; it is transient, so the table printed after it is all that stays on the screen.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

OnProgress = Callable[[int, int], None]  # (done, total) in whatever unit the work counts: runs, batches, bytes, windows

NoProgressOpt = Annotated[
    bool, typer.Option("--no-progress", help="no progress bar on stderr (none is drawn when stderr is not a terminal)")
]


def progress_enabled(no_progress: bool = False) -> bool:
    """A bar only for a person: stderr a terminal, not TERM=dumb, not turned off."""
    if no_progress or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def _noop(done: int, total: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, *, enabled: bool, count: bool = True) -> Iterator[OnProgress]:
    """Yield an `on_progress(done, total)` callback drawing one transient bar; a no-op when not `enabled`.

    `count`: show "done/total" (runs, epochs); off for bytes, where the percentage says more."""
    if not enabled:
        yield _noop
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn() if count else TaskProgressColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update

