"""Logs as an older jouled wrote them: the first `version` schema migrations only, for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jouled.store.sqlite import MIGRATIONS, _split_sql


def log_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A new log at `path` with schema v`version` (its first `version` migrations); the caller adds its rows."""
    conn = sqlite3.connect(path)
    for m in MIGRATIONS[:version]:
        for stmt in _split_sql(m):
            conn.execute(stmt)
    conn.execute(f"PRAGMA user_version={int(version)}")
    return conn
