"""Energy rows held as columns: the rows of `energy epochs` as a read-only sequence whose dicts are built when asked.

`jouled.rows.energy_table` computes each series' numbers over its windows as columns (Python lists); a `RowTable`
keeps those columns and the windows' own fields, and builds a row's dict (the JSON contract of
`jouled energy epochs`) only when that row is read. A command that reads every row (JSON, CSV) pays for the dicts
as before; one that reads columns and a few rows (the table: its first and last rows, whether any row has carbon,
which windows have no samples) never builds the other 100,000. Each row's dict is built once and kept, so reading
a row twice gives the same object, as a list would.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, overload

from jouled.energy import NO_SAMPLES
from jouled.jsonout import dumps_at_level, dumps_indent2

Row = dict[str, Any]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while many acyclic containers are built (they cannot leak a cycle), back on
    after (when it was on): each generation-0 pass otherwise walks the young rows, and the full passes all of them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_WINDOW_KEYS = ("run", "scope", "epoch", "phase", "arch", "host", "start", "end", "start_ns", "end_ns", "duration_s")
_SERIES_CONST = {"source": "src", "device": "dev", "role": "role"}
# a row's keys in the contract's order (then `share` and `carbon_g` when the row has them)
_ROW_KEYS = ("run", "scope", "epoch", "phase", "arch", "host", "source", "device", "role", "start", "end", "start_ns",
             "end_ns", "duration_s", "energy_j", "method", "samples", "max_gap_s", "flags")
_SERIES_KEYS = ("energy_j", "method", "samples", "max_gap_s", "flags", "share", "carbon_g")


@dataclass(frozen=True, slots=True)
class WindowColumns:
    """The windows' own fields, one list per field, in window order (`start`/`end` formatted once per window)."""

    run: list[str]
    scope: list[str]
    epoch: list[int | None]
    phase: list[str | None]
    arch: list[str | None]
    host: list[str]
    start: list[str]
    end: list[str]
    start_ns: list[int]
    end_ns: list[int]
    duration_s: list[float]

    def __len__(self) -> int:
        return len(self.run)


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """One series' row fields over the windows it counts for (`idx` into the windows; None: every window)."""

    src: str
    dev: str
    role: str
    idx: list[int] | None
    energy_j: list[float | None]
    method: list[str]
    samples: list[int]
    max_gap_s: list[float]
    flags: list[tuple[str, ...]]  # one shared tuple per distinct flag set: rows of scalars the GC never tracks
    share: list[float] | None  # present only for host devices under `--host-devices share`
    carbon_g: list[float | None] | None  # present when the intensity is known


