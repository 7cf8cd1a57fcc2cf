"""A fake ``pynvml`` for machines without NVIDIA GPUs: the real names, structs and error classes.

The shim is the lowest layer only: it exposes the function names the real binding has, returns real
``pynvml.c_nvmlFieldValue_t`` structs, and raises the real ``pynvml.NVMLError`` subclasses (built
with ``pynvml.NVMLError(code)`` exactly as the binding does), so the source's except-clauses run
against the real types. GPUs follow programmable power curves; the energy counter integrates them.

    shim = make_shim(n_gpus=8)                    # eight H100-like GPUs at 300 W
    NvmlSource(NvmlConfig(), nvml_module=shim)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

PowerCurve = Callable[[float], float]  # seconds since the shim started → watts


@dataclass
class FakeGpu:
    """One simulated GPU. ``power_w`` is watts or a function of seconds since the shim started."""

    name: str = "NVIDIA H100 80GB HBM3"
    power_w: float | PowerCurve = 300.0
    average_w: float | PowerCurve | None = None  # GetPowerUsage; None: same curve as power_w
    instant: bool = True  # NVML_FI_DEV_POWER_INSTANT supported (False: old GPU/driver)
    counter: bool = True  # nvmlDeviceGetTotalEnergyConsumption supported (False: pre-Volta)
    average: bool = True  # nvmlDeviceGetPowerUsage supported
    mig: bool | None = False  # None: GetMigMode NOT_SUPPORTED (pre-Ampere)
    util_pct: int = 97
    sm_clock_mhz: int = 1980
    temp_c: int = 61
    limits_w: tuple[float, float] | None = (200.0, 700.0)  # min/max power-management limit (None: NOT_SUPPORTED)
    lost_after_s: float | None = None  # the GPU falls off the bus after this many seconds
    lost: bool = False
    energy_j: float = 0.0  # the counter's value at start
    # > 0: the driver updates the instant power field and the energy counter only every update_s (an H200 on driver
    # 580: 0.1 s, bench/results/gpu_check.json), and a read returns the value of the last update; 0: a new value at
    # every read
    update_s: float = 0.0
    _energy_t: float | None = field(default=None, repr=False)


class _Handle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class _Utilization:
    def __init__(self, gpu: int, memory: int) -> None:
        self.gpu = gpu
        self.memory = memory


class NvmlShim:
    """A module-like object: ``shim.nvmlInit()``, ``shim.NVML_FI_DEV_POWER_INSTANT``, ``shim.NVMLError_GpuIsLost`` …"""

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        init_error: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        counter_cost_s: float = 0.0,
    ) -> None:
        # Every constant, struct and error class comes from the real binding.
        for attr in dir(pynvml):
            if attr.startswith(("NVML_", "NVMLError", "c_nvml")):
                setattr(self, attr, getattr(pynvml, attr))
        self.NVMLError = pynvml.NVMLError
        self.gpus = gpus
        self.init_error = init_error
        self.clock = clock
        self.counter_cost_s = counter_cost_s  # real drivers spend ~ms in the energy counter call
        self.t0 = clock()
        self.initialised = 0
        self.counter_calls = 0
        self.field_calls = 0

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the real binding has but the shim does not fake: say so plainly.
        raise AttributeError(f"the pynvml shim does not fake {name!r}")

    # -- helpers -----------------------------------------------------------------------------

    def _t(self) -> float:
        return self.clock() - self.t0

    def _err(self, code: int) -> pynvml.NVMLError:
        return pynvml.NVMLError(code)  # __new__ picks the real subclass, as _nvmlCheckReturn does

    def _check_init(self) -> None:
        if self.initialised <= 0:
            raise self._err(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: _Handle) -> FakeGpu:
        self._check_init()
        gpu = self.gpus[handle.index]
        if gpu.lost or (gpu.lost_after_s is not None and self._t() >= gpu.lost_after_s):
            gpu.lost = True
            raise self._err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    @staticmethod
    def _curve(value: float | PowerCurve, t: float) -> float:
        return float(value(t)) if callable(value) else float(value)

    def lose_gpu(self, index: int) -> None:
        self.gpus[index].lost = True

    def recover_gpu(self, index: int) -> None:
        self.gpus[index].lost = False
        self.gpus[index].lost_after_s = None

    # -- the pynvml API ----------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self._err(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise self._err(pynvml.NVML_ERROR_GPU_IS_LOST)
        return _Handle(index)

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[int]) -> Any:
        self._check_init()
        self.field_calls += 1
        gpu = self.gpus[handle.index]
        t = self._t()
        lost = gpu.lost or (gpu.lost_after_s is not None and t >= gpu.lost_after_s)
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        now_us = time.time_ns() // 1000
        # As the real binding: one Python-level setattr per field (fieldId), then the driver fills the structs in C;
        # here the "driver" part sets the ctypes fields directly, so the shim's cost stays near a real call's.
        fill = object.__setattr__
        for i, fid in enumerate(field_ids):
            v = values[i]
            v.fieldId = fid
            fill(v, "timestamp", now_us)
            fill(v, "valueType", pynvml.NVML_VALUE_TYPE_UNSIGNED_INT)
            if lost:
                # The call succeeds; each field carries its own error, as the real driver reports.
                gpu.lost = True
                fill(v, "nvmlReturn", pynvml.NVML_ERROR_GPU_IS_LOST)
                fill(v, "timestamp", 0)
            elif fid == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu.instant:
                fill(v, "nvmlReturn", pynvml.NVML_SUCCESS)
                v.value.uiVal = round(self._curve(gpu.power_w, _last_update(t, gpu.update_s)) * 1000)
            elif fid == pynvml.NVML_FI_DEV_POWER_AVERAGE and gpu.instant:
                fill(v, "nvmlReturn", pynvml.NVML_SUCCESS)
                v.value.uiVal = round(self._curve(gpu.average_w or gpu.power_w, t) * 1000)
            else:
                fill(v, "nvmlReturn", pynvml.NVML_ERROR_NOT_SUPPORTED)
                fill(v, "timestamp", 0)
        return values

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        if not gpu.average:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return round(self._curve(gpu.average_w if gpu.average_w is not None else gpu.power_w, self._t()) * 1000)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.limits_w is None:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [round(gpu.limits_w[0] * 1000), round(gpu.limits_w[1] * 1000)]  # mW, as the driver answers

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        gpu = self._gpu(handle)
        if not gpu.counter:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.counter_calls += 1
        if self.counter_cost_s:
            time.sleep(self.counter_cost_s)
        t = _last_update(self._t(), gpu.update_s)
        if gpu._energy_t is None:
            gpu._energy_t = 0.0
        t_prev = gpu._energy_t
        if t <= t_prev:  # no update since the last read: the same value
            return int(gpu.energy_j * 1000)
        if not callable(gpu.power_w):  # constant power: closed form, as cheap as the driver's own counter
            gpu.energy_j += float(gpu.power_w) * (t - t_prev)
        else:
            # Midpoint rule in ≤ 1 ms steps: exact for constant and piecewise-constant curves.
            steps = max(1, math.ceil((t - t_prev) * 1000 - 1e-9))
            dt = (t - t_prev) / steps
            gpu.energy_j += sum(self._curve(gpu.power_w, t_prev + (k + 0.5) * dt) for k in range(steps)) * dt
        gpu._energy_t = t
        return int(gpu.energy_j * 1000)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> _Utilization:
        gpu = self._gpu(handle)
        return _Utilization(gpu.util_pct, 40)

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        gpu = self._gpu(handle)
        if clock_type != pynvml.NVML_CLOCK_SM:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._gpu(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise self._err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temp_c

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.mig is None:
            raise self._err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]


def _last_update(t: float, update_s: float) -> float:
    return math.floor(t / update_s) * update_s if update_s > 0 else t


def make_shim(n_gpus: int = 8, power_w: float | PowerCurve = 300.0, **kwargs: Any) -> NvmlShim:
    """N identical modern GPUs (instant field, energy counter); ``kwargs`` go to ``NvmlShim``."""
    return NvmlShim([FakeGpu(power_w=power_w) for _ in range(n_gpus)], **kwargs)


def old_gpu(**kwargs: Any) -> FakeGpu:
    """A pre-Volta GPU: no instant power field, no energy counter, no MIG."""
    return FakeGpu(name="Tesla P100-PCIE-16GB", instant=False, counter=False, mig=None, **kwargs)
