"""The query core and its Python API: markers → windows → energy rows → run totals → carbon, as typed rows.

    import jouled.query

    q = jouled.query.open()                 # same store as the CLI: $JOULED_STORE, else the config's [store]
    for r in q.runs():
        print(r.run, r.energy_j, r.flags)
    df = q.epochs("resnet-lr0.1").to_pandas()

`EpochRow` and `RunRow` carry exactly the fields of `jouled energy epochs --format json` and
`jouled energy runs --format json` (DESIGN.md "Interfaces"); the CLI serialises these same rows.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from jouled.carbon.series import IntensitySeries
from jouled.config import Config, load_config
from jouled.energy import SeriesArrays
from jouled.errors import UserError
from jouled.rows import MapFn, PendingSeries, energy_rows, energy_table
from jouled.rows import run_totals as _energy_run_totals
from jouled.rowtable import RowTable, gc_paused
from jouled.series import SeriesMeta, meta_or_default, period_or_nan
from jouled.store.reader import ReadStore
from jouled.store.sqlite import SeriesKey, open_store, sqlite_url
from jouled.store.url import is_influx_url
from jouled.windows import Window, windows_from_markers

SCOPES = ("epoch", "phase", "run", "all")
# series read and computed at once: a few per core (each waits on SQLite or numpy with the GIL released)
READ_THREADS = max(2, min(8, 2 * (os.cpu_count() or 1)))
HOST_DEVICES = ("total", "share", "exclude")

ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------------
# Errors: UserError subclasses, so the CLI prints them as one line and a script can catch them by kind
# --------------------------------------------------------------------------------------------------


class QueryError(UserError):
    """A query that cannot be answered (bad store, unknown run, no markers, bad argument)."""


class StoreError(QueryError):
    """The store is missing, unreadable or not a jouled log."""


class NoMarkers(QueryError):
    """The store holds no markers at all."""


class UnknownRun(QueryError):
    """The run has no markers in the store."""


class MissingModule(UserError):
    """An optional module that no extra of jouled brings (pandas, pyarrow) is not installed."""

    def __init__(self, what: str, module: str) -> None:
        super().__init__(f"{what} needs {module!r}, which is not installed — pip install {module}")
        self.module = module


# --------------------------------------------------------------------------------------------------
# Markers → windows → rows (dicts; the typed rows below wrap them)
# --------------------------------------------------------------------------------------------------


def load_series(
    store: ReadStore, host: str | None, start_ns: int, end_ns: int, config: Config | None = None,
    map_fn: MapFn = map,
) -> dict[tuple[str, str], SeriesArrays]:
    """Every series of `host` over [start, end], padded by a margin so edge interpolation has neighbours.

    What each series is — role, measured or estimated, the nominal period of each field — is what its source
    declared when the data was taken (the declaration in force at `start_ns`), stored with the data; a series
    nobody declared (imported samples, an older log) takes `default_meta(source, device)`, whose unknown periods
    are judged against the median spacing of each field's samples. `config` is no longer read (kept for callers).
    ``map_fn``: how the per-series reads are mapped (``map``; `compute_rows` passes a thread pool's — each thread
    reads on its own connection, and SQLite and numpy release the GIL while they work).
    """
    jobs = _series_jobs(store, host, start_ns)

    def read(job: tuple[SeriesKey, SeriesMeta, int]) -> SeriesArrays | None:
        return _read_series(store, job, start_ns, end_ns)

    out: dict[tuple[str, str], SeriesArrays] = {}
    for (key, _m, _g), arrays in zip(jobs, map_fn(read, jobs), strict=True):
        if arrays is not None:
            out[(key.source, key.device)] = arrays
    return out


def _pending_series(
    store: ReadStore, host: str, start_ns: int, end_ns: int, pool: ThreadPoolExecutor,
) -> dict[tuple[str, str], PendingSeries]:
    """`load_series`, with each series' read started on `pool` and not waited for (`jouled.rows.PendingSeries`)."""
    return {
        (job[0].source, job[0].device): PendingSeries(job[1], pool.submit(_read_series, store, job, start_ns, end_ns))
        for job in _series_jobs(store, host, start_ns)
    }


def _series_jobs(store: ReadStore, host: str | None, start_ns: int) -> list[tuple[SeriesKey, SeriesMeta, int]]:
    """Per series of `host`: its key, what it is at `start_ns`, and the margin its read takes either side."""
    jobs: list[tuple[SeriesKey, SeriesMeta, int]] = []
    for key in store.series():
        if host is not None and key.host != host:
            continue
        meta = key.meta
        if meta is not None and store.series_meta_history(key)[-1][0] > start_ns:  # re-declared since: take the older one
            meta = store.series_meta_at(key, start_ns)
        meta = meta_or_default(meta, key.source, key.device)
        periods = [p for p in (meta.power_period_s, meta.counter_period_s) if p is not None]
        margin_ns = int(max([*periods, 1.0]) * 5e9)  # a few periods either side: the samples around each edge
        jobs.append((key, meta, margin_ns))
    return jobs


