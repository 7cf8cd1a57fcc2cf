"""GPU allocation policies for CE-NAS: split G GPUs between sampling (cheap) and evaluation (expensive) by carbon."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from jouled.carbon.series import IntensitySeries
from jouled.errors import UserError

DAY_S = 86400.0
HOUR_S = 3600.0
CLEAN_PERCENTILE = 50.0  # clean-hour policy: work while the known intensity is at or below this percentile
# of this trailing window: five days, so a windy (clean) spell of several days is worked through and a still one
# waited out, where a 24-h window works half of every day whatever the weather (docs/architecture.md, "Pacing")
CLEAN_WINDOW_H = 120.0
# the stall rule (`clean:P:LATE`, LATE given in the spec) is off in `cenas`: it left seeds short of the target once
# the pace is kept over the search's length (docs/architecture.md, "Stall rule")
STALL_TRAININGS = 200  # a stall: the last this many trainings together raised the front's HV by less than
STALL_GAIN_PCT = 0.2  # this percentage (between the two, the percentile is interpolated)


@dataclass(frozen=True, slots=True)
class Split:
    """One decision: GPUs for sampling, GPUs for evaluation, and λs (the sampling share, 0..1)."""

    gpus_sampling: int
    gpus_evaluation: int
    lambda_s: float
    note: str = ""


class Policy(Protocol):
    """Decide the GPU split at ``now_s`` given the current intensity, the history and an optional forecast."""

    name: str

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split: ...


def round_half_up(x: float) -> int:
    """Round .5 up (Python's round() rounds half to even, which would make G·0.5 splits depend on parity)."""
    return math.floor(x + 0.5)


def split_from_lambda(lambda_s: float, gpus: int, note: str = "") -> Split:
    """sampling = round(G·λs), evaluation = G − sampling."""
    if gpus < 0:
        raise ValueError("gpus must be >= 0")
    lam = min(1.0, max(0.0, float(lambda_s)))
    s = min(gpus, max(0, round_half_up(gpus * lam)))
    return Split(s, gpus - s, lam, note)


def cenas_lambda(c: float, c_min: float, c_max: float) -> float:
    """CE-NAS heuristic λs = (C − Cmin)/(Cmax − Cmin), clipped to [0, 1]; 0.5 when Cmax == Cmin (no information)."""
    if not (math.isfinite(c_min) and math.isfinite(c_max)) or c_max <= c_min:
        return 0.5
    return min(1.0, max(0.0, (c - c_min) / (c_max - c_min)))


class CenasPolicy:
    """The CE-NAS heuristic with Cmin/Cmax over a TRAILING window (the past only, plus the current value)."""

    def __init__(self, window_s: float = DAY_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.name = "cenas"

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        past = history.trailing(now_s, self.window_s)
        c_min, c_max = history.trailing_range(now_s, self.window_s, intensity)
        lam = cenas_lambda(intensity, c_min, c_max)
        note = "no trailing history: λs = 0.5" if past.size == 0 else ""
        return split_from_lambda(lam, gpus, note)


class OraclePolicy:
    """ORACLE BASELINE: the CE-NAS heuristic with Cmin/Cmax over the WHOLE history given, future included —
    what the public CE-NAS code does. Only meaningful in simulation, where the history is the whole trace."""

    def __init__(self) -> None:
        self.name = "oracle"

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        vals = np.append(history.g_per_kwh, intensity)
        return split_from_lambda(cenas_lambda(intensity, float(vals.min()), float(vals.max())), gpus, "oracle (future knowledge)")


class StaticPolicy:
    """A fixed split: λs = fraction of GPUs sampling, whatever the carbon."""

    def __init__(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        self.fraction = fraction
        self.name = f"static:{fraction:g}"

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        return split_from_lambda(self.fraction, gpus)


class RandomPolicy:
    """A seeded baseline: λs uniform in [0, 1] at each decision."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.name = "random"

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        return split_from_lambda(float(self.rng.random()), gpus)


class ThresholdPolicy:
    """Evaluate with every GPU when C ≤ the ``percentile``-th percentile of the trailing window, else sample."""

    def __init__(self, percentile: float = 30.0, window_s: float = DAY_S) -> None:
        if not 0.0 <= percentile <= 100.0:
            raise ValueError("percentile must be in [0, 100]")
        self.percentile = percentile
        self.window_s = window_s
        self.name = f"threshold:{percentile:g}"

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        past = history.trailing(now_s, self.window_s)
        if past.size == 0:
            return split_from_lambda(0.5, gpus, "no trailing history: λs = 0.5")
        limit = float(np.percentile(past, self.percentile))
        return split_from_lambda(0.0 if intensity <= limit else 1.0, gpus, f"threshold {limit:.1f} g/kWh")


class ForecastPolicy:
    """Plan evaluation into the cleanest hours of the next ``horizon_s``: divide it into hourly slots (slot 0 =
    now, valued at the current intensity and any forecast points in it; later slots = the mean of the forecast
    points in them), evaluate with every GPU when slot 0 is among the k cleanest, sample otherwise.
    k = ``eval_hours_per_day`` scaled to the horizon, or ``duty`` × slots. Re-planned at every decision
    (receding horizon). Without a forecast it falls back to the trailing-window CE-NAS heuristic."""

    def __init__(
        self,
        duty: float = 0.5,
        eval_hours_per_day: float | None = None,
        horizon_s: float = DAY_S,
        slot_s: float = HOUR_S,
        window_s: float = DAY_S,
    ) -> None:
        if not 0.0 <= duty <= 1.0:
            raise ValueError("duty must be in [0, 1]")
        if eval_hours_per_day is not None and not 0.0 <= eval_hours_per_day <= 24.0:
            raise ValueError("eval_hours_per_day must be in [0, 24]")
        self.duty = duty
        self.eval_hours_per_day = eval_hours_per_day
        self.horizon_s = horizon_s
        self.slot_s = slot_s
        self._fallback = CenasPolicy(window_s)
        self.name = "forecast"

    def slots(self, now_s: float, intensity: float, forecast: IntensitySeries) -> np.ndarray:
        """Mean intensity per slot (NaN where the forecast has no point)."""
        n = max(1, math.ceil(self.horizon_s / self.slot_s))
        sums = np.zeros(n)
        counts = np.zeros(n)
        sums[0], counts[0] = intensity, 1.0
        t, v = forecast.ahead(now_s, self.horizon_s)
        idx = np.floor((t - now_s) / self.slot_s).astype(int)
        ok = (idx >= 0) & (idx < n)
        np.add.at(sums, idx[ok], v[ok])
        np.add.at(counts, idx[ok], 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def k_slots(self, n_slots: int) -> int:
        if self.eval_hours_per_day is not None:
            hours = self.eval_hours_per_day * (n_slots * self.slot_s / DAY_S)
            return min(n_slots, round_half_up(hours * HOUR_S / self.slot_s))
        return min(n_slots, round_half_up(self.duty * n_slots))

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        if forecast is None or forecast.ahead(now_s, self.horizon_s)[0].size == 0:
            s = self._fallback.decide(now_s, intensity, history, None, gpus)
            return Split(s.gpus_sampling, s.gpus_evaluation, s.lambda_s, "no forecast: CE-NAS trailing heuristic")
        means = self.slots(now_s, intensity, forecast)
        known = np.nonzero(~np.isnan(means))[0]
        k = self.k_slots(known.size)
        # stable sort: among equal intensities the earlier slot wins, so "now" is preferred over later ties
        cleanest = known[np.argsort(means[known], kind="stable")[:k]]
        evaluate = bool(0 in cleanest)
        return split_from_lambda(0.0 if evaluate else 1.0, gpus, f"{k} of {known.size} slots for evaluation")


def clean_threshold(values: np.ndarray, percentile: float) -> float:
    """The intensity at ``percentile`` of ``values`` (the known trailing window); +inf when nothing is known,
    so a search with no history yet works rather than waits."""
    if values.size == 0:
        return math.inf
    return float(np.percentile(values, percentile))


class CleanHourPolicy:
    """Run (sample, then evaluate) with every GPU while the KNOWN intensity is at or below the ``percentile``-th
    percentile of the trailing window; release the GPUs otherwise (trainings checkpoint and pause).

    Unlike a split, it never keeps a GPU powered without work: the simulator's `cenas` method and the
    live search's `clean` method use it. With several zones the window pools every zone's values, so the
    clean zones qualify more often than the dirty ones (evaluation goes where the grid is cleanest).

    **Pacing** (`pace_over`, when the search's length is known): P is then the share of the search's hours to work,
    not a fixed percentile. After each decision period the caller says what share of it was worked
    (`observe_period`), and the percentile in force is the share the rest of the search needs to end at P % of its
    hours worked (`paced_percentile`): a dirty spell that left the search behind raises it, a clean one that put
    the search ahead lowers it. The window picks WHICH hours are clean; the pace makes sure enough of them are
    worked before the end, so a search does not run out of time in a dirty week.

    ``late_percentile`` (None: off) is the thrift of a search that has stalled: the search tells the policy its
    front's hypervolume after each training (`observe_training`), and while the last STALL_TRAININGS trainings
    raised it by less than STALL_GAIN_PCT %, the policy works only below ``late_percentile`` (interpolated between
    the two as the gain falls). A training late in the search rarely moves the front, so it waits for a cleaner
    hour; early on, when each training counts, the pace is kept. It uses only what the search knows (its own
    results, never the space's true maximum).
    """

    def __init__(
        self, percentile: float = CLEAN_PERCENTILE, window_s: float = CLEAN_WINDOW_H * 3600.0,
        late_percentile: float | None = None,
    ) -> None:
        if not 0.0 <= percentile <= 100.0:
            raise ValueError("percentile must be in [0, 100]")
        if late_percentile is not None and not 0.0 <= late_percentile <= 100.0:
            raise ValueError("late_percentile must be in [0, 100]")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.percentile = percentile
        self.late_percentile = late_percentile
        self.window_s = window_s
        self.name = clean_spec(percentile, late_percentile)
        self._front_hv: list[float] = []  # the front's hypervolume after each training, as the search reported it
        self.horizon_s: float | None = None  # the search's length when paced (pace_over); None: no pacing
        self._elapsed_s = 0.0  # decision periods observed so far, and the worked part of them
        self._worked_s = 0.0

    def pace_over(self, horizon_s: float) -> None:
        """Pace the work over a search of ``horizon_s`` seconds (see the class docstring)."""
        if not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ValueError("horizon_s must be > 0")
        self.horizon_s = float(horizon_s)

    def observe_period(self, worked_fraction: float, period_s: float) -> None:
        """A decision period of ``period_s`` ended; ``worked_fraction`` (0..1) of the GPUs worked in it."""
        self._elapsed_s += float(period_s)
        self._worked_s += min(1.0, max(0.0, float(worked_fraction))) * float(period_s)

    def observe_training(self, front_hv: float) -> None:
        """A training finished; the evaluated front's hypervolume is now `front_hv`."""
        self._front_hv.append(float(front_hv))

    def percentile_now(self) -> float:
        """The percentile in force: `percentile` (down to `late_percentile` as the search stalls), and when paced
        the share of the rest of the search that has to be worked to end at that share of its hours."""
        pct = self.percentile
        if self.late_percentile is not None:
            pct = stall_percentile(self._front_hv, self.percentile, self.late_percentile)
        if self.horizon_s is None:
            return pct
        return paced_percentile(pct, self.horizon_s, self._elapsed_s, self._worked_s)

    def threshold(self, now_s: float, histories: list[IntensitySeries]) -> float:
        """Percentile (the one in force) of every zone's values known in (now − window, now]."""
        vals = [h.trailing(now_s, self.window_s) for h in histories]
        return clean_threshold(np.concatenate(vals) if vals else np.zeros(0), self.percentile_now())

    def decide(
        self, now_s: float, intensity: float, history: IntensitySeries, forecast: IntensitySeries | None, gpus: int
    ) -> Split:
        limit = self.threshold(now_s, [history])
        if intensity <= limit:
            return Split(0, gpus, 0.0, f"clean: {intensity:.0f} <= {limit:.0f} g/kWh")
        return Split(0, 0, 0.0, f"dirty: {intensity:.0f} > {limit:.0f} g/kWh, GPUs released")


def clean_spec(percentile: float = CLEAN_PERCENTILE, late_percentile: float | None = None) -> str:
    """The policy spec of jouled's `cenas` (the simulator's and `nas search`'s): ``clean:50`` by default."""
    return f"clean:{percentile:g}" + (f":{late_percentile:g}" if late_percentile is not None else "")


def stall_percentile(
    front_hv: list[float], percentile: float, late_percentile: float,
    trainings: int = STALL_TRAININGS, gain_pct: float = STALL_GAIN_PCT,
) -> float:
    """`percentile` until the front's HV gain over the last `trainings` trainings falls below `gain_pct` %, then
    linearly down to `late_percentile` at no gain (pure: the sequence of HVs after each training in, a percentile out).
    Fewer than `trainings` trainings: no judgement yet, `percentile`."""
    if len(front_hv) < trainings or trainings < 1:
        return percentile
    now, then = front_hv[-1], front_hv[-trainings]
    gain = (now - then) / now * 100.0 if now > 0 else 0.0
    f = min(1.0, max(0.0, gain / gain_pct)) if gain_pct > 0 else 1.0
    return late_percentile + (percentile - late_percentile) * f


def paced_percentile(duty_pct: float, horizon_s: float, elapsed_s: float, worked_s: float) -> float:
    """The share (in %, 0..100) of the rest of a search of ``horizon_s`` that has to be worked for the whole to
    end at ``duty_pct`` % worked, after ``worked_s`` of ``elapsed_s`` were (pure). Past the end: ``duty_pct``."""
    left_s = horizon_s - elapsed_s
    if left_s <= 0:
        return duty_pct
    need_s = duty_pct / 100.0 * horizon_s - worked_s
    return min(100.0, max(0.0, 100.0 * need_s / left_s))


def seasonal_naive(history: IntensitySeries, now_s: float, horizon_s: float = DAY_S, season_s: float = DAY_S) -> IntensitySeries:
    """Day-ahead forecast from history only: the value at t is the one KNOWN at t − season.

    The points of (now − season, now] of ``history`` shifted by one season (the past must already be cut
    at now — the caller passes what it knew). Covers (now, now + min(horizon, season)]."""
    t = history.time_s
    lo = int(np.searchsorted(t, now_s - season_s, side="right"))
    hi = int(np.searchsorted(t, now_s, side="right"))
    keep = t[lo:hi] + season_s <= now_s + horizon_s
    return IntensitySeries.from_seconds(t[lo:hi][keep] + season_s, history.g_per_kwh[lo:hi][keep])


POLICY_SPECS = (
    "cenas", "oracle", "static:<fraction>", "random", "threshold[:<percentile>]", "forecast[:<duty>]",
    "clean[:<percentile>[:<late percentile>]]",
)


def make_policy(
    spec: str, seed: int = 0, *, window_s: float = DAY_S, clean_window_s: float = CLEAN_WINDOW_H * 3600.0
) -> Policy:
    """Parse a policy spec: cenas | oracle | static:0.5 | random | threshold[:30] | forecast[:0.5] | clean[:50[:40]].

    ``window_s`` is the trailing window of the λs heuristic and the threshold/forecast policies (24 h, the
    seed's); ``clean_window_s`` the clean-hour policy's (CLEAN_WINDOW_H)."""
    raw = spec.strip().lower()
    name, _, arg = raw.partition(":")
    bad = UserError(f"policy {spec!r}: unknown or malformed — use one of {', '.join(POLICY_SPECS)}")

    def num(lo: float, hi: float, what: str, text: str | None = None) -> float:
        try:
            x = float(arg if text is None else text)
        except ValueError:
            raise bad from None
        if not lo <= x <= hi:
            raise UserError(f"policy {spec!r}: {what} {x:g} out of range — use a value in [{lo:g}, {hi:g}]")
        return x

    if name == "cenas" and not arg:
        return CenasPolicy(window_s)
    if name == "oracle" and not arg:
        return OraclePolicy()
    if name == "random" and not arg:
        return RandomPolicy(seed)
    if name == "static" and arg:
        return StaticPolicy(num(0.0, 1.0, "fraction"))
    if name == "threshold":
        return ThresholdPolicy(num(0.0, 100.0, "percentile") if arg else 30.0, window_s)
    if name == "forecast":
        return ForecastPolicy(duty=num(0.0, 1.0, "duty") if arg else 0.5, window_s=window_s)
    if name == "clean":
        first, _, late = arg.partition(":")
        pct = num(0.0, 100.0, "percentile", first) if first else CLEAN_PERCENTILE
        return CleanHourPolicy(pct, clean_window_s, num(0.0, 100.0, "late percentile", late) if late else None)
    raise bad


def place(zones: dict[str, tuple[int, float]], evaluation_gpus_needed: int) -> dict[str, int]:
    """Place evaluation GPUs in the cleanest zones first: zones = {zone: (gpus, intensity_g_per_kwh)}.

    Returns {zone: n} for every zone (0 where nothing goes); ties go to the zone name that sorts first.
    When more is needed than exists, every GPU is used (the caller sees the shortfall in the sum).
    """
    if evaluation_gpus_needed < 0:
        raise ValueError("evaluation_gpus_needed must be >= 0")
    out = dict.fromkeys(zones, 0)
    left = evaluation_gpus_needed
    for zone, (gpus, _ci) in sorted(zones.items(), key=lambda kv: (kv[1][1], kv[0])):
        if left <= 0:
            break
        n = min(max(0, gpus), left)
        out[zone] = n
        left -= n
    return out
