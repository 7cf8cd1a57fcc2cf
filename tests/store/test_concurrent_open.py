"""Several processes opening one brand-new log at the same moment: each sees a migrated schema, none fails."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from jouled.store.sqlite import SCHEMA_VERSION, SqliteStore


def _open(path: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait()
    try:
        st = SqliteStore(path)
        out.put(("ok", st.get_meta("nothing", "none")))
    except Exception as e:  # the failure is the finding: report it, not a crash of the child
        out.put(("error", f"{type(e).__name__}: {e}"))


def test_racing_openers_of_a_new_log_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    for round_ in range(6):
        path = str(tmp_path / f"new-{round_}.db")
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(path, barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(r == ("ok", "none") for r in results), results
        import sqlite3

        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