def _read_series(
    store: ReadStore, job: tuple[SeriesKey, SeriesMeta, int], start_ns: int, end_ns: int,
) -> SeriesArrays | None:
    key, meta, margin_ns = job
    d = store.read_series(key, start_ns - margin_ns, end_ns + margin_ns)
    if len(d) == 0:
        return None
    return SeriesArrays(
        d.time_ns, d.power_w, d.energy_j, key.source, key.device, period_or_nan(meta.power_period_s), meta.estimated,
        counter_period_s=period_or_nan(meta.counter_period_s), meta=meta,
    )


def series_metas(store: ReadStore, host: str | None = None) -> dict[tuple[str, str], SeriesMeta]:
    """What each (source, device) of `host` (None: any host) is: its latest declaration, else the default."""
    return {
        (k.source, k.device): meta_or_default(k.meta, k.source, k.device)
        for k in store.series() if host is None or k.host == host
    }


def run_totals(rows: Sequence[Mapping[str, Any]], store: ReadStore | None = None) -> list[dict[str, Any]]:
    """One dict per run (the fields of `jouled energy runs --format json`), totals chosen by the series' roles.

    Each GPU counts once (NVML preferred to nvidia-smi), CPU packages and DRAM are added (core/uncore lie inside
    the package, psys contains it), a wall meter is `wall_j` beside the total. `store`: where the series'
    declared metadata comes from (None: each row's `role`, else the default from the source name).
    """
    return _energy_run_totals(rows, series_metas(store) if store is not None else None)


def carbon_for(store: ReadStore, config: Config, start_ns: int, end_ns: int) -> IntensitySeries | None:
    """Intensity from the store (zone from config, else any), else the configured constant, else none."""
    pts = store.read_carbon(config.carbon.zone or None, None, end_ns)
    # the value in force at the window start may be older than the window: keep the last before it
    before = [p for p in pts if p.time_ns <= start_ns]
    during = [p for p in pts if p.time_ns > start_ns]
    use = ([before[-1]] if before else []) + during
    if use:
        return IntensitySeries.from_points(use)
    if config.carbon.constant_g_per_kwh > 0:
        return IntensitySeries.constant(config.carbon.constant_g_per_kwh)
    return None


def compute_rows(
    store: ReadStore,
    config: Config,
    run: str | None,
    scopes: Sequence[str],
    host_devices: str = "total",
    on_progress: ProgressFn | None = None,
    wait_live_s: float = 0.0,
) -> tuple[RowTable, list[str]]:
    """Rows of `energy epochs` (one per window and device) for `run` (None: every run), and marker problems.

    `wait_live_s`: when a daemon is logging into this store right now and has not yet flushed past the markers'
    last time (a run that just ended), wait up to this long for it (`wait_live`), so the last window has its samples;
    a host still behind then is one more problem line.

    The rows are a `RowTable`: a read-only sequence of the row dicts, held as columns until a row is read
    (`column(key)` reads one field of every row without building them; `list(rows)` or `rows.rows()` gives a list).
    `on_progress(done, total)` is called with the number of windows done, at the start and after each host.
    """
    # The cyclic collector stays off throughout: tens of thousands of acyclic markers, windows and row columns are
    # built (on this thread and the pool's), and each collection pass walked every one of them again (2-3 % of the
    # call in perf); nothing here makes a cycle.
    with gc_paused():
        return _compute_rows(store, config, run, scopes, host_devices, on_progress, wait_live_s)


def _compute_rows(
    store: ReadStore,
    config: Config,
    run: str | None,
    scopes: Sequence[str],
    host_devices: str,
    on_progress: ProgressFn | None,
    wait_live_s: float,
) -> tuple[RowTable, list[str]]:
    markers = store.read_markers(run, attrs=False)  # pairing and energy read none: 20,000 JSON parses saved
    if not markers:
        if run is None:
            raise NoMarkers(f"store {store.path}: no markers yet — publish some (jouled markers send, jouled train)")
        known = ", ".join(store.runs()[:10]) or "none"
        raise UnknownRun(f"run {run!r}: no markers in {store.path} — known runs: {known}")
    # The series are read while the markers are paired: each host's reads start now, over the span of its markers
    # of these scopes, unless a re-declaration splits its windows (below). When every marker pairs, that span is
    # the windows' own; otherwise (a start without an end, …) the windows' span is read again after the pairing,
    # since the span read decides which declaration applies and the median spacing of undeclared series.
    if wait_live_s > 0:
        last_ns: dict[str, int] = {}
        for m in markers:
            if m.scope in scopes and m.time_ns > last_ns.get(m.host, m.time_ns - 1):
                last_ns[m.host] = m.time_ns
        behind = wait_live(store, last_ns, wait_live_s)
    else:
        behind = []
    changes = {h: _declaration_changes(store, h) for h in {m.host for m in markers}}
    spans: dict[str, tuple[int, int]] = {}
    for m in markers:
        if m.scope in scopes and not changes[m.host]:
            lo, hi = spans.get(m.host, (m.time_ns, m.time_ns))
            spans[m.host] = (min(lo, m.time_ns), max(hi, m.time_ns))
    parts: list[RowTable] = []
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="jouled-query") as pool:
        # what each series is, asked here (the pairing below holds the GIL: a thread asking the store now would
        # wait on it at every query); only the reads go to the pool
        early = {h: _pending_series(store, h, lo, hi, pool) for h, (lo, hi) in spans.items()}
        windows, problems = windows_from_markers(markers)
        windows = [w for w in windows if w.scope in scopes]
        by_host: dict[str, list[Window]] = {}
        for w in windows:
            by_host.setdefault(w.host, []).append(w)
        done = 0
        if on_progress is not None:
            on_progress(0, len(windows))
        for host, ws in by_host.items():
            host_parts: list[RowTable] = []
            segments = _segments(changes[host], ws)
            for seg in segments:
                start = min(w.start_ns for w in seg)
                end = max(w.end_ns for w in seg)
                # the early reads are these very reads when every marker paired (the usual case): the same span
                series: Mapping[tuple[str, str], SeriesArrays | PendingSeries]
                pending = early.pop(host, None)
                if pending is not None and (start, end) == spans[host]:
                    series = pending
                else:
                    _cancel(pending or {})  # markers that did not pair widened the span: read again
                    series = load_series(store, host, start, end, config, map_fn=pool.map)
                host_parts.append(energy_table(
                    seg, series, carbon=carbon_for(store, config, start, end),
                    host_devices=host_devices, map_fn=pool.map,  # type: ignore[arg-type]
                ))
            # one segment (the usual case) is in window order already
            if len(host_parts) > 1:
                host_parts = [RowTable.from_dicts(_in_window_order([r for p in host_parts for r in p], ws))]
            parts.extend(host_parts)
            done += len(ws)
            if on_progress is not None:
                on_progress(done, len(windows))
        for unused in early.values():  # a host with markers of these scopes but no window of them
            _cancel(unused)
    if len(parts) == 1:
        return parts[0], [str(p) for p in problems] + behind
    return RowTable.from_dicts([r for p in parts for r in p]), [str(p) for p in problems] + behind