class RowTable(Sequence[Row]):
    """The rows, window by window and within a window in series order; `column(key)` reads a field of every row.

    Row order: with every series counting in every window (the usual case) row k is window k // S, series k % S;
    otherwise `order` lists (window, series, position in that series' columns) per row, series -1 being the
    `no-samples` row of a window no series has samples for.
    """

    __slots__ = ("_cache", "_n", "_order", "_series", "_win", "_with_carbon")

    def __init__(
        self, windows: WindowColumns, series: Sequence[SeriesColumns], *, with_carbon: bool,
        order: tuple[list[int], list[int], list[int]] | None = None,
    ) -> None:
        self._win = windows
        self._series = list(series)
        self._order = order
        self._with_carbon = with_carbon
        self._n = len(order[0]) if order is not None else len(windows) * len(self._series)
        self._cache: list[Row | None] | None = None

    @classmethod
    def from_dicts(cls, rows: list[Row]) -> RowTable:
        """A table of rows already built (several hosts or segments joined): the dicts are its columns."""
        t = cls(WindowColumns([], [], [], [], [], [], [], [], [], [], []), [], with_carbon=False)
        t._n = len(rows)
        t._cache = list(rows)
        return t

    # -- the sequence -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("RowTable index out of range")
        cache = self._cache
        if cache is None:
            cache = self._cache = [None] * self._n
        row = cache[i]
        if row is None:
            row = cache[i] = self._row(*self._where(i))
        return row

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowTable | list | tuple):
            return self.rows() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable rows, as a list's

    def __repr__(self) -> str:
        return f"RowTable({self._n} rows)"

    def examples(self) -> list[Row]:
        """A row of each shape the table has (each series' key set, the no-samples row), built and not kept: what a
        check of the keys against the contract needs to see, instead of every row."""
        if self._cache is not None:
            return self.rows()
        if self._order is None:
            return [self._row(*self._where(i)) for i in range(min(self._n, len(self._series)))]
        first: dict[int, int] = {}
        for i, s in enumerate(self._order[1]):
            first.setdefault(s, i)
        return [self._row(*self._where(i)) for i in sorted(first.values())]

    def rows(self) -> list[Row]:
        """Every row's dict, as one list (built at most once)."""
        cache = self._cache
        if cache is not None and None not in cache:
            return cache  # type: ignore[return-value]
        with gc_paused():  # 100,000 acyclic dicts: the cyclic collector's passes over them doubled the build
            built = self._build_all()
        if cache is not None:  # rows read one by one before: keep those very objects
            for i, row in enumerate(cache):
                if row is not None:
                    built[i] = row
        self._cache = built  # type: ignore[assignment]
        return built

    # -- columns ------------------------------------------------------------------------------------

    def column(self, key: str) -> list[Any]:
        """`row.get(key)` for every row, in row order, read from the columns (rows already built are read as built)."""
        cache = self._cache
        if cache is not None and None not in cache:
            return [r.get(key) for r in cache]  # type: ignore[union-attr]
        out = self._column(key)
        if cache is not None:
            for i, row in enumerate(cache):
                if row is not None:
                    out[i] = row.get(key)
        return out

    def columns_as_built(self, key: str, absent: Any = None) -> list[Any]:
        """Every row's `key` from the columns, whether or not rows were built (`absent` where a row lacks the key):
        for a reader that knows the built rows were not changed (the Python API's frozen rows, which are this
        table's dicts), since `column` reads built rows as they are now."""
        out = self._column(key)
        if absent is None or key in _ROW_KEYS or not out:  # every row has the key
            return out
        # an optional field: a series' rows have it when that series has its column; the no-samples row (series -1)
        # as `_row` writes it
        have = [getattr(s, key, None) is not None for s in self._series]
        if self._order is None:
            return [v if have[i % len(have)] else absent for i, v in enumerate(out)]
        have.append(key in self._row(0, -1, 0))  # have[-1]: series -1
        return [v if have[s] else absent for v, s in zip(out, self._order[1], strict=True)]

    def _column(self, key: str) -> list[Any]:
        win, series = self._win, self._series
        if self._order is None:
            s_n = len(series)
            if key in _WINDOW_KEYS:
                per_series = range(s_n)
                return [v for v in getattr(win, key) for _ in per_series]
            if key in _SERIES_CONST:
                return [getattr(s, _SERIES_CONST[key]) for s in series] * len(win)
            if key in _SERIES_KEYS:
                cols = [getattr(s, key) or [None] * len(win) for s in series]
                return [v for at_window in zip(*cols, strict=True) for v in at_window]
            return [None] * self._n
        return [self._where_get(w, s, p, key) for w, s, p in zip(*self._order, strict=True)]

    def _where_get(self, w: int, s: int, p: int, key: str) -> Any:
        if key in _WINDOW_KEYS:
            return getattr(self._win, key)[w]
        if s < 0:  # the no-samples row: its fields as `_row` writes them, one source of them
            return self._row(w, -1, 0).get(key)
        b = self._series[s]
        if key in _SERIES_CONST:
            return getattr(b, _SERIES_CONST[key])
        if key in _SERIES_KEYS:
            col = getattr(b, key)
            return None if col is None else col[p]
        return None

    # -- building rows ------------------------------------------------------------------------------

    def _where(self, i: int) -> tuple[int, int, int]:
        if self._order is None:
            w, s = divmod(i, len(self._series))
            return w, s, w
        return self._order[0][i], self._order[1][i], self._order[2][i]

    def _row(self, w: int, s: int, p: int) -> Row:
        win = self._win
        if s < 0:
            duration_s = win.duration_s[w]
            row: Row = {
                "run": win.run[w], "scope": win.scope[w], "epoch": win.epoch[w], "phase": win.phase[w],
                "arch": win.arch[w], "host": win.host[w], "source": "", "device": "", "role": "",
                "start": win.start[w], "end": win.end[w], "start_ns": win.start_ns[w], "end_ns": win.end_ns[w],
                "duration_s": duration_s, "energy_j": None, "method": "none", "samples": 0, "max_gap_s": duration_s,
                "flags": (NO_SAMPLES,),
            }
            if self._with_carbon:
                row["carbon_g"] = None
            return row
        b = self._series[s]
        row = {
            "run": win.run[w], "scope": win.scope[w], "epoch": win.epoch[w], "phase": win.phase[w], "arch": win.arch[w],
            "host": win.host[w], "source": b.src, "device": b.dev, "role": b.role, "start": win.start[w],
            "end": win.end[w], "start_ns": win.start_ns[w], "end_ns": win.end_ns[w], "duration_s": win.duration_s[w],
            "energy_j": b.energy_j[p], "method": b.method[p], "samples": b.samples[p], "max_gap_s": b.max_gap_s[p],
            "flags": b.flags[p],
        }
        if b.share is not None:
            row["share"] = b.share[p]
        if b.carbon_g is not None:
            row["carbon_g"] = b.carbon_g[p]
        return row

    def _json_text(self) -> str:
        if not self._n:
            return "[]"
        win = self._win
        ind = "\n    "
        sep = "," + ind

        def group(keys: Sequence[str]) -> list[str]:  # these window fields as text, once per window for all devices
            cols = [[f"{encode_basestring_ascii(k)}: {v}" for v in _encode_column(getattr(win, k))] for k in keys]
            return [sep.join(texts) for texts in zip(*cols, strict=True)]

        head, times = group(_ROW_KEYS[:6]), group(_ROW_KEYS[9:14])
        per_series: list[list[str]] = []
        for b in self._series:
            consts = sep.join(f"{encode_basestring_ascii(k)}: {dumps_at_level(getattr(b, attr), 2)}"
                              for k, attr in _SERIES_CONST.items())
            own = ["energy_j", "method", "samples", "max_gap_s", "flags"] + (["share"] if b.share is not None else []) + (
                ["carbon_g"] if b.carbon_g is not None else [])
            # the window's two groups, then the series' own fields; its constants written in (escaped for %)
            template = "  {" + ind + "%s" + sep + consts.replace("%", "%%") + sep + "%s" + sep + sep.join(
                f"{encode_basestring_ascii(k)}: %s" for k in own) + "\n  }"
            cols = [head, times, *(_encode_column(getattr(b, k)) for k in own)]
            per_series.append([template % vals for vals in zip(*cols, strict=True)])
        body = per_series[0] if len(per_series) == 1 else [t for at_window in zip(*per_series, strict=True) for t in at_window]
        return "[\n" + ",\n".join(body) + "\n]"

    def _csv_lines(self, keys: Sequence[str]) -> list[str]:
        """The CSV lines of the rows (every series in every window, no row built): each window field's texts written
        once per window for all the series (a tenth of the values with ten devices), a series' constants once, its
        own fields once per row, then one join per line, lines interleaved window by window as the rows are."""
        win, n = self._win, len(self._win)
        window_texts = {k: _csv_column(getattr(win, k)) for k in keys if k in _WINDOW_KEYS}
        per_series: list[list[str]] = []
        for b in self._series:
            cols: list[Sequence[str]] = []
            for k in keys:
                if k in _WINDOW_KEYS:
                    cols.append(window_texts[k])
                elif k in _SERIES_CONST:
                    cols.append([_csv_field(getattr(b, _SERIES_CONST[k]))] * n)
                elif k in _SERIES_KEYS and getattr(b, k) is not None:
                    cols.append(_csv_column(getattr(b, k)))
                else:  # a field this series' rows lack (share, carbon_g): empty, as DictWriter writes a missing key
                    cols.append([""] * n)
            per_series.append(list(map(",".join, zip(*cols, strict=True))))
        if len(per_series) == 1:
            return per_series[0]
        return [line for at_window in zip(*per_series, strict=True) for line in at_window]

    def _build_all(self) -> list[Row]:
        """Every row at once: per series, one dict display per row in a comprehension (the cheapest dict CPython
        builds; the keys stay in the contract's order), then interleaved window by window."""
        if self._order is not None:
            return [self._row(w, s, p) for w, s, p in zip(*self._order, strict=True)]
        g = self._win
        per_series: list[list[Row]] = []
        for b in self._series:
            src, dev, role = b.src, b.dev, b.role
            rows = [
                {"run": r, "scope": sc, "epoch": ep, "phase": ph, "arch": ar, "host": ho, "source": src, "device": dev,
                 "role": role, "start": st, "end": en, "start_ns": s_ns, "end_ns": e_ns, "duration_s": du,
                 "energy_j": e, "method": me, "samples": sa, "max_gap_s": ga, "flags": fl}
                for r, sc, ep, ph, ar, ho, st, en, s_ns, e_ns, du, e, me, sa, ga, fl in zip(
                    g.run, g.scope, g.epoch, g.phase, g.arch, g.host, g.start, g.end, g.start_ns, g.end_ns,
                    g.duration_s, b.energy_j, b.method, b.samples, b.max_gap_s, b.flags, strict=True,
                )
            ]
            if b.share is not None:
                for row, f in zip(rows, b.share, strict=True):
                    row["share"] = f
            if b.carbon_g is not None:
                for row, c in zip(rows, b.carbon_g, strict=True):
                    row["carbon_g"] = c
            per_series.append(rows)
        if len(per_series) == 1:
            return per_series[0]
        return [row for at_window in zip(*per_series, strict=True) for row in at_window]


