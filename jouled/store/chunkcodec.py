"""The log's column chunks as bytes, with the stdlib's `array`: encode, decode, sort and aggregate, no numpy.

A chunk holds `n` samples of one series: time_ns as little-endian int64, power_w and energy_j as little-endian
float64 (NaN: the field was absent; a column with no value at all is stored as NULL), extras as one row-major
n x k float64 matrix with its names. The daemon writes, compacts and downsamples chunks through this module so
its process never imports numpy (numpy was 13 MB of an idle daemon's 52 MB resident memory: observer bench);
readers view the same columns with `numpy.frombuffer` at no copy (`jouled.store.sqlite`).

Columns in are anything with the buffer protocol or a sequence of numbers (array('q'/'d'), numpy arrays, lists);
columns out are array('q') / array('d').
"""

from __future__ import annotations

import json
import operator
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

NAN = float("nan")
_NATIVE_LE = sys.byteorder == "little"
_I8_FORMATS = frozenset({"q", "l", "<q", "<l", "=q", "=l"} if _NATIVE_LE else {"<q", "<l"})
_F8_FORMATS = frozenset({"d", "<d", "=d"} if _NATIVE_LE else {"<d"})

# (n, time_ns, power_w, energy_j, extras_names, extras): a chunk row as the log stores it
ChunkRow = tuple[int, bytes, "bytes | None", "bytes | None", "str | None", "bytes | None"]


def _from_buffer(col: Any, typecode: str, formats: frozenset[str]) -> array[Any] | None:
    """A copy of `col` as array(typecode) when it is a contiguous buffer of that very type (memcpy), else None."""
    try:
        mv = memoryview(col)
    except TypeError:
        return None
    if mv.ndim != 1 or mv.itemsize != 8 or mv.format not in formats or not mv.c_contiguous:
        return None
    out = array(typecode)
    out.frombytes(mv.cast("B"))
    if not _NATIVE_LE:
        out.byteswap()  # the formats above are little-endian ones only on a big-endian host
    return out


def as_i8(col: Any) -> array[int]:
    """A column of integers as array('q'): the same object when it already is one."""
    if isinstance(col, array) and col.typecode == "q":
        return col
    out = _from_buffer(col, "q", _I8_FORMATS)
    return out if out is not None else array("q", (int(v) for v in col))


def as_f8(col: Any) -> array[float]:
    """A column of numbers as array('d'): the same object when it already is one."""
    if isinstance(col, array) and col.typecode == "d":
        return col
    out = _from_buffer(col, "d", _F8_FORMATS)
    return out if out is not None else array("d", (float(v) for v in col))


def nans(n: int) -> array[float]:
    return array("d", [NAN]) * n


def _le_bytes(a: array[Any]) -> bytes:
    if _NATIVE_LE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def f8_blob(a: array[float]) -> bytes | None:
    """The column's bytes; None when it holds no value (empty, or NaN throughout): stored as NULL."""
    if not any(v == v for v in a):  # NaN != NaN; stops at the first value, usually the first sample
        return None
    return _le_bytes(a)


def _from_le(typecode: str, blob: bytes) -> array[Any]:
    a = array(typecode)
    a.frombytes(blob)
    if not _NATIVE_LE:
        a.byteswap()
    return a