def compute_run_rows(
    store: ReadStore,
    config: Config,
    on_progress: ProgressFn | None = None,
    wait_live_s: float = 0.0,
) -> tuple[RowTable, list[str]]:
    """The rows `energy runs` totals (`run_totals`): each run's `run` window; a run without one — its markers are
    epochs only (an import, a loop that never sent run markers), or it has not ended yet — its epoch and phase
    windows, from which `run_totals` takes the epochs, else the phases (its `basis`). Marker problems as
    `compute_rows` gives them, each once."""
    rows, problems = compute_rows(store, config, None, ("run",), on_progress=on_progress, wait_live_s=wait_live_s)
    have = set(rows.column("run")) if len(rows) else set()
    missing = [r for r in store.runs() if r not in have]
    if not missing:
        return rows, problems
    more: list[dict[str, Any]] = list(rows)
    for run in missing:
        # its problems were in the first call's already (it paired every run's markers)
        got, _same_problems = compute_rows(store, config, run, ("epoch", "phase"))
        if _started_not_ended(store.read_markers(run, attrs=False)):  # `open` in its flags: its finished windows so far
            more.extend({**r, "flags": (*r["flags"], OPEN)} for r in got)
        else:
            more.extend(got)
    return RowTable.from_dicts(more), problems


OPEN = "open"  # a run's flag in `energy runs`: it started and has not ended (yet): the figures are its finished windows'


def _started_not_ended(markers: Sequence[Any]) -> bool:
    starts = {m.host for m in markers if m.scope == "run" and m.event == "start"}
    ends = {m.host for m in markers if m.scope == "run" and m.event == "end"}
    return bool(starts - ends)


def _cancel(pending: Mapping[tuple[str, str], PendingSeries]) -> None:
    """Reads not wanted after all: those not started yet never run (a running one finishes, unused)."""
    for p in pending.values():
        p.arrays.cancel()


def _declaration_changes(store: ReadStore, host: str) -> list[int]:
    """When a series of `host` was re-declared (a restart with another rate), in time order; usually none."""
    return sorted({since for k in store.series() if k.host == host and k.meta is not None
                   for since, _m in store.series_meta_history(k)[1:]})


def _segments(changes: list[int], windows: list[Window]) -> list[list[Window]]:
    """Windows split where a series of their host was re-declared (`_declaration_changes`), so each window is
    judged by the metadata in force when it started; one segment (the usual case) when nothing changed."""
    if not changes:
        return [windows]
    by_seg: dict[int, list[Window]] = {}
    for w in windows:
        by_seg.setdefault(bisect.bisect_right(changes, w.start_ns), []).append(w)
    return [by_seg[i] for i in sorted(by_seg)]


def _in_window_order(rows: list[dict[str, Any]], windows: list[Window]) -> list[dict[str, Any]]:
    """Rows of segments put back in the order of `windows` (stable within a window)."""
    order: dict[tuple[Any, ...], int] = {}
    for i, w in enumerate(windows):
        order.setdefault((w.run, w.scope, w.epoch, w.phase, w.start_ns, w.end_ns), i)
    return sorted(rows, key=lambda r: order.get((r["run"], r["scope"], r["epoch"], r["phase"], r["start_ns"], r["end_ns"]), 0))


# --------------------------------------------------------------------------------------------------
# Typed rows
# --------------------------------------------------------------------------------------------------


R = TypeVar("R", bound="_Row")
_SEQ_TYPES = (list, tuple)


