"""The local log: SQLite (WAL) holding samples as per-series column chunks, plus markers, carbon and allocations.

Why chunks and not one row per sample: a day of 10 devices at 10 Hz is 8.6 M samples; fetching that many
rows through Python's sqlite3 takes seconds, while reading a few thousand column blobs and viewing them
with numpy takes milliseconds. Each flush writes one chunk per series (time_ns int64, power_w / energy_j
float64 with NaN for "absent"); a compaction pass later merges small, old chunks into large ones. The
merged chunk keeps the smallest member id, so an id-based cursor (the forwarder's) stays valid.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jouled.columns import ChunkBatch as ChunkBatch  # re-exported: the one column carrier (jouled/columns.py)
from jouled.columns import batches_from_rows
from jouled.errors import UserError
from jouled.model import Allocation, CarbonPoint, Marker, Sample
from jouled.secrets import make_private_dir
from jouled.series import SeriesMeta, default_meta
from jouled.store import chunkcodec
from jouled.store.url import parse_store_url as parse_store_url  # re-exported: the store URL's home is store/url.py
from jouled.store.url import sqlite_url as sqlite_url

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("jouled.store")

NS_PER_S = 1_000_000_000
# what a value that SQLite cannot bind raises (an int beyond int64, a lone surrogate, a wrong type, a
# NOT NULL column left empty): an error in one row, not in the store — the other rows are still written
ROW_ERRORS: tuple[type[BaseException], ...] = (
    OverflowError, UnicodeEncodeError, ValueError, TypeError,
    sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
)
MIGRATIONS: list[str] = [
    # v1: the initial schema
    """
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL, source TEXT NOT NULL, device TEXT NOT NULL,
        UNIQUE (host, source, device)
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        series_id INTEGER NOT NULL REFERENCES series(id),
        res_s REAL NOT NULL DEFAULT 0,          -- 0: raw samples; > 0: aggregates of that period
        t0_ns INTEGER NOT NULL, t1_ns INTEGER NOT NULL, n INTEGER NOT NULL,
        time_ns BLOB NOT NULL, power_w BLOB, energy_j BLOB,
        extras_names TEXT, extras BLOB
    );
    CREATE INDEX chunks_series_t1 ON chunks (series_id, t1_ns);
    CREATE TABLE markers (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL, host TEXT NOT NULL, run TEXT NOT NULL, scope TEXT NOT NULL,
        event TEXT NOT NULL, seq INTEGER NOT NULL, epoch INTEGER, phase TEXT, arch TEXT,
        gpus TEXT NOT NULL DEFAULT '', attrs TEXT NOT NULL DEFAULT '{}',
        UNIQUE (run, seq)
    );
    CREATE INDEX markers_run_time ON markers (run, time_ns);
    CREATE TABLE carbon (
        time_ns INTEGER NOT NULL, zone TEXT NOT NULL, provider TEXT NOT NULL,
        intensity_g_per_kwh REAL NOT NULL, forecast INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (zone, forecast, time_ns, provider)
    ) WITHOUT ROWID;
    CREATE TABLE allocation (
        id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, search TEXT NOT NULL,
        gpus_sampling INTEGER NOT NULL, gpus_evaluation INTEGER NOT NULL,
        lambda_s REAL NOT NULL, intensity_g_per_kwh REAL NOT NULL
    );
    CREATE INDEX allocation_time ON allocation (search, time_ns);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # v2: series metadata declared by the sources (jouled.series.SeriesMeta), one row per declaration: a source
    # reopened with another rate adds a row from `since_ns`, so older samples keep the periods they were taken at
    """
    CREATE TABLE series_meta (
        series_id INTEGER NOT NULL REFERENCES series(id),
        since_ns INTEGER NOT NULL,
        role TEXT NOT NULL, device TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL, host_wide INTEGER NOT NULL,
        power_period_s REAL, counter_period_s REAL, counter_resolution_j REAL,
        comparison INTEGER NOT NULL DEFAULT 0, origin TEXT NOT NULL,
        PRIMARY KEY (series_id, since_ns)
    ) WITHOUT ROWID;
    """,
    # v3: the watermark, "complete until t" per series: every reading of the series taken before complete_ns is
    # stored. The daemon advances it with each flush, in the same transaction as the samples; readers wait on it
    """
    CREATE TABLE series_watermark (
        series_id INTEGER PRIMARY KEY REFERENCES series(id),
        complete_ns INTEGER NOT NULL
    );
    """,
    # v4: a device's own power limits in its declaration (NVML's min/max power-management limit), for `jouled assess`
    """
    ALTER TABLE series_meta ADD COLUMN power_min_w REAL;
    ALTER TABLE series_meta ADD COLUMN power_max_w REAL;
    """,
    # v5: how often the device updates its own counter and power value (NVML: measured when the source opens)
    """
    ALTER TABLE series_meta ADD COLUMN counter_update_s REAL;
    ALTER TABLE series_meta ADD COLUMN power_update_s REAL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_META_COLS_V2 = "role, device, kind, host_wide, power_period_s, counter_period_s, counter_resolution_j, comparison, origin"
_META_COLS_V4 = _META_COLS_V2 + ", power_min_w, power_max_w"
_META_COLS = _META_COLS_V4 + ", counter_update_s, power_update_s"  # v5
_META_MARKS = ",".join("?" * (2 + len(_META_COLS.split(","))))  # series_id, since_ns, the columns


@dataclass(frozen=True)
class SeriesKey:
    """One series' identity (host, source, device); `meta` rides along (not part of the identity) where read back.

    `meta` is the latest declaration (`SeriesMeta`), or None when nobody declared one (imported samples, a log
    written before schema v2): readers then use `jouled.series.default_meta(source, device)`.
    """

    host: str
    source: str
    device: str
    meta: SeriesMeta | None = field(default=None, compare=False, hash=False, repr=False)


@dataclass
class SeriesData:
    """One series' samples in a time range, as numpy columns (NaN = the field was absent)."""

    key: SeriesKey
    time_ns: np.ndarray
    power_w: np.ndarray
    energy_j: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.time_ns.size)


