"""Energy and carbon of marker windows: pure, vectorised functions over sample arrays (no I/O)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from jouled.carbon.series import J_PER_KWH, IntensitySeries
from jouled.series import COARSE_UPDATES, SeriesMeta

Method = Literal["counter", "integral", "none"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Quality thresholds (DESIGN.md "Energy of a window").
SPARSE_BELOW_SAMPLES = 10  # the energy-benchmark study: SMI gave < 10 samples in 39 % of epochs
GAP_PERIODS = 5.0  # a hole longer than this many sample periods is flagged `gap`
# A counter flat over a window in which the device's power integrates to at least this much (and to more than this
# many of the counter's steps, where it declared its resolution) is stuck, not idle: `counter-stuck`
STUCK_MIN_J = 1.0
STUCK_RESOLUTIONS = 10

# What a series is (role `gpu` → attributed to a run through its `gpus`; every other role is a host device;
# `host_wide` → flagged `host-wide`) comes from its metadata (jouled.series), declared by the source and
# stored with the data. These name sets are the defaults for series nobody declared (jouled.series.default_meta).
GPU_SOURCES: frozenset[str] = frozenset({"nvml", "smi"})


METHODS: tuple[Method, ...] = ("none", "counter", "integral")
_M_NONE, _M_COUNTER, _M_INTEGRAL = 0, 1, 2

# Sources whose figure is the whole machine's, not the run's: the estimate bills all of the host's CPU load
# (every process) to whichever run's window it falls in. Their rows are flagged `host-wide`.
HOST_WIDE_SOURCES: frozenset[str] = frozenset({"estimate"})

# Flag bits of the vectorised results; names in output order.
# `no-samples`: no sample of the device inside the window and no energy could be computed (energy_j is null);
# `host-wide`: the row is the whole machine's (HOST_WIDE_SOURCES), not only the run's.
# `counter-stuck`: the counter did not move while the device's power says it drew energy (`window_energy_many`).
_FLAG_NAMES: tuple[str, ...] = (
    "sparse", "gap", "edge", "estimated", "reset", "no-samples", "host-wide", "coarse", "counter-stuck",
)
F_SPARSE, F_GAP, F_EDGE, F_ESTIMATED, F_RESET, F_NO_SAMPLES, F_HOST_WIDE, F_COARSE, F_COUNTER_STUCK = (
    1 << i for i in range(len(_FLAG_NAMES))
)
NO_SAMPLES = "no-samples"


# --------------------------------------------------------------------------------------------------
# Data carriers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SeriesArrays:
    """All samples of one (source, device), as the store returns them.

    `power_w` and `energy_j` have the length of `time_ns`; a missing field is NaN. The arrays
    need not be sorted and may repeat timestamps: the energy functions normalise them.
    `period_s` is the nominal period of the power field, `counter_period_s` that of the energy
    counter (NVML reads power at 10 Hz and its counter at 2 Hz): each window is judged against
    the period of the field its energy comes from. 0 or NaN: `counter_period_s` is `period_s` when
    the series has no power field, and any unknown period is the median spacing of that field's
    own samples. `meta` says what the series is (jouled.series; None: the default from the source name).
    """

    time_ns: IntArray
    power_w: FloatArray
    energy_j: FloatArray
    source: str
    device: str
    period_s: float
    estimated: bool = False
    counter_period_s: float = float("nan")
    meta: SeriesMeta | None = None


@dataclass(frozen=True, slots=True)
class WindowEnergy:
    """Energy of one window on one device, with the evidence behind it."""

    energy_j: float | None
    method: Method
    samples: int
    max_gap_s: float
    flags: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class WindowEnergyBatch:
    """`window_energy_many` results, one entry per window (energy NaN where method is none)."""

    energy_j: FloatArray
    method: npt.NDArray[np.int8]  # 0 none, 1 counter, 2 integral
    samples: IntArray
    max_gap_s: FloatArray
    flags: IntArray  # bit mask of F_* values

    def __len__(self) -> int:
        return int(self.energy_j.shape[0])

    def method_name(self, i: int) -> Method:
        return METHODS[int(self.method[i])]

    def flag_names(self, i: int) -> tuple[str, ...]:
        return flag_names(int(self.flags[i]))

    def item(self, i: int) -> WindowEnergy:
        e = float(self.energy_j[i])
        return WindowEnergy(
            energy_j=None if np.isnan(e) else e,
            method=self.method_name(i),
            samples=int(self.samples[i]),
            max_gap_s=float(self.max_gap_s[i]),
            flags=self.flag_names(i),
        )


@functools.cache
def flag_names(mask: int) -> tuple[str, ...]:
    """Names of the flag bits set in mask, in the order of the output contract."""
    return tuple(name for bit, name in enumerate(_FLAG_NAMES) if mask & (1 << bit))


# --------------------------------------------------------------------------------------------------
# Normalising samples
# --------------------------------------------------------------------------------------------------


def _dedup_mean(t: IntArray, *values: FloatArray) -> tuple[IntArray, list[FloatArray]]:
    """Sort stably by time and average the finite values that share one timestamp.

    Averaging (NaN ignored, per field) makes the result independent of the order in which
    duplicates arrive, so shuffled input gives the same answer as sorted input.
    """
    t = np.asarray(t, dtype=np.int64)
    vals = [np.asarray(v, dtype=np.float64) for v in values]
    distinct = t.size < 2 or bool(np.all(t[1:] > t[:-1]))  # the usual case: one pass, nothing to do
    if not distinct:
        order = np.argsort(t, kind="stable")
        t = t[order]
        vals = [v[order] for v in vals]
    if not distinct and not bool(np.all(t[1:] > t[:-1])):
        first = np.empty(t.size, dtype=bool)
        first[0] = True
        first[1:] = t[1:] != t[:-1]
        group = np.cumsum(first) - 1
        n_groups = int(group[-1]) + 1
        out = []
        for v in vals:
            ok = np.isfinite(v)
            sums = np.bincount(group, weights=np.where(ok, v, 0.0), minlength=n_groups)
            counts = np.bincount(group, weights=ok.astype(np.float64), minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan))
        return t[first], out
    return t, vals


def infer_period_s(time_ns: npt.ArrayLike) -> float:
    """Median spacing of distinct timestamps (NaN with fewer than two)."""
    t = np.unique(np.asarray(time_ns, dtype=np.int64))
    if t.size < 2:
        return float("nan")
    return float(np.median(np.diff(t))) * 1e-9


_NO_RESETS: IntArray = np.zeros(0, dtype=np.int64)  # a track without resets (read-only use only)


@dataclass(frozen=True, eq=False)
class _Track:
    """Sorted, distinct samples of one field with its cumulative energy at each sample.

    Times are float seconds relative to `ref_ns` so that float64 keeps ns precision for
    ~100 days (absolute ns since 1970 do not fit a float64 mantissa).
    """

    t_s: FloatArray
    value: FloatArray  # power (integral track) or the wrap-safe counter, from 0 (counter track)
    resets: IntArray  # counter track: resets in steps [0, k); empty for a power track (it has none)
    is_counter: bool

    @functools.cached_property
    def cum_j(self) -> FloatArray:
        """Cumulative energy at each sample, from 0. A power track's trapezoids are summed only when a window uses
        the integral: with a counter beside it (NVML, RAPL) most queries never do."""
        if self.is_counter:
            return self.value
        p, t = self.value, self.t_s
        cum = np.empty(t.shape[0])
        if cum.size:
            cum[0] = 0.0
            np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t), out=cum[1:])
        return cum

    @property
    def n(self) -> int:
        return int(self.t_s.shape[0])


def _finite(t_s: FloatArray, v: FloatArray, ok: npt.NDArray[np.bool_] | None = None) -> tuple[FloatArray, FloatArray]:
    """The samples where v is finite (`ok`, when the caller has it); no copy when all are: the usual case for a
    field read every tick."""
    if ok is None:
        ok = np.isfinite(v)
    if bool(ok.all()):
        return t_s, v
    return t_s[ok], v[ok]


def _counter_track(t_s: FloatArray, energy_j: FloatArray, ok: npt.NDArray[np.bool_] | None = None) -> _Track:
    t, e = _finite(t_s, energy_j, ok)
    if e.size < 2 or bool(np.all(e[1:] >= e[:-1])):
        # monotone (the usual case): the counter itself from 0, one subtraction instead of the steps' running sum
        # (no steps array at all), and exact where the sum would round at every step
        return _Track(t, e - e[0] if e.size else e, _NO_RESETS, is_counter=True)
    steps = np.diff(e)
    # A decrease is a reset (or a wrap of an imported counter whose range we do not know):
    # that step's increment is skipped (counted as 0 J) and flagged `reset`, the rest summed.
    # A decrease within float rounding (averaged duplicates, wrap correction upstream) is noise,
    # not a reset: it counts as 0 J without the flag.
    down = np.flatnonzero(steps < 0)
    resets = _NO_RESETS
    if down.size:
        noise = 1e-12 * np.maximum(np.abs(e[down + 1]), np.abs(e[down])) + 1e-12
        neg = np.zeros(steps.shape[0], dtype=np.int64)
        neg[down[steps[down] < -noise]] = 1
        resets = np.zeros(t.shape[0], dtype=np.int64)
        np.cumsum(neg, out=resets[1:])
        steps = np.maximum(steps, 0.0)
    cum = np.empty(t.shape[0])
    if cum.size:
        cum[0] = 0.0
        np.cumsum(steps, out=cum[1:])
    return _Track(t, cum, resets, is_counter=True)


def _power_track(t_s: FloatArray, power_w: FloatArray, ok: npt.NDArray[np.bool_] | None = None) -> _Track:
    t, p = _finite(t_s, power_w, ok)
    return _Track(t, p, _NO_RESETS, is_counter=False)



def _cum_at(track: _Track, x: FloatArray, method: int, last_le: IntArray | None = None) -> FloatArray:
    """Cumulative energy at times x, clamped to the covered span (no extrapolation).

    ``last_le``: the index of the last sample at or before each x (-1: none), when the caller has it already
    (`_samples_and_gap` searched for it): no second binary search over the track."""
    t = track.t_s
    x = np.clip(x, t[0], t[-1])
    if method == _M_COUNTER:
        # linear interpolation of the counter == piecewise-constant power between reads
        if last_le is None or track.n < 2:
            return np.interp(x, t, track.cum_j)
        return _interp_at(t, track.cum_j, x, last_le)
    if last_le is not None:
        k = np.clip(last_le, 0, track.n - 2)  # x is clipped into the span: its last sample at or before is k
    else:
        k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, track.n - 2)
    t0 = t[k]
    dt = t[k + 1] - t0
    p0 = track.value[k]
    p1 = track.value[k + 1]
    u = x - t0
    # power at x linearly interpolated; trapezoid from t[k] to x
    px = p0 + (p1 - p0) * (u / dt)
    return track.cum_j[k] + 0.5 * (p0 + px) * u


def _interp_at(t: FloatArray, y: FloatArray, x: FloatArray, last_le: IntArray) -> FloatArray:
    """`np.interp(x, t, y)` for x already clipped into [t[0], t[-1]], given each x's last sample at or before it
    (`last_le`, before clipping: -1 below t[0]): numpy's own arithmetic, so the same numbers to the bit
    (slope (y[j+1] - y[j]) / (t[j+1] - t[j]), then slope · (x - t[j]) + y[j]; y[j] where x is t[j], y[-1] at the end)."""
    n = t.shape[0]
    j = np.clip(last_le, 0, n - 2)
    tj, yj = t[j], y[j]
    v = (y[j + 1] - yj) / (t[j + 1] - tj) * (x - tj) + yj
    return np.where(last_le >= n - 1, y[-1], np.where(x == tj, yj, v))


@dataclass(frozen=True, eq=False)
class PreparedSeries:
    """A series sorted, de-duplicated and split into its counter and power tracks."""

    ref_ns: int
    counter: _Track
    power: _Track
    any_t_s: FloatArray  # times with any finite field (for windows with no usable method)
    period_s: float  # of the power field
    estimated: bool
    source: str = ""
    device: str = ""
    counter_period_s: float = float("nan")  # of the counter field
    counter_update_s: float = float("nan")  # how often the device updates its counter (SeriesMeta); NaN: unknown
    power_update_s: float = float("nan")  # ... and its power value
    counter_resolution_j: float = 0.0  # the counter's step (SeriesMeta); 0: unknown


def prepare(series: SeriesArrays) -> PreparedSeries:
    """Normalise one series once; reuse it for many windows."""
    t_ns, (p, e) = _dedup_mean(series.time_ns, series.power_w, series.energy_j)
    ref_ns = int(t_ns[0]) if t_ns.size else 0
    # the int64 difference (exact) cast to float64 as numpy writes it, then scaled in place: no 7 MB temporary
    # (a day of 10 Hz is 864,000 samples; each fresh array of that size is page faults first)
    t_s = np.empty(t_ns.shape[0], dtype=np.float64)
    np.subtract(t_ns, ref_ns, out=t_s, casting="unsafe")
    t_s *= 1e-9
    p_ok = np.isfinite(p)
    e_ok = np.isfinite(e)
    period_s = _known(series.period_s)
    counter_period_s = _known(series.counter_period_s)
    if np.isnan(counter_period_s) and not bool(p_ok.any()):
        counter_period_s = period_s  # one period given for a counter-only series: it is the counter's
    # each field's own spacing, not the union of both: a 2 Hz counter between 10 Hz power reads is not 10 Hz
    p_all, e_all = bool(p_ok.all()), bool(e_ok.all())  # the usual case: no copies below
    all_spacing_s = float("nan")  # the spacing of every sample: both fields' when both are in every sample
    if np.isnan(period_s):
        if p_all or not bool(p_ok.any()):
            period_s = all_spacing_s = _median_spacing_s(t_ns)
        else:
            period_s = _median_spacing_s(t_ns[p_ok])
    if np.isnan(counter_period_s):
        if e_all and not np.isnan(all_spacing_s):
            counter_period_s = all_spacing_s  # the same samples: no second median over them
        else:
            counter_period_s = _median_spacing_s(t_ns if e_all else t_ns[e_ok])
    return PreparedSeries(
        ref_ns=ref_ns,
        counter=_counter_track(t_s, e, e_ok),
        power=_power_track(t_s, p, p_ok),
        any_t_s=t_s if p_all or e_all else t_s[p_ok | e_ok],
        period_s=period_s,
        estimated=bool(series.estimated),
        source=series.source,
        device=series.device,
        counter_period_s=counter_period_s,
        counter_update_s=_known(series.meta.counter_update_s) if series.meta is not None else float("nan"),
        power_update_s=_known(series.meta.power_update_s) if series.meta is not None else float("nan"),
        counter_resolution_j=_resolution_j(series.meta),
    )


def _resolution_j(meta: SeriesMeta | None) -> float:
    r = None if meta is None else meta.counter_resolution_j
    return float(r) if r is not None and np.isfinite(r) and r > 0 else 0.0


def _median_spacing_s(t_ns: IntArray) -> float:
    """infer_period_s for times already sorted and distinct (as prepare has them): no np.unique, which hashes."""
    if t_ns.size < 2:
        return float("nan")
    return float(np.median(np.diff(t_ns), overwrite_input=True)) * 1e-9  # the diffs are ours: no second copy


def _known(period_s: float | None) -> float:
    """A usable nominal period, else NaN (unknown: inferred from the data)."""
    if period_s is None:
        return float("nan")
    p = float(period_s)
    return p if np.isfinite(p) and p > 0 else float("nan")


# --------------------------------------------------------------------------------------------------
# Energy of windows
# --------------------------------------------------------------------------------------------------


def _coverage(t: FloatArray, a: FloatArray, b: FloatArray) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """Whether a track (>= 2 samples) overlaps [a, b], and the covered length."""
    if t.shape[0] < 2:
        return np.zeros(a.shape, dtype=bool), np.zeros(a.shape)
    lo = np.maximum(a, t[0])
    hi = np.minimum(b, t[-1])
    return lo <= hi, np.maximum(hi - lo, 0.0)


def _samples_and_gap(
    t: FloatArray, a: FloatArray, b: FloatArray,
) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_], tuple[IntArray, IntArray]]:
    """Samples inside [a, b], the largest gap between the samples covering it, `edge`, and for a and for b the index
    of the last sample at or before it (-1: none), which `_cum_at` takes instead of searching again.

    The covering samples are those inside plus the last one at or before a and the first one
    at or after b; where the data stops short of an edge, that edge itself stands in for the
    missing sample, so a partly covered window shows the uncovered stretch as a gap.
    """
    n = t.shape[0]
    if n == 0:
        none = np.full(a.shape, -1, dtype=np.int64)
        return np.zeros(a.shape, dtype=np.int64), b - a, np.ones(a.shape, dtype=bool), (none, none)
    # two binary searches, not four: t is distinct, so the other side differs only where an edge is a sample
    # (each search over a day of samples is cache misses, the larger part of a window's cost)
    i_in = np.searchsorted(t, a, side="left")  # first sample >= a
    hi = np.searchsorted(t, b, side="left")  # first sample >= b (n: none)
    a_is_sample = t[np.minimum(i_in, n - 1)] == a
    b_is_sample = t[np.minimum(hi, n - 1)] == b
    j_in = hi + b_is_sample  # one past last sample <= b
    lo = i_in - 1 + a_is_sample  # last sample <= a (-1: none)
    samples = (j_in - i_in).astype(np.int64)
    edge = (t[0] > a) | (t[-1] < b)
    # covering index range [lo, hi]
    lo_c = np.clip(lo, 0, n - 1)
    hi_c = np.clip(hi, 0, n - 1)
    left_t = np.where(lo >= 0, t[lo_c], a)
    right_t = np.where(hi < n, t[hi_c], b)
    # largest consecutive diff strictly inside the covering index range
    first_i = np.where(lo >= 0, lo_c, i_in)
    last_i = np.where(hi < n, hi_c, j_in - 1)
    inner = _range_max_diff(t, first_i, last_i)
    # gaps from the left boundary to the first covering sample and last one to the right
    has_any = last_i >= first_i
    first_t = t[np.clip(first_i, 0, n - 1)]
    last_t = t[np.clip(last_i, 0, n - 1)]
    left_gap = np.where(has_any, first_t - left_t, right_t - left_t)
    right_gap = np.where(has_any, right_t - last_t, 0.0)
    gap = np.maximum(np.maximum(inner, left_gap), right_gap)
    return samples, np.maximum(gap, 0.0), edge, (lo, j_in - 1)


def _range_max_diff(t: FloatArray, first_i: IntArray, last_i: IntArray) -> FloatArray:
    """max(t[k+1] - t[k]) for k in [first_i, last_i) per window; 0 for empty ranges.

    One `maximum.reduceat` over interleaved (start, stop) indices: cost is the total length
    of the ranges, i.e. about the number of samples for non-overlapping windows.
    """
    out = np.zeros(first_i.shape, dtype=np.float64)
    valid = last_i > first_i
    if t.shape[0] < 2 or not bool(np.any(valid)):
        return out
    d_ext = np.empty(t.shape[0])  # the diffs and a 0: reduceat needs every index < len, a stop may equal len - 1
    np.subtract(t[1:], t[:-1], out=d_ext[:-1])
    d_ext[-1] = 0.0
    idx = np.empty(2 * int(valid.sum()), dtype=np.int64)
    idx[0::2] = first_i[valid]
    idx[1::2] = last_i[valid]
    out[valid] = np.maximum.reduceat(d_ext, idx)[0::2]
    return out


def _choose(prep: PreparedSeries, a: FloatArray, b: FloatArray) -> npt.NDArray[np.int8]:
    """Counter first; the power integral only where it covers more of the window."""
    c_ok, c_len = _coverage(prep.counter.t_s, a, b)
    p_ok, p_len = _coverage(prep.power.t_s, a, b)
    tol = 1e-9  # s: equal coverage up to rounding keeps the counter
    use_counter = c_ok & (~p_ok | (c_len >= p_len - tol))
    method = np.full(a.shape, _M_NONE, dtype=np.int8)
    method[p_ok] = _M_INTEGRAL
    method[use_counter] = _M_COUNTER
    return method


def _rel_s(prep: PreparedSeries, t_ns: npt.ArrayLike) -> FloatArray:
    return (np.asarray(t_ns, dtype=np.int64) - prep.ref_ns).astype(np.float64) * 1e-9


def window_energy_many(
    series: SeriesArrays | PreparedSeries, starts_ns: npt.ArrayLike, ends_ns: npt.ArrayLike
) -> WindowEnergyBatch:
    """Energy of many windows of one device in one vectorised pass (searchsorted over all windows).

    A counter that did not move in a window while the same device's power says it drew at least STUCK_MIN_J there
    (and more than STUCK_RESOLUTIONS of the counter's steps) is not counting — a meter whose integrator stopped or
    was never started answers its last value forever: such a window takes the power integral instead, flagged
    `counter-stuck`, rather than a silent 0 J."""
    prep = series if isinstance(series, PreparedSeries) else prepare(series)
    starts = np.atleast_1d(np.asarray(starts_ns, dtype=np.int64))
    ends = np.atleast_1d(np.asarray(ends_ns, dtype=np.int64))
    if starts.shape != ends.shape:
        raise ValueError("starts_ns and ends_ns must have the same length")
    if bool(np.any(ends < starts)):
        raise ValueError("every window needs end_ns >= start_ns")
    a = _rel_s(prep, starts)
    b = _rel_s(prep, ends)
    method = _choose(prep, a, b)
    energy = np.full(a.shape, np.nan)
    samples = np.zeros(a.shape, dtype=np.int64)
    gap = np.zeros(a.shape)
    flags = np.zeros(a.shape, dtype=np.int64)
    for code in (_M_COUNTER, _M_INTEGRAL, _M_NONE):
        m = method == code
        if bool(np.any(m)):
            energy[m], samples[m], gap[m], flags[m] = _by_method(prep, code, a[m], b[m])
    stuck = _stuck_counter(prep, method, energy, a, b)
    if stuck is not None:
        method[stuck] = _M_INTEGRAL
        energy[stuck], samples[stuck], gap[stuck], flags[stuck] = _by_method(prep, _M_INTEGRAL, a[stuck], b[stuck])
        flags[stuck] |= F_COUNTER_STUCK
    if prep.estimated:
        flags |= F_ESTIMATED
    flags |= np.where((samples == 0) & np.isnan(energy), F_NO_SAMPLES, 0)
    return WindowEnergyBatch(energy, method, samples, gap, flags)


def _by_method(
    prep: PreparedSeries, code: int, am: FloatArray, bm: FloatArray,
) -> tuple[FloatArray, IntArray, FloatArray, IntArray]:
    """(energy, samples, largest gap, flags) of windows [am, bm] by one method, each judged against the period of
    the field that method uses."""
    energy = np.full(am.shape, np.nan)
    flags = np.zeros(am.shape, dtype=np.int64)
    track = prep.counter if code == _M_COUNTER else prep.power if code == _M_INTEGRAL else None
    if track is None:
        s, g, edge, _idx = _samples_and_gap(prep.any_t_s, am, bm)
    else:
        s, g, edge, (ia, ib) = _samples_and_gap(track.t_s, am, bm)
        energy = _cum_at(track, bm, code, ib) - _cum_at(track, am, code, ia)
        if code == _M_COUNTER:
            flags |= np.where(_resets_between(track, am, bm) > 0, F_RESET, 0)
            if np.isfinite(prep.counter_update_s) and prep.counter_update_s > 0:
                # each end's read is the value of the counter's last update: off by up to one update's energy
                flags |= np.where(bm - am < COARSE_UPDATES * prep.counter_update_s, F_COARSE, 0)
    flags |= np.where(edge, F_EDGE, 0)
    period = prep.counter_period_s if code == _M_COUNTER else prep.period_s
    if code == _M_NONE and not np.isfinite(period):
        period = prep.counter_period_s
    if code == _M_COUNTER and np.isfinite(period):
        # a counter is exact whatever its rate (DESIGN "Energy of a window"): sparse only when it delivered
        # fewer than half the reads its own period promises (capped at the integral's 10)
        need = np.minimum(SPARSE_BELOW_SAMPLES, np.floor(0.5 * (bm - am) / period))
        flags |= np.where(s < need, F_SPARSE, 0)
    else:
        distinct = s
        if code == _M_INTEGRAL and np.isfinite(prep.power_update_s) and prep.power_update_s > 0:
            # reads faster than the device updates its power repeat values (NVML on an H200: every 100 ms, so
            # 100 Hz reads each value 10 times): what counts is the distinct values the window can hold
            distinct = np.minimum(s, np.floor((bm - am) / prep.power_update_s + 1e-9).astype(np.int64))
        flags |= np.where(distinct < SPARSE_BELOW_SAMPLES, F_SPARSE, 0)
    if np.isfinite(period):
        flags |= np.where(g > GAP_PERIODS * period, F_GAP, 0)
    return energy, s, g, flags


def _stuck_counter(
    prep: PreparedSeries, method: npt.NDArray[np.int8], energy: FloatArray, a: FloatArray, b: FloatArray,
) -> npt.NDArray[np.bool_] | None:
    """Counter windows whose counter did not move while the power integral over the part of the window the counter
    covers is at least STUCK_MIN_J and STUCK_RESOLUTIONS counter steps (`window_energy_many`); None when there are
    none (the usual case: one comparison over the windows)."""
    flat = (method == _M_COUNTER) & (energy == 0.0)
    if not bool(flat.any()) or prep.power.n < 2:
        return None
    idx = np.flatnonzero(flat)
    covered, length = _coverage(prep.power.t_s, a[idx], b[idx])
    _c_ok, c_length = _coverage(prep.counter.t_s, a[idx], b[idx])
    # the power covers all of the window the counter covers (a run window is often wider than the samples: `edge`)
    idx = idx[covered & (length >= c_length - 1e-9)]
    if idx.size == 0:
        return None
    drawn_j = _cum_at(prep.power, b[idx], _M_INTEGRAL) - _cum_at(prep.power, a[idx], _M_INTEGRAL)
    floor_j = max(STUCK_MIN_J, STUCK_RESOLUTIONS * prep.counter_resolution_j)
    stuck = np.zeros(a.shape, dtype=bool)
    stuck[idx[drawn_j >= floor_j]] = True
    return stuck if bool(stuck.any()) else None


def _resets_between(track: _Track, a: FloatArray, b: FloatArray) -> IntArray:
    """Counter resets in the steps that overlap (a, b)."""
    if track.resets.size == 0:  # none anywhere (the usual case)
        return np.zeros(a.shape, dtype=np.int64)
    t = track.t_s
    k_a = np.clip(np.searchsorted(t, a, side="right") - 1, 0, track.n - 1)  # step containing a
    k_b = np.clip(np.searchsorted(t, b, side="left"), 0, track.n - 1)  # sample closing the step containing b
    return np.maximum(track.resets[k_b] - track.resets[k_a], 0)


def window_energy(
    time_ns: npt.ArrayLike,
    power_w: npt.ArrayLike | None,
    energy_j: npt.ArrayLike | None,
    start_ns: int,
    end_ns: int,
    *,
    period_s: float,
    estimated: bool = False,
) -> WindowEnergy:
    """Energy of one window [start_ns, end_ns] from one device's samples.

    1. Counter difference, each boundary linearly interpolated between the reads around it.
       A decrease of the counter is taken as a reset: the increments are summed and the
       negative step skipped (counted as 0 J), and the window is flagged `reset`.
    2. Otherwise (no counter, or the power samples cover more of the window) the trapezoidal
       integral of power with the edges interpolated.
    Nothing is extrapolated: where data does not reach an edge, the covered part is
    integrated and the window flagged `edge`. NaN values are ignored; unsorted input is
    sorted stably and duplicate timestamps are averaged (per field, NaN ignored).
    """
    t = np.asarray(time_ns, dtype=np.int64)
    nan = np.full(t.shape, np.nan)
    p = nan if power_w is None else np.asarray(power_w, dtype=np.float64)
    e = nan if energy_j is None else np.asarray(energy_j, dtype=np.float64)
    if p.shape != t.shape or e.shape != t.shape:
        raise ValueError("power_w and energy_j must have the length of time_ns")
    series = SeriesArrays(t, p, e, "", "", period_s, estimated)
    return window_energy_many(series, [start_ns], [end_ns]).item(0)


# --------------------------------------------------------------------------------------------------
# Carbon
# --------------------------------------------------------------------------------------------------


def _carbon_prepared(carbon: IntensitySeries) -> tuple[IntArray, FloatArray] | None:
    t_ns, (ci,) = _dedup_mean(carbon.time_ns, carbon.g_per_kwh)
    ok = np.isfinite(ci)
    if not bool(np.any(ok)):
        return None
    return t_ns[ok], ci[ok]


def window_carbon_many(
    series: SeriesArrays | PreparedSeries,
    carbon: IntensitySeries,
    starts_ns: npt.ArrayLike,
    ends_ns: npt.ArrayLike,
    methods: npt.NDArray[np.int8] | None = None,
) -> FloatArray:
    """∫ P(t)·CI(t) dt in grams for many windows; NaN where energy is unknown.

    The energy is taken with the same method as `window_energy_many` (a counter gives
    piecewise-constant power between reads); G(x) = ∫_{-inf}^{x} CI dE is built once at the
    intensity change points, so each window costs two lookups.
    """
    prep = series if isinstance(series, PreparedSeries) else prepare(series)
    starts = np.atleast_1d(np.asarray(starts_ns, dtype=np.int64))
    ends = np.atleast_1d(np.asarray(ends_ns, dtype=np.int64))
    a = _rel_s(prep, starts)
    b = _rel_s(prep, ends)
    if methods is None:
        methods = _choose(prep, a, b)
    out = np.full(a.shape, np.nan)
    ci_prep = _carbon_prepared(carbon)
    if ci_prep is None:
        return out
    ci_t = _rel_s(prep, ci_prep[0])
    ci_v = ci_prep[1]
    for code, track in ((_M_COUNTER, prep.counter), (_M_INTEGRAL, prep.power)):
        m = methods == code
        if not bool(np.any(m)):
            continue
        e_ci = _cum_at(track, ci_t, code)
        # grams accumulated from the first change point to each change point
        g_ci = np.concatenate(([0.0], np.cumsum(ci_v[:-1] * np.diff(e_ci)))) / J_PER_KWH

        def g_at(x: FloatArray, track: _Track = track, code: int = code, e_ci: FloatArray = e_ci,
                 g_ci: FloatArray = g_ci) -> FloatArray:
            k = np.clip(np.searchsorted(ci_t, x, side="right") - 1, 0, ci_t.shape[0] - 1)
            return g_ci[k] + ci_v[k] * (_cum_at(track, x, code) - e_ci[k]) / J_PER_KWH

        out[m] = g_at(b[m]) - g_at(a[m])
    return out


def window_carbon_g(
    time_ns: npt.ArrayLike,
    power_w: npt.ArrayLike | None,
    energy_j: npt.ArrayLike | None,
    ci_time_ns: npt.ArrayLike,
    ci_g_per_kwh: npt.ArrayLike,
    start_ns: int,
    end_ns: int,
) -> float | None:
    """Grams CO2e of one window: ∫ P(t)·CI(t) dt, the intensity in force at each instant.

    CI is a step function (each value holds until the next; the first also holds before
    itself). With only a counter, power is the counter difference between reads.
    None when the window has no usable samples or no intensity.
    """
    t = np.asarray(time_ns, dtype=np.int64)
    nan = np.full(t.shape, np.nan)
    p = nan if power_w is None else np.asarray(power_w, dtype=np.float64)
    e = nan if energy_j is None else np.asarray(energy_j, dtype=np.float64)
    series = SeriesArrays(t, p, e, "", "", float("nan"))
    carbon = IntensitySeries(np.asarray(ci_time_ns, dtype=np.int64), np.asarray(ci_g_per_kwh, dtype=np.float64))
    v = float(window_carbon_many(series, carbon, [start_ns], [end_ns])[0])
    return None if np.isnan(v) else v