class _Row:
    """Shared by the row types: built from and turned back into the JSON dicts of the CLI, key order kept.

    A row's `__dict__` is its JSON object: the contract's keys in the contract's order, an optional field (`share`,
    `carbon_g`) only when the row has it — one it lacks reads as the class's default, None. Rows are built by giving
    each its dict as `__dict__` (a frozen dataclass's __init__ costs an object.__setattr__ per field, seconds on
    100,000 rows); the field lists are computed once per class. A row built by the dataclass's own __init__ (or
    `dataclasses.replace`) has every field, its optional ones too.
    """

    _optional: ClassVar[frozenset[str]] = frozenset()  # keys the JSON has only sometimes
    _seq_fields: ClassVar[tuple[str, ...]] = ()  # lists in the JSON, tuples in the row
    _map_fields: ClassVar[tuple[str, ...]] = ()  # objects in the JSON

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names: tuple[str, ...] | None = cls.__dict__.get("_names_cache")
        if names is None:
            names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            cls._names_cache = names  # type: ignore[attr-defined]
            cls._names_set = frozenset(names)  # type: ignore[attr-defined]
        return names

    @classmethod
    def _order(cls, keys: Iterable[str]) -> tuple[str, ...]:
        """`keys` in the contract's order; TypeError naming an unknown or a missing field."""
        names = cls._names()
        have = set(keys)
        unknown = [k for k in have if k not in cls._names_set]  # type: ignore[attr-defined]
        if unknown:
            # a new JSON field must be added here too: the rows ARE the JSON contract
            raise TypeError(f"{cls.__name__}: unknown field(s) {sorted(unknown)} — add them to jouled.query.{cls.__name__}")
        missing = [k for k in names if k not in have and k not in cls._optional]
        if missing:
            raise TypeError(f"{cls.__name__}: field(s) {missing} missing")
        return tuple(k for k in names if k in have)

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        return cls.from_dicts([d])[0]

    @classmethod
    def from_dicts(cls: type[R], dicts: Iterable[Mapping[str, Any]]) -> list[R]:
        """``[from_dict(d) for d in dicts]``, each distinct key order checked once instead of once per row: what
        100,000 rows cost is then the objects and their copied dicts (`from_table` takes a table's own dicts)."""
        orders: dict[tuple[str, ...], tuple[str, ...] | None] = {}  # a key order → the contract's (None: the same)

        def copies() -> Iterator[dict[str, Any]]:
            for d in dicts:
                keys = tuple(d)
                if keys in orders:
                    order = orders[keys]
                else:
                    contract = cls._order(keys)  # raises on an unknown or missing field
                    order = orders[keys] = None if contract == keys else contract
                yield dict(d) if order is None else {k: d[k] for k in order}

        return cls._adopt(copies())

    @classmethod
    def _adopt(cls: type[R], dicts: Iterable[dict[str, Any]]) -> list[R]:
        """Each dict (the contract's keys in its order, nobody else's) becomes a row's `__dict__`, list fields as
        tuples."""
        seq, new = cls._seq_fields, object.__new__
        set_dict = object.__setattr__  # a frozen dataclass refuses `obj.__dict__ = …` through its own __setattr__
        out: list[R] = []
        append = out.append
        for d in dicts:
            for k in seq:
                if type(d[k]) is not tuple:
                    d[k] = tuple(d[k])
            obj = new(cls)
            set_dict(obj, "__dict__", d)
            append(obj)
        return out

    @classmethod
    def from_table(cls: type[R], table: RowTable) -> list[R]:
        """The rows of a `compute_rows` table its caller gives up (the Python API's `epochs()`): each row's dict, built
        once by the table, becomes the row's `__dict__`. The table builds every row of a series from one template, so
        checking a row of each shape (`RowTable.examples`) checks them all; each row's list fields are still looked
        at. On this project's VM, 100,000 rows: ~0.08 s here against ~0.3 s through `from_dicts`, which looks at
        every row's keys and copies its dict."""
        for d in table.examples():
            keys = tuple(d)
            if cls._order(keys) != keys:  # raises on an unknown or missing field
                return cls.from_dicts(table.rows())  # not in the contract's order (never, today): copies in order
        return cls._adopt(table.rows())

    @classmethod
    def conform(cls, dicts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """What ``[from_dict(d).to_dict() for d in dicts]`` gives, without building 100,000 rows to get it.

        Each distinct key order is checked once (an unknown or missing field raises as `from_dict` does); when
        every order is the contract's and every list field a list, the dicts ARE the contract and come back as they
        are (the same objects); otherwise every row is rebuilt. A list field may be a tuple (`energy_rows` shares one
        tuple of flag names between rows): JSON and CSV write both alike.
        """
        checked: dict[tuple[str, ...], bool] = {}
        seq = cls._seq_fields
        same = True
        for d in dicts:
            keys = tuple(d)
            ok = checked.get(keys)
            if ok is None:
                ok = checked[keys] = cls._order(keys) == keys
            if not ok or not all(type(d[k]) in _SEQ_TYPES for k in seq):
                same = False
                break
        if same and not cls._map_fields:
            if isinstance(dicts, RowTable):
                return dicts.rows()  # the table's own dicts (built once)
            return dicts if isinstance(dicts, list) else [dict(d) for d in dicts]
        return [cls.from_dict(d).to_dict() for d in dicts]

    def to_dict(self) -> dict[str, Any]:
        """The row as the CLI's JSON has it: same keys, same order, lists for lists."""
        out = dict(self.__dict__)
        for k in self._seq_fields:
            out[k] = list(out[k])
        for k in self._map_fields:
            out[k] = dict(out[k])
        return out


@dataclass(frozen=True)
class EpochRow(_Row):
    """Energy of one window (epoch, phase or run) on one device: a row of `jouled energy epochs --format json`."""

    _optional: ClassVar[frozenset[str]] = frozenset({"share", "carbon_g"})
    _seq_fields: ClassVar[tuple[str, ...]] = ("flags",)

    run: str
    scope: str
    epoch: int | None
    phase: str | None
    arch: str | None
    host: str
    source: str
    device: str
    role: str  # what the series is (jouled.series): gpu, package, dram, core, uncore, psys, wall, cpu-estimate, other
    start: str  # RFC 3339 UTC, ns
    end: str
    start_ns: int
    end_ns: int
    duration_s: float
    energy_j: float | None  # None: no usable samples
    method: str  # counter | integral | none
    samples: int
    max_gap_s: float
    flags: tuple[str, ...]
    share: float | None = None  # --host-devices share: the fraction of a host-wide device billed to the run
    carbon_g: float | None = None  # when an intensity is known


@dataclass(frozen=True)
class RunRow(_Row):
    """One run's totals: a row of `jouled energy runs --format json`."""

    _seq_fields: ClassVar[tuple[str, ...]] = ("total_devices", "flags")
    _map_fields: ClassVar[tuple[str, ...]] = ("energy_j_by_device",)

    run: str
    basis: str  # the scope the figures come from: run, else epoch, else phase
    start: str
    end: str
    start_ns: int
    end_ns: int
    duration_s: float
    energy_j_by_device: Mapping[str, float | None]  # "source:device" → J
    energy_j: float | None  # the devices in total_devices, each counted once; None: nothing was measured
    total_devices: tuple[str, ...]
    wall_j: float | None  # a wall meter, beside the total, never added to it
    carbon_g: float | None
    flags: tuple[str, ...]


class Rows(list[R], Generic[R]):
    """A list of rows with `.to_dicts()` (the CLI's JSON) and `.to_pandas()` (needs pandas)."""

    _table: RowTable | None = None  # the table whose own dicts the rows are (`epoch_rows`): to_pandas reads its columns

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self]

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one column per field (flags and device maps stay Python objects).

        The frame `pandas.DataFrame(self.to_dicts())` gives (a field only some rows have, `share` or `carbon_g`, is
        a column in the order it first appears, NaN where a row lacks it), built from columns: pandas takes a list
        per column far faster than a dict per row."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingModule("to_pandas()", "pandas") from None
        if not self:
            return pd.DataFrame([])
        names, optional = type(self[0])._names(), self[0]._optional
        # each optional field from the first row that has it; those of the first row in the contract's order
        first = {k: next((i for i, r in enumerate(self) if k in r.__dict__), -1) for k in optional}
        order = [k for k in names if k not in optional or first[k] == 0]
        order += sorted((k for k in optional if first[k] > 0), key=lambda k: (first[k], names.index(k)))
        missing = float("nan")
        cols: dict[str, list[Any]] = {}
        table = self._table
        if table is not None and (len(table) != len(self) or not all(
                r.__dict__ is d for r, d in zip(self, table.rows(), strict=True))):
            table = None  # rows added, removed or reordered since `epochs()` built them: read the rows themselves
        for k in order:
            if table is not None:  # the rows are the table's own dicts, unchanged (frozen): read its columns
                col = table.columns_as_built(k, missing)
                cols[k] = [list(v) for v in col] if k in self[0]._seq_fields else col
            elif k in self[0]._optional:
                cols[k] = [r.__dict__.get(k, missing) for r in self]
            elif k in self[0]._seq_fields:
                cols[k] = [list(r.__dict__[k]) for r in self]
            elif k in self[0]._map_fields:
                cols[k] = [dict(r.__dict__[k]) for r in self]
            else:
                cols[k] = [r.__dict__[k] for r in self]
        return pd.DataFrame(cols)