# -- writing the rows as text, from the columns ------------------------------------------------------


def _column_texts(values: Sequence[Any], one: Callable[[Any], str], numbers: Callable[[str], str]) -> list[str]:
    """Each value's text: numbers and nulls through json's C encoder in one call (their texts hold no ", ", so its
    list splits back into values; `numbers` may respell the whole text first), anything else by `one`, once per
    distinct value (once per value where equal values of different types, True == 1 == 1.0, would share a key)."""
    if not values:
        return []
    types = set(map(type, values))
    if types <= _NUMERIC:
        return numbers(_C_ENCODE(values)[1:-1]).split(", ")
    if len(types & _ALIASES) > 1:
        return [one(v) for v in values]
    try:
        texts = {v: one(v) for v in set(values)}
    except TypeError:  # an unhashable value: each one written on its own
        return [one(v) for v in values]
    return list(map(texts.__getitem__, values))


def _encode_column(values: Sequence[Any], level: int = 2) -> list[str]:
    """Each value as `json.dumps(indent=2)` writes it inside a row (`level` 2)."""
    return _column_texts(values, lambda v: dumps_at_level(v, level), _same)


def _same(text: str) -> str:
    return text


_NUMERIC = frozenset({int, float, type(None)})  # bool is not among them: json writes it true/false
_ALIASES = frozenset({bool, int, float})  # equal values across these types are one dict key
_C_ENCODE = json.JSONEncoder().encode  # NaN and the infinities spelt as json.dumps spells them


