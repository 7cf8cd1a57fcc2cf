"""NVIDIA GPU power through NVML (nvidia-ml-py): instant power on every read, the costly energy counter slower."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jouled.clock import CLOCK
from jouled.config import NvmlConfig
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.series import COARSE_UPDATES, TICK, SeriesMeta

from .base import SourceInfo
from .common import Backoff, PartialRead

NO_DRIVER = (
    "no NVIDIA driver (libnvidia-ml.so not found) — install the NVIDIA driver, or disable with [sources.nvml] enabled = false"
)
# Utilisation, clocks and temperature change slowly (the driver samples utilisation every 1/6 s or
# slower), so read them at most this often even when power is read at 1 kHz.
# pynvml's structs override __getattribute__ in Python (to decode bytes fields); the power field's members are ints,
# so the ctypes descriptors are read directly: a third of jouled's own cost per GPU per tick
_raw = object.__getattribute__


@dataclass
class _Gpu:
    index: int
    device: str
    handle: Any
    instant: bool  # NVML_FI_DEV_POWER_INSTANT answers
    average: bool  # nvmlDeviceGetPowerUsage answers
    counter: bool  # nvmlDeviceGetTotalEnergyConsumption answers (Volta and newer)
    util: bool = False
    clock: bool = False
    temp: bool = False
    limits_w: tuple[float, float] | None = None  # min/max power-management limit (declared for `jouled assess`)
    # how often the driver itself updates the energy counter and the instant power field, measured at open
    # (`update_periods`); None: not measured (no counter, or no change seen), 0.0: a new value at every read
    counter_update_s: float | None = None
    power_update_s: float | None = None
    backoff: Backoff = field(default_factory=Backoff)


def _nvml_error_name(err: BaseException) -> str:
    return type(err).__name__


class NvmlSource:
    """One reading per GPU per ``read()``; energy-counter readings at ``counter_rate_hz`` and on markers.

    Each ``read()`` returns, per healthy GPU, one power reading (``power_w`` = instant power, or the
    averaged ``GetPowerUsage`` where the instant field is not supported; at most every ``extras_period_s``
    (1 s) the extras ``power_avg_w``, ``util_gpu_pct``, ``sm_clock_mhz``, ``temp_c``). On counter ticks it adds one
    energy-only reading per GPU with a counter, stamped at the midpoint of the (ms-long) counter call:
    power and energy then each keep their own exact time base.

    A GPU that fails (``NVMLError_GpuIsLost`` …) makes that ``read()`` raise ``PartialRead`` carrying the
    healthy GPUs' readings; the GPU is then skipped under exponential backoff (0.5 s … 30 s) and retried
    with a fresh handle, so later reads return the other GPUs without raising until the retry.
    """

    name = "nvml"
    kind: SourceKind = "measured"
    # driver calls return in µs (the energy counter in ~ms): shares the sampling thread with RAPL; a GPU that hangs
    # the driver is rare and stalls every GPU anyway. `[daemon] shared_sampling_thread = false` separates them.
    blocking = False

    def __init__(self, cfg: NvmlConfig | None = None, *, nvml_module: Any = None) -> None:
        self.cfg = cfg if cfg is not None else NvmlConfig()
        self._nv_injected = nvml_module
        self._nv: Any = None
        self._gpus: list[_Gpu] = []
        self._fields: list[int] = []
        self._lock = threading.Lock()
        self._counter_period_ns = int(1e9 / self.cfg.counter_rate_hz)
        self._extras_period_ns = int(self.cfg.extras_period_s * 1e9)
        self._next_counter_ns = 0
        self._next_extras_ns = 0
        self._open = False
        self.device_errors: dict[str, str] = {}  # device → last error, while it is failing

    # -- lifecycle ---------------------------------------------------------------------------

    def _load(self) -> Any:
        if self._nv_injected is not None:
            return self._nv_injected
        try:
            import pynvml
        except ImportError:
            raise SourceUnavailable(
                "nvidia-ml-py is not installed (import pynvml failed) — pip install nvidia-ml-py, "
                "or disable with [sources.nvml] enabled = false"
            ) from None
        return pynvml

    def open(self) -> SourceInfo:
        nv = self._nv = self._load()
        try:
            nv.nvmlInit()
        except (nv.NVMLError_LibraryNotFound, nv.NVMLError_DriverNotLoaded):
            raise SourceUnavailable(NO_DRIVER) from None
        except nv.NVMLError_LibRmVersionMismatch:
            raise SourceUnavailable(
                "NVML library and kernel driver versions differ (driver upgraded without reboot) — "
                "reboot or reload the nvidia kernel modules"
            ) from None
        except nv.NVMLError_NoPermission:
            raise SourceUnavailable(
                "no permission to open the GPUs (/dev/nvidia*) — add the service user to the group that "
                "owns /dev/nvidia* (ls -l /dev/nvidia0), or run as root"
            ) from None
        except nv.NVMLError as e:
            raise SourceUnavailable(f"NVML init failed ({_nvml_error_name(e)}: {e}) — check that `nvidia-smi` works") from None
        self._open = True
        try:
            return self._probe(nv)
        except BaseException:
            self.close()
            raise

    def _probe(self, nv: Any) -> SourceInfo:
        count = int(nv.nvmlDeviceGetCount())
        if count == 0:
            raise SourceUnavailable(
                "NVML sees no GPU — check `nvidia-smi -L`; in a container pass the GPUs "
                "(--gpus all / NVIDIA_VISIBLE_DEVICES), or disable with [sources.nvml] enabled = false"
            )
        wanted = list(self.cfg.gpus) if self.cfg.gpus else list(range(count))
        bad = [i for i in wanted if not 0 <= i < count]
        if bad:
            raise SourceUnavailable(
                f"[sources.nvml] gpus = {list(self.cfg.gpus)}: GPU {bad[0]} does not exist "
                f"(NVML sees {count}: 0..{count - 1}) — fix the list or leave it empty for every GPU"
            )
        self._fields = [nv.NVML_FI_DEV_POWER_INSTANT]
        notes: list[str] = []
        gpus: list[_Gpu] = []
        for i in wanted:
            dev = f"gpu{i}"
            try:
                gpu = self._probe_gpu(nv, i, dev, notes)
            except nv.NVMLError as e:
                notes.append(f"{dev}: skipped, NVML error at start ({_nvml_error_name(e)}: {e})")
                continue
            if gpu is not None:
                gpus.append(gpu)
        if not gpus:
            raise SourceUnavailable(
                "no GPU gives a power reading through NVML (" + "; ".join(notes) + ") — "
                "check `nvidia-smi -q -d POWER`, or disable with [sources.nvml] enabled = false"
            )
        self._measure_updates(nv, [g for g in gpus if g.counter], notes)
        self._gpus = gpus
        self._next_counter_ns = 0
        self._next_extras_ns = 0
        return SourceInfo(
            name=self.name,
            kind=self.kind,
            available=True,
            devices=[g.device for g in gpus],
            period_s=1.0 / self.cfg.rate_hz,
            notes=notes,
            counter=any(g.counter for g in gpus),
            series={g.device: self._meta(g) for g in gpus},
        )

    def _meta(self, g: _Gpu) -> SeriesMeta:
        # power on every tick; the counter (mJ) at counter_rate_hz: the energy math judges each against its own period
        return SeriesMeta(
            role="gpu", device=g.device, power_period_s=TICK,
            counter_period_s=1.0 / self.cfg.counter_rate_hz if g.counter else None,
            counter_resolution_j=1e-3 if g.counter else None,
            counter_update_s=g.counter_update_s, power_update_s=g.power_update_s,
            power_min_w=g.limits_w[0] if g.limits_w else None, power_max_w=g.limits_w[1] if g.limits_w else None,
        )

    def _measure_updates(self, nv: Any, gpus: list[_Gpu], notes: list[str]) -> None:
        """Each GPU's counter and power update periods (`update_periods`), the GPUs in parallel: ≤ 0.45 s in all."""
        def one(g: _Gpu) -> tuple[float | None, float | None]:
            h = g.handle
            power = (lambda: _raw(nv.nvmlDeviceGetFieldValues(h, self._fields)[0], "value").uiVal) if g.instant else None
            try:
                return update_periods(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h), power)
            except nv.NVMLError:  # a GPU failing here fails its first read too, where the backoff handles it
                return None, None

        if not gpus:
            return
        with ThreadPoolExecutor(max_workers=len(gpus), thread_name_prefix="jouled-nvml-probe") as pool:
            periods = list(pool.map(one, gpus))
        for g, (counter_s, power_s) in zip(gpus, periods, strict=True):
            g.counter_update_s, g.power_update_s = counter_s, power_s
            if g.counter_update_s:
                power = f", instant power every {g.power_update_s * 1e3:.0f} ms" if g.power_update_s else ""
                notes.append(
                    f"{g.device}: the driver updates the energy counter every {g.counter_update_s * 1e3:.0f} ms{power} "
                    "(measured at start): windows shorter than "
                    f"{COARSE_UPDATES * g.counter_update_s:.1f} s are flagged coarse"
                )

    def _probe_gpu(self, nv: Any, index: int, dev: str, notes: list[str]) -> _Gpu | None:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        instant = False
        try:
            fv = nv.nvmlDeviceGetFieldValues(handle, self._fields)[0]
            instant = fv.nvmlReturn == nv.NVML_SUCCESS
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound, nv.NVMLError_InvalidArgument):
            instant = False
        average = _supported(nv, lambda: nv.nvmlDeviceGetPowerUsage(handle))
        counter = _supported(nv, lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        if not instant and not average:
            notes.append(f"{dev}: skipped, no power reading (instant field and GetPowerUsage NOT_SUPPORTED)")
            return None
        gpu = _Gpu(index=index, device=dev, handle=handle, instant=instant, average=average, counter=counter)
        gpu.util = _supported(nv, lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        gpu.clock = _supported(nv, lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))
        gpu.temp = _supported(nv, lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
        gpu.limits_w = _limits_w(nv, handle)
        if not instant:
            notes.append(
                f"{dev}: power_w from nvmlDeviceGetPowerUsage (instant power field NOT_SUPPORTED; "
                "on Ampere and newer this is a 1 s average)"
            )
        if not counter:
            notes.append(f"{dev}: no energy counter (NOT_SUPPORTED, pre-Volta) — windows use the power integral")
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
            if current == nv.NVML_DEVICE_MIG_ENABLE:
                notes.append(f"{dev}: MIG enabled — power/energy are for the whole physical GPU")
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound, nv.NVMLError_InvalidArgument):
            pass
        return gpu

    def close(self) -> None:
        if self._open and self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass
        self._open = False
        self._gpus = []

    # -- reads -------------------------------------------------------------------------------

    def read(self) -> list[Reading]:
        nv = self._nv
        now_ns = time.monotonic_ns()
        with self._lock:
            counter_due = now_ns >= self._next_counter_ns
            if counter_due:
                self._next_counter_ns = now_ns + self._counter_period_ns
            extras_due = now_ns >= self._next_extras_ns
            if extras_due:
                self._next_extras_ns = now_ns + self._extras_period_ns
        out: list[Reading] = []
        errors: dict[str, str] = {}
        now_s = now_ns / 1e9
        for g in self._gpus:
            if g.backoff.failures and g.backoff.waiting(now_s):
                continue
            try:
                if g.backoff.failures:  # a lost GPU needs a fresh handle once it is back
                    g.handle = nv.nvmlDeviceGetHandleByIndex(g.index)
                out.append(self._read_power(nv, g, extras_due or bool(g.backoff.failures)))
                if counter_due and g.counter:
                    out.append(self._read_counter(nv, g))
            except nv.NVMLError as e:
                errors[g.device] = self._failed(g, e, now_s)
                continue
            if g.backoff.failures:
                g.backoff.ok()
                self.device_errors.pop(g.device, None)
        if errors:
            raise PartialRead(self.name, out, errors)
        return out

    def read_counters(self) -> list[Reading]:
        nv = self._nv
        now_ns = time.monotonic_ns()
        with self._lock:
            self._next_counter_ns = now_ns + self._counter_period_ns
        out: list[Reading] = []
        errors: dict[str, str] = {}
        for g in self._gpus:
            if not g.counter or (g.backoff.failures and g.backoff.waiting(now_ns / 1e9)):
                continue
            try:
                out.append(self._read_counter(nv, g))
            except nv.NVMLError as e:
                errors[g.device] = self._failed(g, e, now_ns / 1e9)
        if errors:
            raise PartialRead(self.name, out, errors)
        return out

    def _read_power(self, nv: Any, g: _Gpu, with_extras: bool) -> Reading:
        h = g.handle
        time_ns = 0
        power_w: float | None = None
        if g.instant:
            fv = nv.nvmlDeviceGetFieldValues(h, self._fields)[0]
            ret = _raw(fv, "nvmlReturn")
            if ret != nv.NVML_SUCCESS:
                raise nv.NVMLError(ret)  # maps to the real subclass (GpuIsLost, …)
            power_w = _raw(fv, "value").uiVal / 1000.0
            stamp_us = _raw(fv, "timestamp")
            if stamp_us:
                time_ns = CLOCK.from_wall_us(stamp_us)
        extras: dict[str, float] = {}
        # the driver's 1-s average changes slowly: beside the instant field it is an extra (at most every
        # extras_period_s); without that field it is the power, read every tick
        if g.average and (power_w is None or with_extras):
            avg_w = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
            extras["power_avg_w"] = avg_w
            if power_w is None:
                power_w = avg_w
        if with_extras:
            if g.util:
                extras["util_gpu_pct"] = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            if g.clock:
                extras["sm_clock_mhz"] = float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            if g.temp:
                extras["temp_c"] = float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        if not time_ns:
            time_ns = CLOCK.now_ns()
        return Reading(time_ns, g.device, power_w, None, extras)

    def _read_counter(self, nv: Any, g: _Gpu) -> Reading:
        t0 = time.monotonic_ns()
        energy_mj = nv.nvmlDeviceGetTotalEnergyConsumption(g.handle)
        t1 = time.monotonic_ns()
        # The call takes ~ms on real drivers: stamp the value at the middle of the call.
        return Reading(
            CLOCK.from_monotonic_ns((t0 + t1) // 2),
            g.device,
            None,
            energy_mj / 1000.0,
            {"counter_read_us": (t1 - t0) / 1000.0},
        )

    def _failed(self, g: _Gpu, err: BaseException, now_s: float) -> str:
        hint = ""
        if isinstance(err, self._nv.NVMLError_GpuIsLost):
            hint = " — the GPU fell off the bus: check `nvidia-smi` and dmesg (Xid); retrying"
        msg = f"NVML {_nvml_error_name(err)} ({err}){hint}"
        delay_s = g.backoff.fail(msg, now_s)
        msg = f"{msg}; next try in {delay_s:.1f} s"
        self.device_errors[g.device] = msg
        return msg


UPDATE_STEP_S = 0.005  # update periods are declared to 5 ms


def update_periods(
    read_counter: Callable[[], float], read_power: Callable[[], float] | None, budget_s: float = 0.45, changes: int = 3
) -> tuple[float | None, float | None]:
    """How often the driver updates the energy counter (and the instant power field): (counter_s, power_s).

    Measured on an H200 (driver 580, bench/results/gpu_check.json): both change every 100 ms, and a counter read
    returns the value of the last update, so a window's counter difference is off by up to one update period's energy
    at each end whatever the rate it is read at. Reads both in a tight loop until the counter changed `changes` + 1
    times (each change timed at the midpoint between the read that saw the old value and the one that saw the new), at
    most `budget_s`; the period is the median interval between changes (at least two), to UPDATE_STEP_S. 0.0: the
    value changed at every read (a continuous counter: no update period to speak of); None: fewer than two intervals
    seen (an idle or frozen value).
    """
    t_end = time.monotonic() + budget_s
    last_c, t_prev = read_counter(), time.monotonic()
    last_p = read_power() if read_power is not None else None
    c_changes: list[float] = []
    p_changes: list[float] = []
    reads = same = 0
    while len(c_changes) < changes + 1 and time.monotonic() < t_end:
        c = read_counter()
        p = read_power() if read_power is not None else None
        t = time.monotonic()
        reads += 1
        if c != last_c:
            c_changes.append((t_prev + t) / 2)
            last_c = c
        else:
            same += 1
        if p is not None and p != last_p:
            p_changes.append((t_prev + t) / 2)
            last_p = p
        t_prev = t
        if reads >= 5 and same == 0:  # a new value at every read: continuous (a simulator, an old driver)
            return 0.0, (0.0 if len(p_changes) == reads else None)

    def median_interval(ts: list[float]) -> float | None:
        gaps = sorted(b - a for a, b in itertools.pairwise(ts))
        # to 5 ms, about the probe's precision (a counter read takes ~3 ms): the same driver gives the same figure
        # at each open, so a restart does not re-declare the series for a difference of noise
        return round(round(gaps[len(gaps) // 2] / UPDATE_STEP_S) * UPDATE_STEP_S, 4) if len(gaps) >= 2 else None

    return median_interval(c_changes), median_interval(p_changes)


def _limits_w(nv: Any, handle: Any) -> tuple[float, float] | None:
    """The GPU's min and max power-management limit in watts (what `nvidia-smi -q -d POWER` calls Min/Max Power
    Limit); None where the driver does not say (only a finding of `jouled assess` depends on it)."""
    try:
        lo_mw, hi_mw = nv.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    except (nv.NVMLError, AttributeError, TypeError, ValueError):
        return None
    return (lo_mw / 1000.0, hi_mw / 1000.0) if 0 <= lo_mw < hi_mw else None


def _supported(nv: Any, call: Any) -> bool:
    try:
        call()
    except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound, nv.NVMLError_InvalidArgument):
        return False
    return True