def epoch_rows(dicts: Iterable[Mapping[str, Any]]) -> Rows[EpochRow]:
    """Typed rows from the JSON dicts (copied); a `RowTable` of `compute_rows` its caller gives up: its own dicts
    (`_Row.from_table`)."""
    with gc_paused():  # 100,000 new objects: the cyclic collector's passes over them cost more than building them
        if isinstance(dicts, RowTable):
            rows = Rows(EpochRow.from_table(dicts))
            rows._table = dicts
            return rows
        return Rows(EpochRow.from_dicts(dicts))


def run_rows(dicts: Iterable[Mapping[str, Any]]) -> Rows[RunRow]:
    return Rows(RunRow.from_dicts(dicts))


# --------------------------------------------------------------------------------------------------
# The API object
# --------------------------------------------------------------------------------------------------


def resolve(store_url: str | None = None, config: str | Path | Config | None = None) -> tuple[Config, str]:
    """Config and store URL exactly as the CLI resolves them: argument, else $JOULED_STORE, else the config's store."""
    import os

    cfg = config if isinstance(config, Config) else load_config(config)
    url = store_url or os.environ.get("JOULED_STORE") or sqlite_url(cfg.store_path())
    return cfg, url


def open_readonly(url: str, config: Config | None = None) -> ReadStore:
    """The store at `url` (sqlite:///…, influx://…, influx2://…), read-only; any failure is a StoreError with one line.

    `config`: where an InfluxDB store's credentials come from ([influx] username, password_file, token_file);
    None: the default config."""
    try:
        if is_influx_url(url):
            from jouled.store.influx import open_influx

            return open_influx(url, config)
        st = open_store(url, readonly=True)
        st.series()  # touch the schema now: a file that is not a jouled log fails here, not mid-query
        return st
    except StoreError:
        raise
    except UserError as e:
        raise StoreError(e.message) from None
    except sqlite3.DatabaseError as e:
        raise StoreError(f"store {url}: not a jouled SQLite log ({e}) — pass --store sqlite:///path/to/jouled.db") from None