def json_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """`json.dumps(list(rows), indent=2)`'s text. From a `RowTable`'s columns when every series counts in every
    window and no row was built yet (each window's fields encoded once for all its devices, each distinct string
    once, one %-format per row); otherwise from the rows (`jouled.jsonout`)."""
    if not isinstance(rows, RowTable) or rows._order is not None or rows._cache is not None:
        return dumps_indent2(list(rows))
    return rows._json_text()


def csv_text(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """The CSV of `energy epochs`, as `csv.DictWriter` (excel dialect) writes it: a header of `keys`, a line per row,
    a list or tuple (flags) space-joined, a missing or None field empty.

    Column by column (`column`: from a `RowTable`, no row built): numbers through json's C encoder in one call per
    column (the spellings csv's `repr` gives, NaN and the infinities mapped), every distinct other value through the
    csv module itself once (its quoting rules), then one join per line."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator=_CRLF)
    w.writerow(keys)
    if isinstance(rows, RowTable) and rows._order is None and rows._cache is None and len(keys) > 1 and rows:
        out.write(_CRLF.join(rows._csv_lines(keys)))
        out.write(_CRLF)
        return out.getvalue()
    if len(keys) == 1:  # a line of one empty field is quoted (""): the csv module's own rule, left to it
        w.writerows([" ".join(v) if type(v) in (list, tuple) else v] for v in column(rows, keys[0]))
        return out.getvalue()
    cols = [_csv_column(column(rows, k)) for k in keys]
    if rows:
        out.write(_CRLF.join(map(",".join, zip(*cols, strict=True))))
        out.write(_CRLF)
    return out.getvalue()


_CRLF = "\r\n"  # csv.DictWriter's default dialect, excel
_CSV_SPECIAL = frozenset(',"\r\n')  # what makes the excel dialect quote a field
_JSON_TO_CSV = {"null": "", "NaN": "nan", "Infinity": "inf"}  # "-Infinity" becomes "-inf" with the last


def _csv_column(values: list[Any]) -> list[str]:
    return _column_texts(values, _csv_field, _csv_numbers)


def _csv_numbers(text: str) -> str:
    """json's spellings of null, NaN and the infinities as csv writes them (none of these tokens occurs inside a
    number's text)."""
    for token, spelt in _JSON_TO_CSV.items():
        if token in text:
            text = text.replace(token, spelt)
    return text


def _csv_field(v: Any) -> str:
    """One field as csv.writer writes it within a line of several (quoted only where the dialect needs it)."""
    if v is None:
        return ""
    if type(v) in (list, tuple):
        v = " ".join(v)
    if type(v) is str and v and not _CSV_SPECIAL.intersection(v):
        return v  # nothing to quote (the usual case: names, times, flags)
    buf = io.StringIO()
    # the dialect's own line end (its characters are what it quotes for), and a second field: a lone empty one
    # would be quoted
    csv.writer(buf, lineterminator=_CRLF).writerow([v, ""])
    return buf.getvalue()[: -1 - len(_CRLF)]


def column(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    """`row.get(key)` for every row: from a `RowTable`'s columns (no row built), else row by row."""
    if isinstance(rows, RowTable):
        return rows.column(key)
    return [r.get(key) for r in rows]