def batches_from_samples(samples: Iterable[Sample]) -> list[ChunkBatch]:
    """Group row samples (importers, tests) into per-series column batches, in their given order."""
    return batches_from_rows(
        (SeriesKey(s.host, s.source, s.device), s.time_ns, s.power_w, s.energy_j, s.extras) for s in samples
    )


class MarkerRowError(UserError):
    """Some markers could not be stored (a value SQLite cannot hold); the others were.

    ``stored`` counts the new markers written; ``bad`` lists each refused marker with the reason.
    """

    def __init__(self, stored: int, bad: list[tuple[Marker, str]]) -> None:
        self.stored = stored
        self.bad = bad
        m, why = bad[0]
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        super().__init__(
            f"marker run {m.run!r} seq {m.seq}{more}: cannot be stored ({why}) — fix those rows; "
            f"the other {stored} new markers were stored"
        )


def _rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction without hiding why it failed.

    SQLite rolls some failures back by itself (SQLITE_FULL, SQLITE_IOERR…), and then a ROLLBACK raises
    "no transaction is active"; a ROLLBACK that fails (the disk went away) must not replace the real error.
    """
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        log.error("store: ROLLBACK failed (%s) after a failed write", e)


def _marker_row(m: Marker) -> tuple[Any, ...]:
    return (
        m.time_ns, m.host, m.run, m.scope, m.event, m.seq, m.epoch, m.phase, m.arch, " ".join(m.gpus),
        json.dumps(m.attrs, sort_keys=True),
    )


_INSERT_MARKER = (
    "INSERT OR IGNORE INTO markers(time_ns, host, run, scope, event, seq, epoch, phase, arch, gpus, attrs)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


class SqliteStore:
    """The local log. Thread-safe for one writer thread plus readers (each thread gets its own connection)."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._local = threading.local()
        self._series_ids: dict[SeriesKey, int] = {}
        self._lock = threading.Lock()
        if not readonly and create:
            try:
                make_private_dir(self.path.parent)  # 0750 when jouled creates it: the log is nobody else's business
            except OSError as e:
                raise UserError(
                    f"store {self.path}: cannot create its folder ({e.strerror}) — choose a writable --store or [store] path"
                ) from None
        elif not self.path.exists():
            raise UserError(f"store {self.path}: no such log — start the daemon first (jouled run) or pass --store")
        conn = self._conn()
        self._check_is_jouled_log(conn)
        if not readonly:
            self._migrate(conn)

    # -- connections and schema ------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.readonly:
                    conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
                    # Readers (`energy`, `export`, the Python API) map the log instead of a pread() per 4 KiB page:
                    # a query of a day of ten 10 Hz series reads ~200 MB, 50,000 pages: read one by one, those ten
                    # series took 0.127 s against 0.216 (bench/energy_epochs_store.py, 2026-11-28). Not for the daemon: mapped
                    # pages it touched would count in its RSS. jouled never shrinks the log (no VACUUM), the one
                    # case where a mapping could fault.
                    conn.execute(f"PRAGMA mmap_size={READ_MMAP_BYTES}")
                else:
                    conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    conn.execute("PRAGMA busy_timeout=5000")
                    # New logs keep SQLite's 4 KiB pages. Each flush dirties one leaf of the chunks index per
                    # series once the log has some history, and the WAL takes whole pages: 16 KiB pages wrote 142 KiB
                    # a flush where 4 KiB pages write 68 KiB (bench/store_wal.py: 12 series, 400 compacted chunks
                    # each; 25 against 12 GB a day at the 0.5 s flush it measured, about half that at today's 1 s
                    # default). Reads are no slower since they skip SQLite's sorter: a day of 10 devices read in
                    # 0.21-0.25 s either way (one session).
                    _set_wal(conn)
                    conn.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint; WAL survives a crash
                conn.execute("PRAGMA busy_timeout=5000")
            except sqlite3.OperationalError as e:
                raise UserError(
                    f"store {self.path}: cannot open ({e}) — choose a writable --store or [store] path"
                ) from None
            except sqlite3.DatabaseError as e:  # not SQLite at all (WAL mode reads the header)
                raise UserError(
                    f"store {self.path}: not a jouled SQLite log ({e}) — pass --store sqlite:///path/to/jouled.db"
                ) from None
            self._local.conn = conn
        return conn

    def _check_is_jouled_log(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not SQLite, or an SQLite database of another program, with one line."""
        fix = "pass --store sqlite:///path/to/jouled.db (the daemon's log; `jouled status` names it)"
        try:
            # one read transaction, one snapshot: another opener may commit the first migration between two
            # autocommit reads, and "tables but version 0" would then look like another program's database
            in_tx = conn.in_transaction
            if not in_tx:
                conn.execute("BEGIN")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                if not in_tx:
                    conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:  # "file is not a database", a truncated header, …
            raise UserError(f"store {self.path}: not a jouled SQLite log ({e}) — {fix}") from None
        if version == 0 and tables:
            raise UserError(f"store {self.path}: an SQLite database of another program, not a jouled log — {fix}")
        if version == 0 and self.readonly:  # an empty file: nothing was ever logged into it
            raise UserError(f"store {self.path}: an empty file, not a jouled log — {fix}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(
                f"store {self.path}: schema v{version} is newer than this jouled (v{SCHEMA_VERSION}) — upgrade jouled"
            )
        while version < SCHEMA_VERSION:
            # executescript would commit implicitly; run the statements in one transaction instead
            conn.execute("BEGIN IMMEDIATE")
            try:
                # read again under the write lock: another process opening the same new log may have migrated
                # it between our first read and this BEGIN (two daemons, or a daemon and an import, at once)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    conn.execute("COMMIT")
                    break
                v = version
                for stmt in _split_sql(MIGRATIONS[v]):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version = v + 1

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception (re-raised).

        Every write goes through here, so no failure — a value that cannot be bound, a full disk, a
        KeyboardInterrupt — can leave a transaction open and wedge every later write.
        """
        conn = self._conn()
        with self._lock:
            if conn.in_transaction:  # never expected; heal rather than fail every write from now on
                log.error("store %s: a transaction was left open; rolling it back", self.path)
                _rollback(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                self._series_ids.clear()  # ids inserted in the rolled-back transaction are gone
                raise

    # -- series ----------------------------------------------------------------------------------

    def _series_id(self, conn: sqlite3.Connection, key: SeriesKey) -> int:
        sid = self._series_ids.get(key)
        if sid is not None:
            return sid
        row = conn.execute(
            "SELECT id FROM series WHERE host=? AND source=? AND device=?", (key.host, key.source, key.device)
        ).fetchone()
        if row is None:
            cur = conn.execute(
                "INSERT INTO series(host, source, device) VALUES (?,?,?)", (key.host, key.source, key.device)
            )
            sid = int(cur.lastrowid or 0)
        else:
            sid = int(row[0])
        self._series_ids[key] = sid
        return sid

    def series(self) -> list[SeriesKey]:
        """Every series, each with its latest declared metadata (None where none was declared)."""
        conn = self._conn()
        rows = conn.execute("SELECT id, host, source, device FROM series ORDER BY source, device, host").fetchall()
        latest = {sid: metas[-1][1] for sid, metas in self._meta_rows(conn).items()}
        return [SeriesKey(h, src, dev, latest.get(sid)) for sid, h, src, dev in rows]

    def series_meta_history(self, key: SeriesKey) -> list[tuple[int, SeriesMeta]]:
        """(since_ns, meta) of every declaration of one series, oldest first (empty: never declared)."""
        conn = self._conn()
        row = conn.execute(
            "SELECT id FROM series WHERE host=? AND source=? AND device=?", (key.host, key.source, key.device)
        ).fetchone()
        return [] if row is None else self._meta_rows(conn, int(row[0])).get(int(row[0]), [])

    def series_meta_at(self, key: SeriesKey, t_ns: int) -> SeriesMeta | None:
        """The declaration in force at t_ns: the latest made at or before it, else the first one (None: never declared)."""
        hist = self.series_meta_history(key)
        if not hist:
            return None
        before = [m for since, m in hist if since <= t_ns]
        return before[-1] if before else hist[0][1]

    def _meta_rows(self, conn: sqlite3.Connection, series_id: int | None = None) -> dict[int, list[tuple[int, SeriesMeta]]]:
        if not self._has_meta_table(conn):  # a read-only view of a v1 log: nothing was declared
            return {}
        q = f"SELECT series_id, since_ns, {self._meta_cols(conn)} FROM series_meta"
        args: tuple[Any, ...] = ()
        if series_id is not None:
            q += " WHERE series_id=?"
            args = (series_id,)
        out: dict[int, list[tuple[int, SeriesMeta]]] = defaultdict(list)
        for sid, since, *cols in conn.execute(q + " ORDER BY series_id, since_ns", args):
            out[int(sid)].append((int(since), _meta_from_row(cols)))
        return out

    def _meta_cols(self, conn: sqlite3.Connection) -> str:
        """The metadata columns this log has: a read-only view of a v2/v3 log has no power limits."""
        if getattr(self, "_meta_cols_cache", None) is None:
            have = {str(r[1]) for r in conn.execute("PRAGMA table_info(series_meta)")}
            self._meta_cols_cache = (_META_COLS if "power_update_s" in have
                                     else _META_COLS_V4 if "power_max_w" in have else _META_COLS_V2)
        return str(self._meta_cols_cache)

    def _has_meta_table(self, conn: sqlite3.Connection) -> bool:
        if getattr(self, "_meta_table", None) is None:
            self._meta_table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='series_meta'"
            ).fetchone() is not None
        return bool(self._meta_table)

    def declare_series(self, metas: Mapping[SeriesKey, SeriesMeta], since_ns: int) -> int:
        """Record what each series is (from `since_ns`); a declaration equal to the latest one adds nothing.

        Returns the number of declarations written. Cheap: the daemon calls it once per source open.
        """
        if not metas:
            return 0
        with self._transaction() as conn:
            return self._declare(conn, metas, since_ns)

    def _declare(self, conn: sqlite3.Connection, metas: Mapping[SeriesKey, SeriesMeta], since_ns: int) -> int:
        n = 0
        for key, meta in metas.items():
            sid = self._series_id(conn, key)
            row = conn.execute(
                f"SELECT since_ns, {_META_COLS} FROM series_meta WHERE series_id=? ORDER BY since_ns DESC LIMIT 1", (sid,)
            ).fetchone()
            if row is not None and _meta_from_row(row[1:]) == meta:
                continue  # the usual case: the daemon restarted with the same configuration
            since = since_ns if row is None else max(since_ns, int(row[0]) + 1)  # keeps declarations in order
            conn.execute(
                f"INSERT INTO series_meta(series_id, since_ns, {_META_COLS}) VALUES ({_META_MARKS})",
                (sid, since, *_meta_row(meta)),
            )
            n += 1
        return n

    # -- writes ----------------------------------------------------------------------------------

    def write_samples(
        self, samples: Iterable[Sample], *, declare_defaults: bool = True, skip_stored: bool = False,
    ) -> int:
        """Store row samples (imports, tests). A series nobody has declared yet gets the documented default for its
        source name (`jouled.series.default_meta`: periods unknown, judged against each field's median spacing)
        from its first sample on; a series already declared keeps its declaration. Returns the samples written.

        `skip_stored` (`jouled import`): a sample whose series already has one at its very timestamp is not written
        again, checked in the same transaction — importing one file twice adds nothing the second time."""
        batches = batches_from_samples(samples)
        if not declare_defaults and not skip_stored:
            return self.write_batches(batches)
        with self._transaction() as conn:
            if skip_stored:
                batches = self._not_stored(batches)
            if not declare_defaults:
                return self._insert_batches(conn, batches, 0.0)
            declared = {int(r[0]) for r in conn.execute("SELECT DISTINCT series_id FROM series_meta")}
            for b in batches:
                if len(b) and self._series_id(conn, b.key) not in declared:
                    self._declare(conn, {b.key: default_meta(b.key.source, b.key.device)}, int(min(b.time_ns)))
            return self._insert_batches(conn, batches, 0.0)

    def _not_stored(self, batches: list[ChunkBatch]) -> list[ChunkBatch]:
        """Each batch without the samples whose timestamps its series already has (read on this thread's connection:
        inside the caller's transaction)."""
        import numpy as np  # imports only: the daemon's write path never loads numpy

        out: list[ChunkBatch] = []
        for b in batches:
            if not len(b):
                continue
            t = np.asarray(b.time_ns, dtype=np.int64)
            have = self.read_series(b.key, int(t.min()), int(t.max())).time_ns
            keep = ~np.isin(t, have) if have.size else np.ones(t.size, dtype=bool)
            if bool(keep.all()):
                out.append(b)
            elif bool(keep.any()):
                out.append(ChunkBatch(b.key, t[keep], np.asarray(b.power_w, dtype=np.float64)[keep],
                                      np.asarray(b.energy_j, dtype=np.float64)[keep],
                                      {k: np.asarray(v, dtype=np.float64)[keep] for k, v in b.extras.items()}))
        return out

    def write_batches(
        self, batches: Sequence[ChunkBatch], *, res_s: float = 0.0,
        declare: Mapping[SeriesKey, SeriesMeta] | None = None, since_ns: int = 0,
        complete: Mapping[SeriesKey, int] | None = None,
    ) -> int:
        """Store each batch as one chunk, all in one transaction. Returns the number of samples.

        `declare`: series metadata to record in the same transaction (from `since_ns`; see `declare_series`).
        `complete`: per series, the time before which every reading is in this write or already stored; the
        watermarks advance in the same transaction, so they never pass a sample that did not commit.
        """
        with self._transaction() as conn:
            if declare:
                self._declare(conn, declare, since_ns)
            n = self._insert_batches(conn, batches, res_s)
            if complete:
                self._advance_watermarks(conn, complete)
            return n

    # -- watermarks: "complete until t" per series -----------------------------------------------------

    def _advance_watermarks(self, conn: sqlite3.Connection, complete: Mapping[SeriesKey, int]) -> None:
        # never backwards: a late flush with an older bound (or a clock step) keeps what was already promised
        conn.executemany(
            "INSERT INTO series_watermark(series_id, complete_ns) VALUES (?, ?)"
            " ON CONFLICT(series_id) DO UPDATE SET complete_ns = max(complete_ns, excluded.complete_ns)",
            [(self._series_id(conn, k), int(t)) for k, t in complete.items()],
        )

    def advance_watermarks(self, complete: Mapping[SeriesKey, int]) -> None:
        """Record that every reading of each series taken before its time is stored (a flush with no samples)."""
        if complete:
            with self._transaction() as conn:
                self._advance_watermarks(conn, complete)

    def watermarks(self) -> dict[SeriesKey, int]:
        """Per series, the time before which the log is complete (series nobody vouched for are absent)."""
        conn = self._conn()
        try:
            rows = conn.execute(
                "SELECT s.host, s.source, s.device, w.complete_ns FROM series_watermark w JOIN series s ON s.id = w.series_id"
            ).fetchall()
        except sqlite3.OperationalError:  # a read-only view of a log older than v3: nobody vouched for anything
            return {}
        return {SeriesKey(h, src, dev): int(t) for h, src, dev, t in rows}

    def _insert_batches(self, conn: sqlite3.Connection, batches: Sequence[ChunkBatch], res_s: float) -> int:
        n_total = 0
        rows = []
        for b in batches:
            if len(b) == 0:
                continue
            cols = chunkcodec.columns(b.time_ns, b.power_w, b.energy_j, b.extras).sorted_by_time()
            rows.append((self._series_id(conn, b.key), res_s, *cols.row()))
            n_total += len(cols)
        if rows:  # one statement for the flush's chunks, not one per series
            conn.executemany(
                "INSERT INTO chunks(series_id, res_s, t0_ns, t1_ns, n, time_ns, power_w, energy_j,"
                " extras_names, extras) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        return n_total

    def write_markers(self, markers: Iterable[Marker]) -> int:
        """Insert markers; (run, seq) duplicates are ignored. Returns how many were new.

        A marker SQLite cannot hold (an integer beyond int64, a lone surrogate…) does not stop the others:
        they are stored, then MarkerRowError names the refused ones. Store faults (disk full, read-only,
        locked) raise sqlite3/OS errors with nothing written, so the caller can keep the batch and retry.
        """
        items = list(markers)
        rows: list[tuple[Marker, tuple[Any, ...]]] = []
        bad: list[tuple[Marker, str]] = []
        for m in items:
            try:
                rows.append((m, _marker_row(m)))
            except ROW_ERRORS as e:  # attrs json cannot encode it
                bad.append((m, f"{type(e).__name__}: {e}"))
        stored = 0
        try:
            with self._transaction() as conn:
                before = conn.total_changes
                conn.executemany(_INSERT_MARKER, [r for _, r in rows])
                stored = conn.total_changes - before
        except ROW_ERRORS:
            # the batch is rolled back; find the bad rows one by one, each in its own transaction
            stored = 0
            for m, r in rows:
                try:
                    with self._transaction() as conn:
                        stored += conn.execute(_INSERT_MARKER, r).rowcount
                except ROW_ERRORS as e:
                    bad.append((m, f"{type(e).__name__}: {e}"))
        if bad:
            raise MarkerRowError(stored, bad)
        return stored

    def write_carbon(self, points: Iterable[CarbonPoint]) -> int:
        rows = [(p.time_ns, p.zone, p.provider, p.intensity_g_per_kwh, int(p.forecast)) for p in points]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO carbon(time_ns, zone, provider, intensity_g_per_kwh, forecast)"
                " VALUES (?,?,?,?,?)",
                rows,
            )
        return len(rows)

    def write_allocations(self, allocations: Iterable[Allocation]) -> int:
        rows = [
            (a.time_ns, a.search, a.gpus_sampling, a.gpus_evaluation, a.lambda_s, a.intensity_g_per_kwh)
            for a in allocations
        ]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO allocation(time_ns, search, gpus_sampling, gpus_evaluation, lambda_s,"
                " intensity_g_per_kwh) VALUES (?,?,?,?,?,?)",
                rows,
            )
        return len(rows)

    # -- reads -----------------------------------------------------------------------------------

    def read_series(
        self,
        key: SeriesKey,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        extras: bool = False,
    ) -> SeriesData:
        """All samples of one series with start_ns <= time <= end_ns, sorted by time."""
        import numpy as np  # readers only: the daemon's write path and housekeeping never load numpy

        conn = self._conn()
        row = conn.execute(
            "SELECT id FROM series WHERE host=? AND source=? AND device=?", (key.host, key.source, key.device)
        ).fetchone()
        empty = SeriesData(key, np.empty(0, np.int64), np.empty(0), np.empty(0))
        if row is None:
            return empty
        lo = -(2**63) if start_ns is None else int(start_ns)
        hi = 2**63 - 1 if end_ns is None else int(end_ns)
        ex_cols = "extras_names, extras" if extras else "NULL, NULL"
        chunks = _in_time_order(conn.execute(
            f"SELECT t0_ns, id, n, time_ns, power_w, energy_j, {ex_cols} FROM chunks"
            " WHERE series_id=? AND t1_ns>=? AND t0_ns<=? ORDER BY t1_ns",
            (row[0], lo, hi),
        ).fetchall())
        if not chunks:
            return empty
        data = _decode_chunks(key, chunks, extras=extras)
        t, p, e, exd = data.time_ns, data.power_w, data.energy_j, data.extras
        i0 = int(np.searchsorted(t, lo, side="left"))
        i1 = int(np.searchsorted(t, hi, side="right"))
        return SeriesData(key, t[i0:i1], p[i0:i1], e[i0:i1], {k: v[i0:i1] for k, v in exd.items()})

    def time_range(self) -> tuple[int, int] | None:
        row = self._conn().execute("SELECT min(t0_ns), max(t1_ns) FROM chunks").fetchone()
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def count_samples(self) -> int:
        return int(self._conn().execute("SELECT coalesce(sum(n), 0) FROM chunks").fetchone()[0])

    def read_markers(self, run: str | None = None, host: str | None = None, *, attrs: bool = True) -> list[Marker]:
        cols = "time_ns, host, run, scope, event, seq, epoch, phase, arch, gpus" + (", attrs" if attrs else "")
        q = f"SELECT {cols} FROM markers"
        cond, args = [], []
        if run is not None:
            cond.append("run=?")
            args.append(run)
        if host is not None:
            cond.append("host=?")
            args.append(host)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        q += " ORDER BY run, seq"
        rows = self._conn().execute(q, args)
        # positional: the columns are selected in Marker's field order (time_ns … arch), then gpus and attrs
        if not attrs:  # pairing and energy read no attrs: no column, no parser (a mapped marker's client_time_ns)
            return [Marker(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], tuple(r[9].split()) if r[9] else ())
                    for r in rows]
        return [
            Marker(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], tuple(r[9].split()) if r[9] else (),
                {} if r[10] == "{}" else json.loads(r[10]),  # a marker with none: skip the parser
            )
            for r in rows
        ]

    def runs(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT run FROM markers ORDER BY run")]

    def read_carbon(
        self, zone: str | None = None, start_ns: int | None = None, end_ns: int | None = None, *, forecast: bool = False
    ) -> list[CarbonPoint]:
        q = "SELECT time_ns, zone, provider, intensity_g_per_kwh, forecast FROM carbon WHERE forecast=?"
        args: list[Any] = [int(forecast)]
        if zone:
            q += " AND zone=?"
            args.append(zone)
        if start_ns is not None:
            q += " AND time_ns>=?"
            args.append(start_ns)
        if end_ns is not None:
            q += " AND time_ns<=?"
            args.append(end_ns)
        q += " ORDER BY time_ns"
        return [CarbonPoint(r[0], r[1], r[2], r[3], bool(r[4])) for r in self._conn().execute(q, args)]

    def read_allocations(self, search: str | None = None) -> list[Allocation]:
        q = "SELECT time_ns, search, gpus_sampling, gpus_evaluation, lambda_s, intensity_g_per_kwh FROM allocation"
        args: list[Any] = []
        if search:
            q += " WHERE search=?"
            args.append(search)
        return [Allocation(*r) for r in self._conn().execute(q + " ORDER BY time_ns", args)]

    def iter_chunks_after(self, after_id: int, limit: int = 1000) -> Iterator[tuple[int, SeriesKey, SeriesData]]:
        """Chunks with id > after_id in id order: what a forwarder tailing the log reads next."""
        import numpy as np  # readers only: the daemon's write path and housekeeping never load numpy

        rows = self._conn().execute(
            "SELECT c.id, s.host, s.source, s.device, c.n, c.time_ns, c.power_w, c.energy_j FROM chunks c"
            " JOIN series s ON s.id = c.series_id WHERE c.id > ? ORDER BY c.id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        for cid, host, source, device, n, t, p, e in rows:
            key = SeriesKey(host, source, device)
            yield cid, key, SeriesData(
                key,
                np.frombuffer(t, "<i8"),
                np.frombuffer(p, "<f8") if p is not None else np.full(n, np.nan),
                np.frombuffer(e, "<f8") if e is not None else np.full(n, np.nan),
            )

    def raw_chunks_after(
        self, after_id: int, limit: int = 1000, max_points: int | None = None
    ) -> list[tuple[int, SeriesKey, SeriesData]]:
        """Raw chunks (res_s = 0) with id > after_id in id order, at most `limit` chunks and — past the first —
        about `max_points` samples: the forwarder's read (aggregates are never forwarded: they would double count)."""
        import numpy as np  # readers only: the daemon's write path and housekeeping never load numpy

        rows = self._conn().execute(  # iterated, not fetched whole: a batch is often far fewer rows than `limit`
            "SELECT c.id, s.host, s.source, s.device, c.n, c.time_ns, c.power_w, c.energy_j FROM chunks c"
            " JOIN series s ON s.id = c.series_id WHERE c.id > ? AND c.res_s = 0 ORDER BY c.id LIMIT ?",
            (after_id, limit),
        )
        out: list[tuple[int, SeriesKey, SeriesData]] = []
        total = 0
        for cid, host, source, device, n, t, p, e in rows:
            if out and max_points is not None and total + n > max_points:
                break
            key = SeriesKey(host, source, device)
            out.append((cid, key, SeriesData(
                key,
                np.frombuffer(t, "<i8"),
                np.frombuffer(p, "<f8") if p is not None else np.full(n, np.nan),
                np.frombuffer(e, "<f8") if e is not None else np.full(n, np.nan),
            )))
            total += n
        rows.close()  # end the statement now: an open one would hold its read snapshot (and the WAL) back
        return out

    def raw_backlog(self, after_id: int) -> tuple[int, int, int | None]:
        """(chunks, samples, newest t1_ns) of raw chunks with id > after_id: what a forwarder has not sent yet."""
        row = self._conn().execute(
            "SELECT count(*), coalesce(sum(n), 0), max(t1_ns) FROM chunks WHERE id > ? AND res_s = 0", (after_id,)
        ).fetchone()
        return int(row[0]), int(row[1]), None if row[2] is None else int(row[2])

    def chunk_t1_ns(self, chunk_id: int) -> int | None:
        """The newest sample time of raw chunks with id <= chunk_id, looking at the last few (cheap, by rowid)."""
        row = self._conn().execute(
            "SELECT max(t1_ns) FROM (SELECT t1_ns FROM chunks WHERE id <= ? AND res_s = 0 ORDER BY id DESC LIMIT 64)",
            (chunk_id,),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def markers_after(self, after_id: int, limit: int = 1000) -> list[tuple[int, Marker]]:
        """Markers with rowid > after_id in id order (insertion order): the forwarder's marker cursor."""
        rows = self._conn().execute(
            "SELECT id, time_ns, host, run, scope, event, seq, epoch, phase, arch, gpus, attrs FROM markers"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [
            (r[0], Marker(time_ns=r[1], host=r[2], run=r[3], scope=r[4], event=r[5], seq=r[6], epoch=r[7], phase=r[8],
                          arch=r[9], gpus=tuple(r[10].split()) if r[10] else (), attrs=json.loads(r[11])))
            for r in rows
        ]

    def allocations_after(self, after_id: int, limit: int = 1000) -> list[tuple[int, Allocation]]:
        """Allocations with rowid > after_id in id order: the forwarder's allocation cursor."""
        rows = self._conn().execute(
            "SELECT id, time_ns, search, gpus_sampling, gpus_evaluation, lambda_s, intensity_g_per_kwh FROM allocation"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [(r[0], Allocation(*r[1:])) for r in rows]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.set_metas({key: value})

    def set_metas(self, items: Mapping[str, str]) -> None:
        """Set several `meta` keys in one transaction."""
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?,?)", list(items.items()))

    # -- maintenance: compaction, downsampling, retention ------------------------------------------

    def compact(self, *, older_than_ns: int, target_n: int = 8192, max_id: int | None = None) -> int:
        """Merge runs of small raw chunks (ending before older_than_ns) into chunks of about target_n samples.

        The merged chunk takes the smallest member id so an id cursor (forwarding) never sees it again;
        only chunks with id <= max_id are touched, so nothing a forwarder has not read yet moves.
        Returns the number of chunks removed.
        """
        conn = self._conn()
        limit = _below_newest(conn, max_id)
        rows = conn.execute(
            "SELECT id, series_id, n FROM chunks WHERE res_s=0 AND t1_ns<? AND id<=? AND n<?"
            " ORDER BY series_id, t0_ns, id",
            (older_than_ns, limit, target_n),
        ).fetchall()
        groups: list[list[int]] = []
        cur: list[int] = []
        cur_sid, cur_n = None, 0
        for cid, sid, n in rows:
            if sid != cur_sid or cur_n + n > target_n:
                if len(cur) > 1:
                    groups.append(cur)
                cur, cur_sid, cur_n = [], sid, 0
            cur.append(cid)
            cur_n += n
        if len(cur) > 1:
            groups.append(cur)
        removed = 0
        for ids in groups:
            removed += self._merge_chunks(conn, ids)
        return removed

    def _merge_chunks(self, conn: sqlite3.Connection, ids: list[int]) -> int:
        q = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT series_id FROM chunks WHERE id IN ({q}) LIMIT 1",
            ids,
        ).fetchone()
        if rows is None:
            return 0
        data = self._read_chunk_ids(conn, ids)
        with self._transaction() as tx:
            tx.execute(f"DELETE FROM chunks WHERE id IN ({q})", ids)
            tx.execute(
                "INSERT INTO chunks(id, series_id, res_s, t0_ns, t1_ns, n, time_ns, power_w, energy_j,"
                " extras_names, extras) VALUES (?,?,0,?,?,?,?,?,?,?,?)",
                (min(ids), rows[0], *data.row()),
            )
        return len(ids) - 1

    def _read_chunk_ids(self, conn: sqlite3.Connection, ids: list[int]) -> chunkcodec.Columns:
        """The chunks' samples in time order, as arrays: housekeeping runs in the daemon, which imports no numpy."""
        q = ",".join("?" * len(ids))
        chunks = _in_time_order(conn.execute(
            f"SELECT t0_ns, id, n, time_ns, power_w, energy_j, extras_names, extras FROM chunks WHERE id IN ({q})",
            ids,
        ).fetchall())
        return chunkcodec.decode(chunks).sorted_by_time()

    def downsample(self, *, older_than_ns: int, period_s: float = 1.0, max_id: int | None = None) -> int:
        """Replace raw chunks that end before older_than_ns by period_s aggregates.

        Aggregate = mean power and the last counter value of each bucket, stamped at the bucket's mean
        sample time, so energy over long windows stays right. Returns raw samples replaced. Only chunks with
        id <= max_id: raw data a forwarder has not sent yet stays raw until it has.
        """
        conn = self._conn()
        rows = conn.execute(
            "SELECT c.id, c.series_id, s.host, s.source, s.device FROM chunks c JOIN series s ON s.id=c.series_id"
            " WHERE c.res_s=0 AND c.t1_ns<? AND c.id<=? ORDER BY c.series_id, c.t0_ns",
            (older_than_ns, _below_newest(conn, max_id)),
        ).fetchall()
        by_series: dict[tuple[int, SeriesKey], list[int]] = defaultdict(list)
        for cid, sid, h, src, dev in rows:
            by_series[(sid, SeriesKey(h, src, dev))].append(cid)
        replaced = 0
        for (_sid, key), ids in by_series.items():
            data = self._read_chunk_ids(conn, ids)
            agg = chunkcodec.aggregate(data, period_s)
            q = ",".join("?" * len(ids))
            with self._transaction() as tx:  # one transaction: the raw chunks go only if their aggregates land
                tx.execute(f"DELETE FROM chunks WHERE id IN ({q})", ids)
                self._insert_batches(tx, [ChunkBatch(key, agg.time_ns, agg.power_w, agg.energy_j)], period_s)
            replaced += len(data)
        return replaced

    def expire(self, *, raw_before_ns: int | None = None, aggregates_before_ns: int | None = None) -> int:
        n = 0
        with self._transaction() as conn:
            if raw_before_ns is not None:
                n += conn.execute("DELETE FROM chunks WHERE res_s=0 AND t1_ns<?", (raw_before_ns,)).rowcount
            if aggregates_before_ns is not None:
                n += conn.execute("DELETE FROM chunks WHERE res_s>0 AND t1_ns<?", (aggregates_before_ns,)).rowcount
        return n

    def maintain(
        self, *, now_ns: int, raw_retention_s: float, aggregate_retention_s: float, aggregate_period_s: float,
        compact_after_s: float = 60.0, max_id: int | None = None,
    ) -> dict[str, int]:
        """One pass of the daemon's housekeeping: compact recent chunks, downsample old ones, expire older.

        max_id: the forwarder's chunk cursor — chunks above it are neither merged nor downsampled (not yet sent)."""
        compacted = self.compact(older_than_ns=now_ns - int(compact_after_s * NS_PER_S), max_id=max_id)
        downsampled = self.downsample(
            older_than_ns=now_ns - int(raw_retention_s * NS_PER_S), period_s=aggregate_period_s, max_id=max_id
        )
        expired = self.expire(aggregates_before_ns=now_ns - int(aggregate_retention_s * NS_PER_S))
        return {"compacted_chunks": compacted, "downsampled_samples": downsampled, "expired_chunks": expired}


def _below_newest(conn: sqlite3.Connection, max_id: int | None) -> int:
    """The highest chunk id maintenance may touch: everything without a forwarder cursor (max_id None); with one,
    at most the cursor and never the newest chunk — deleting the highest id would let the next insert reuse it
    (rowids are max + 1, not AUTOINCREMENT), behind the cursor, and that chunk would never be forwarded."""
    if max_id is None:
        return 2**63 - 1
    newest = conn.execute("SELECT max(id) FROM chunks").fetchone()[0]
    return min(max_id, int(newest) - 1) if newest is not None else max_id


READ_MMAP_BYTES = 1 << 32  # of the log a read-only connection maps (SQLite caps it at its compile-time maximum)


def _in_time_order(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Chunk rows (t0_ns, id, n, time, power, energy, …) sorted by (t0_ns, id), without their first two columns.

    Sorted here, not by an ORDER BY t0_ns: no index gives that order, and SQLite's sorter would copy every blob into
    a temporary B-tree first (a day of ten 10 Hz series read in 0.43 s with it, in half that without)."""
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2:] for r in rows]


def _decode_chunks(key: SeriesKey, chunks: list[tuple[Any, ...]], *, extras: bool) -> SeriesData:
    """Concatenate chunk rows (n, time, power, energy, extras_names, extras) into sorted numpy columns (readers:
    views of the blobs, one copy in the concatenation)."""
    import numpy as np

    ts, ps, es = [], [], []
    names_all = sorted({k for ch in chunks if ch[4] for k in json.loads(ch[4])}) if extras else []
    ex: dict[str, list[np.ndarray]] = {k: [] for k in names_all}
    for n, t, p, e, nm, x in chunks:
        ts.append(np.frombuffer(t, "<i8"))
        ps.append(np.frombuffer(p, "<f8") if p is not None else np.full(n, np.nan))
        es.append(np.frombuffer(e, "<f8") if e is not None else np.full(n, np.nan))
        if names_all:
            names = json.loads(nm) if nm else []
            mat = np.frombuffer(x, "<f8").reshape(n, len(names)) if names and x is not None else None
            for k in names_all:
                ex[k].append(mat[:, names.index(k)] if mat is not None and k in names else np.full(n, np.nan))
    t_all = np.concatenate(ts)
    p_all, e_all = np.concatenate(ps), np.concatenate(es)
    ex_all = {k: np.concatenate(v) for k, v in ex.items()}
    if t_all.size > 1 and not bool((t_all[1:] >= t_all[:-1]).all()):
        order = np.argsort(t_all, kind="stable")  # overlapping chunks (late samples, imports)
        t_all, p_all, e_all = t_all[order], p_all[order], e_all[order]
        ex_all = {k: v[order] for k, v in ex_all.items()}
    return SeriesData(key, t_all, p_all, e_all, ex_all)


def _meta_row(m: SeriesMeta) -> tuple[Any, ...]:
    return (
        m.role, m.device, m.kind, int(m.host_wide), m.power_period_s, m.counter_period_s, m.counter_resolution_j,
        int(m.comparison), m.origin, m.power_min_w, m.power_max_w, m.counter_update_s, m.power_update_s,
    )


def _meta_from_row(cols: Sequence[Any]) -> SeriesMeta:
    role, device, kind, host_wide, power_p, counter_p, res, comparison, origin = cols[:9]
    lo, hi = (cols[9], cols[10]) if len(cols) > 9 else (None, None)  # v4 columns; absent in a read-only v2/v3 log
    c_up, p_up = (cols[11], cols[12]) if len(cols) > 11 else (None, None)  # v5
    return SeriesMeta(
        role=str(role), device=str(device), kind="estimated" if kind == "estimated" else "measured",
        host_wide=bool(host_wide), power_period_s=power_p, counter_period_s=counter_p, counter_resolution_j=res,
        comparison=bool(comparison), origin=str(origin), power_min_w=lo, power_max_w=hi,
        counter_update_s=c_up, power_update_s=p_up,
    )


def _set_wal(conn: sqlite3.Connection, timeout_s: float = 5.0) -> None:
    """WAL mode, retried while another process holds the new file: SQLite answers "database is locked" to the
    switch at once, without its busy handler, when two openers of a brand-new log race."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _split_sql(script: str) -> list[str]:
    # strip comments first: they may contain ';'
    text = "\n".join(ln.split("--", 1)[0] for ln in script.splitlines())
    return [stmt.strip() for stmt in text.split(";") if stmt.strip()]


def open_store(url: str, *, readonly: bool = False) -> SqliteStore:
    """Open the store a --store URL names (SQLite here; the InfluxDB reader plugs in beside it)."""
    path = parse_store_url(url)
    if readonly and not path.exists():
        raise UserError(f"store {path}: no such log — start the daemon first (jouled run) or pass --store")
    if not readonly and path.exists() and not path.is_file():
        raise UserError(f"store {path}: not a file — pass --store sqlite:///path/to/jouled.db")
    return SqliteStore(path, readonly=readonly)