class Query:
    """Read-only queries over one store. Build it with `jouled.query.open(...)`."""

    def __init__(self, store: ReadStore, config: Config, store_url: str) -> None:
        self.store, self.config, self.store_url = store, config, store_url

    def run_ids(self) -> list[str]:
        """The run ids that have markers in the store."""
        return self.store.runs()

    def runs(self, on_progress: ProgressFn | None = None) -> Rows[RunRow]:
        """One row per run (the fields of `jouled energy runs --format json`)."""
        try:
            rows, _problems = compute_run_rows(self.store, self.config, on_progress, wait_live_s=live_wait_s(self.config))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.store.path}: unreadable ({e}) — pass --store sqlite:///path/to/jouled.db") from None
        return run_rows(run_totals(rows, self.store))

    def epochs(
        self, run: str, scope: str = "epoch", host_devices: str = "total", on_progress: ProgressFn | None = None
    ) -> Rows[EpochRow]:
        """One row per window of `scope` (epoch | phase | run | all) and device (`jouled energy epochs --format json`)."""
        if scope not in SCOPES:
            raise QueryError(f"scope {scope!r}: choose epoch, phase, run or all")
        if host_devices not in HOST_DEVICES:
            raise QueryError(f"host_devices {host_devices!r}: choose total, share or exclude")
        scopes = ("epoch", "phase", "run") if scope == "all" else (scope,)
        rows, _problems = self._rows(run, scopes, host_devices, on_progress)
        return epoch_rows(rows)  # the table is this call's alone: its row dicts, built once, become the rows

    def problems(self, run: str | None = None) -> list[str]:
        """Markers that could not be paired (an end without a start, …), one sentence each."""
        markers = self.store.read_markers(run)
        return [str(p) for p in windows_from_markers(markers)[1]]

    def _rows(
        self, run: str | None, scopes: Sequence[str], host_devices: str, on_progress: ProgressFn | None
    ) -> tuple[RowTable, list[str]]:
        try:
            # as the CLI: a run that just ended gets the samples of the daemon's last flush interval
            return compute_rows(self.store, self.config, run, scopes, host_devices, on_progress,
                                wait_live_s=live_wait_s(self.config))
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.store.path}: unreadable ({e}) — pass --store sqlite:///path/to/jouled.db") from None

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Query:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(store_url: str | None = None, config: str | Path | Config | None = None) -> Query:
    """A read-only query over the store the CLI would use (`store_url`, else $JOULED_STORE, else the config's store).

    `config`: a path to a TOML config, a `jouled.config.Config`, or None ($JOULED_CONFIG, /etc/jouled/jouled.toml,
    built-in defaults). Errors are `QueryError`s (a `jouled.errors.UserError`) with one line naming the fix.
    """
    cfg, url = resolve(store_url, config)
    return Query(open_readonly(url, cfg), cfg, url)


# --------------------------------------------------------------------------------------------------
# The energy of one window as a measurement (jouled.measure(), RunHandle.energy())
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceEnergy:
    """Energy of the measured window on one device, with the evidence behind it (as a row of `energy epochs`)."""

    source: str
    device: str
    energy_j: float | None  # None: no usable samples
    method: str  # counter | integral | none
    samples: int
    max_gap_s: float
    flags: tuple[str, ...]