@dataclass
class Columns:
    """One series' samples as arrays: time_ns array('q'), power_w / energy_j / extras array('d') (NaN: absent)."""

    time_ns: array[int]
    power_w: array[float]
    energy_j: array[float]
    extras: dict[str, array[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time_ns)

    def is_time_ordered(self) -> bool:
        t = self.time_ns
        return all(map(operator.le, t, t[1:]))  # twice as fast as a generator over pairwise()

    def sorted_by_time(self) -> Columns:
        """The samples in time order, stable (equal times keep their order); self when already so."""
        if self.is_time_ordered():
            return self
        order = sorted(range(len(self.time_ns)), key=self.time_ns.__getitem__)

        def pick(a: array[Any]) -> array[Any]:
            return array(a.typecode, [a[i] for i in order])

        return Columns(pick(self.time_ns), pick(self.power_w), pick(self.energy_j),
                       {k: pick(v) for k, v in self.extras.items()})

    def row(self) -> tuple[int, int, int, bytes, bytes | None, bytes | None, str | None, bytes | None]:
        """(t0_ns, t1_ns, n, time_ns, power_w, energy_j, extras_names, extras) for the log's chunks table; the
        columns must be time-ordered and non-empty."""
        names = sorted(self.extras)
        return (
            self.time_ns[0], self.time_ns[-1], len(self.time_ns),
            _le_bytes(self.time_ns), f8_blob(self.power_w), f8_blob(self.energy_j),
            json.dumps(names) if names else None, extras_blob([self.extras[k] for k in names]),
        )


def columns(time_ns: Any, power_w: Any, energy_j: Any, extras: dict[str, Any] | None = None) -> Columns:
    """Columns from any numeric columns of equal length (ValueError naming the column that differs)."""
    t = as_i8(time_ns)
    cols = Columns(t, as_f8(power_w), as_f8(energy_j), {k: as_f8(v) for k, v in (extras or {}).items()})
    for name, c in (("power_w", cols.power_w), ("energy_j", cols.energy_j), *cols.extras.items()):
        if len(c) != len(t):
            raise ValueError(f"column {name} has {len(c)} values for {len(t)} times")
    return cols


def extras_blob(cols: Sequence[array[float]]) -> bytes | None:
    """Extras columns as one row-major n x k matrix (None: no extras, or no value in any: a flush between two of
    NVML's once-a-second extras stores NULL, not a matrix of NaN)."""
    if not any(v == v for c in cols for v in c):
        return None
    if len(cols) == 1:
        return _le_bytes(cols[0])
    m = array("d", bytes(8 * len(cols) * len(cols[0])))
    for j, c in enumerate(cols):
        m[j::len(cols)] = c
    return _le_bytes(m)


def _put(view: memoryview, at: int, blob: bytes, typecode: Literal["q", "d"]) -> None:
    """Copy a little-endian column blob into view[at:]."""
    src = memoryview(blob).cast(typecode) if _NATIVE_LE else memoryview(_from_le(typecode, blob))
    view[at:at + len(src)] = src


def decode(rows: Iterable[ChunkRow], *, extras: bool = True) -> Columns:
    """Concatenate chunk rows, in the order given, into one set of columns (not sorted: see `sorted_by_time`).

    Every extra any chunk has becomes a column over all of them (NaN where a chunk lacks it). Readers that want
    numpy arrays use `jouled.store.sqlite`'s numpy decoder (views of the blobs, ~1.5x faster on a day of samples);
    this one serves the daemon's housekeeping, which must not load numpy."""
    rows = list(rows)
    total = sum(r[0] for r in rows)
    # allocated once and filled in place: growing arrays chunk by chunk copied them over and over (5x slower)
    t, p, e = array("q", [0]) * total, nans(total), nans(total)
    names_all = sorted({k for r in rows if r[4] for k in json.loads(r[4])}) if extras else []
    ex = {k: nans(total) for k in names_all}
    tv, pv, ev = memoryview(t), memoryview(p), memoryview(e)
    at = 0
    for n, tb, pb, eb, nm, xb in rows:
        _put(tv, at, tb, "q")
        if pb is not None:
            _put(pv, at, pb, "d")
        if eb is not None:
            _put(ev, at, eb, "d")
        names = json.loads(nm) if names_all and nm else []
        if names and xb is not None:
            mat = _from_le("d", xb)
            for j, k in enumerate(names):
                ex[k][at:at + n] = mat[j::len(names)]
        at += n
    return Columns(t, p, e, ex)


def aggregate(cols: Columns, period_s: float) -> Columns:
    """Bucket time-ordered samples by period (bucket = time_ns // period): each bucket's mean time (exact integer
    mean, floored), mean of its power values (NaN when it has none) and its last counter value (NaN when it has none
    of its own: a bucket must not repeat the previous bucket's counter). Pure."""
    period_ns = int(period_s * 1e9)
    t_out, p_out, e_out = array("q"), array("d"), array("d")
    t, p, e = cols.time_ns, cols.power_w, cols.energy_j
    n = len(t)
    i = 0
    while i < n:
        b = t[i] // period_ns
        j = i
        t_sum = 0
        p_sum, p_cnt = 0.0, 0
        last_e = NAN
        while j < n and t[j] // period_ns == b:
            t_sum += t[j]
            pv = p[j]
            if pv == pv:
                p_sum += pv
                p_cnt += 1
            ev = e[j]
            if ev == ev:
                last_e = ev
            j += 1
        t_out.append(t_sum // (j - i))
        p_out.append(p_sum / p_cnt if p_cnt else NAN)
        e_out.append(last_e)
        i = j
    return Columns(t_out, p_out, e_out)