@dataclass
class Measurement:
    """The energy of one window: what `jouled.measure()` and `RunHandle.energy()` return.

    `energy_j` is the total of `total_devices` (each GPU once; CPU packages and DRAM; a wall meter beside it as
    `wall_j`); `energy_j_by_device` maps `source:device` to joules; `method` is `counter`, `integral`, `mixed` or
    `none`; `flags` the union of the devices' quality flags (`sparse`, `gap`, `edge`, `estimated`, …).
    """

    start_ns: int = 0
    end_ns: int = 0
    duration_s: float = 0.0
    energy_j: float | None = None
    energy_j_by_device: dict[str, float | None] = field(default_factory=dict)
    total_devices: tuple[str, ...] = ()
    wall_j: float | None = None
    carbon_g: float | None = None
    method: str = "none"
    flags: tuple[str, ...] = ()
    samples: int = 0
    devices: tuple[DeviceEnergy, ...] = ()
    sources: tuple[str, ...] = ()  # the sources that sampled
    unavailable: dict[str, str] = field(default_factory=dict)  # source → why it did not sample (jouled.measure)
    done: bool = False

    def __str__(self) -> str:
        if not self.done:
            return "Measurement(running)"
        total = "—" if self.energy_j is None else f"{self.energy_j:.2f} J"
        flags = f" [{' '.join(self.flags)}]" if self.flags else ""
        return f"{total} in {self.duration_s:.3f} s ({self.method}; {', '.join(self.total_devices) or 'no device'}){flags}"


def measure_window(
    series: Mapping[tuple[str, str], SeriesArrays],
    start_ns: int,
    end_ns: int,
    *,
    gpus: Sequence[str] = (),
    carbon: IntensitySeries | None = None,
    into: Measurement | None = None,
) -> Measurement:
    """The window's energy from samples: `energy_rows` for the devices, `run_totals` for the total (no I/O)."""
    m = into if into is not None else Measurement()
    m.start_ns, m.end_ns = start_ns, end_ns
    w = Window(run="window", scope="run", epoch=None, phase=None, arch=None, gpus=tuple(gpus), start_ns=start_ns,
               end_ns=end_ns)
    rows = energy_rows([w], series, carbon=carbon)
    m.duration_s = (end_ns - start_ns) * 1e-9
    m.devices = tuple(
        DeviceEnergy(r["source"], r["device"], r["energy_j"], r["method"], r["samples"], r["max_gap_s"], tuple(r["flags"]))
        for r in rows
    )
    m.samples = sum(d.samples for d in m.devices)
    if not m.sources:
        m.sources = tuple(sorted({src for src, _dev in series}))
    if rows:
        tot = _energy_run_totals(rows, {k: s.meta for k, s in series.items() if s.meta is not None})[0]
        m.energy_j_by_device = dict(tot["energy_j_by_device"])
        m.total_devices = tuple(tot["total_devices"])
        m.energy_j = None if not m.total_devices or tot["energy_j"] is None else float(tot["energy_j"])
        m.wall_j = tot["wall_j"]
        m.carbon_g = tot["carbon_g"]
        m.flags = tuple(tot["flags"])
        used = {d.method for d in m.devices if f"{d.source}:{d.device}" in m.total_devices} or {"none"}
        m.method = used.pop() if len(used) == 1 else "mixed"
    m.done = True
    return m


# --------------------------------------------------------------------------------------------------
# Waiting on the daemon's watermark: "complete until t" per series (store schema v3)
# --------------------------------------------------------------------------------------------------

LIVE_LOOKBACK_S = 60.0  # a series whose watermark is older than this before `until` is no longer sampled


def _needed_ns(key: SeriesKey, until_ns: int, neighbours: bool) -> int:
    """The watermark a series needs: past `until`, plus two nominal periods when the reading after it is wanted
    (a window's edge interpolates between the samples around it)."""
    if not neighbours:
        return until_ns + 1
    meta = meta_or_default(key.meta, key.source, key.device)
    periods = [p for p in (meta.power_period_s, meta.counter_period_s) if p is not None and p > 0]
    return until_ns + int(2e9 * max(periods, default=1.0)) + 1


def lagging_series(
    store: ReadStore, until_ns: int, *, host: str | None = None, since_ns: int | None = None, neighbours: bool = True
) -> list[SeriesKey] | None:
    """The live series of `host` whose log is not yet complete until `until_ns` (see `wait_complete`).

    A series is live when its watermark reached `since_ns` (default: LIVE_LOOKBACK_S before `until_ns`).
    None: no series is live yet (a daemon that has not flushed once, or a log no daemon writes).
    """
    since = until_ns - int(LIVE_LOOKBACK_S * 1e9) if since_ns is None else since_ns
    marks = store.watermarks()
    keys = {k: k for k in store.series()}  # with their metadata, for the periods
    live = [(keys.get(k, k), t) for k, t in marks.items() if (host is None or k.host == host) and t >= since]
    if not live:
        return None
    return [k for k, t in live if t < _needed_ns(k, until_ns, neighbours)]


def live_wait_s(config: Config) -> float:
    """How long a query waits for a running daemon to flush past a run that just ended: three of its flush
    intervals (as configured here), 3 s at least."""
    return max(3.0, 3 * config.daemon.flush_interval_s)


def wait_live(store: ReadStore, until_ns_by_host: Mapping[str, int], timeout_s: float, poll_s: float = 0.05) -> list[str]:
    """Wait, up to `timeout_s` in all, until the daemon logging into `store` right now holds every reading before each
    host's time (and the one after it: `wait_complete`); one line per host still behind then (none: nothing to wait
    for). Waits only where waiting can help: a SQLite log a running daemon holds (its lock), with series it has
    flushed in the last minute (`lagging_series`); a log nobody writes, an old run or an InfluxDB store return at once.
    Why: a query right after a run ended (`jouled train … && jouled energy epochs`) would otherwise miss the samples
    of the run's last flush interval, and its last window would come out short."""
    import time as _time

    path = getattr(store, "path", None)
    if timeout_s <= 0 or not until_ns_by_host or not isinstance(path, Path):
        return []
    from jouled.daemonproc import lock_holder

    if lock_holder(path) is None:
        return []
    deadline = _time.monotonic() + timeout_s
    behind: list[str] = []
    now_ns = _time.time_ns()
    for host, until_ns in sorted(until_ns_by_host.items()):
        # live: flushed within the lookback of now, not only of the run's end. A run that ended minutes ago, whose
        # daemon stopped with it, is not waited for because another daemon (another host tag) holds the log now.
        since_ns = max(until_ns, now_ns) - int(LIVE_LOOKBACK_S * 1e9)
        if not lagging_series(store, until_ns, host=host, since_ns=since_ns):  # None: not being logged; []: complete
            continue
        try:
            wait_complete(store, until_ns, max(0.0, deadline - _time.monotonic()), host=host, since_ns=since_ns,
                          poll_s=poll_s)
        except TimeoutError as e:
            behind.append(f"host {host}: {e} (the last window may lack samples)")
    return behind


def wait_complete(
    store: ReadStore,
    until_ns: int,
    timeout_s: float = 30.0,
    *,
    host: str | None = None,
    since_ns: int | None = None,
    neighbours: bool = True,
    poll_s: float = 0.02,
) -> None:
    """Wait until the daemon's log holds every reading taken before `until_ns` of every live series of `host`.

    The daemon advances each series' watermark with each flush, in the same transaction as the samples, so this
    never returns while a reading before `until_ns` is still in memory. `neighbours` (default) also waits for the
    reading after `until_ns` (two nominal periods), so a window ending there has its edge sample.
    Raises TimeoutError with one line naming the lagging series.
    """
    import time as _time

    deadline = _time.monotonic() + timeout_s
    while True:
        lagging = lagging_series(store, until_ns, host=host, since_ns=since_ns, neighbours=neighbours)
        if lagging == []:
            return
        if _time.monotonic() >= deadline:
            what = (
                "no series is being logged (no daemon has flushed into it)" if lagging is None
                else "not complete for " + ", ".join(f"{k.source} {k.device}" for k in lagging)
            )
            raise TimeoutError(
                f"store {store.path}: {what} after {timeout_s:g} s — is the daemon (jouled run) running on this store?"
            )
        _time.sleep(poll_s)


def wait_window(
    store_url: str,
    config: Config,
    host: str,
    start_ns: int,
    end_ns: int,
    *,
    gpus: Sequence[str] = (),
    timeout_s: float = 30.0,
    poll_s: float = 0.1,
    lookback_s: float = 5.0,
    waited_s: float = 0.0,
) -> Measurement:
    """Wait until the log is complete past `end_ns` for every series of `host` that was sampling during the window
    (its watermark, plus the reading after the end: see `wait_complete`), then measure it. A series was sampling
    when its watermark or a sample reached start − lookback. A series no daemon vouched for (a log written before
    schema v3) counts as complete once it holds a sample past `end_ns`.

    Raises TimeoutError with one line when the log does not get there within `timeout_s` (the message counts
    `waited_s` too: what a caller already spent of the user's timeout before calling).
    """
    import time as _time

    deadline = _time.monotonic() + timeout_s
    path = url_path(store_url)
    lagging: list[str] = []
    while True:
        st = None
        if path is None or path.exists():
            try:
                st = open_readonly(store_url)
            except StoreError:
                st = None
        if st is not None:
            try:
                keys = [k for k in st.series() if k.host == host]
                marks = st.watermarks()  # empty for a log no v3 daemon wrote: then "a sample past the end" is the sign
                since = start_ns - int(lookback_s * 1e9)
                active = [k for k in keys if marks.get(k, since - 1) >= since or len(st.read_series(k, since, end_ns))]
                lagging = [
                    f"{k.source} {k.device}" for k in active
                    if (marks[k] < _needed_ns(k, end_ns, True) if k in marks else not len(st.read_series(k, end_ns + 1, None)))
                ]
                if active and not lagging:
                    series = load_series(st, host, start_ns, end_ns, config)
                    return measure_window(series, start_ns, end_ns, gpus=gpus, carbon=carbon_for(st, config, start_ns, end_ns))
            finally:
                st.close()
        if _time.monotonic() >= deadline:
            where = f"in {path or store_url}"
            timeout_s = waited_s + timeout_s  # the user's whole timeout, for the message
            if lagging:
                raise TimeoutError(
                    f"no samples after the window's end from {', '.join(lagging)} {where} after {timeout_s:g} s"
                    " — is the daemon still running and flushing?"
                )
            raise TimeoutError(
                f"no samples of host {host!r} around the window {where} after {timeout_s:g} s — is the daemon running"
                " (jouled run) on this store with the same [daemon] host?"
            )
        _time.sleep(poll_s)


def url_path(store_url: str) -> Path | None:
    """The log file of a sqlite:/// URL (None for URLs this reader cannot open; open_readonly then says why)."""
    from jouled.store.sqlite import parse_store_url

    try:
        return parse_store_url(store_url)
    except UserError:
        return None
