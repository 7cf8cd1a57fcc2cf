"""The loads `jouled calibrate` drives: stress-ng when installed, else jouled's own, each as real processes.

Own loads (one process per core asked for, `python -m jouled.quality.loads KIND`): `cpu-prime` (trial division
of integers, the paper's prime-number load), `cpu-fma` (numpy a·b + c over in-cache arrays), `memory` (numpy copies
of arrays far larger than the caches: DRAM bandwidth), `gpu-stress DUTY` (torch matrix products on CUDA, busy
DUTY of every 100 ms); `gpu+cpu` runs GPU stress and cpu-prime at once. Each runs until it is terminated.

Every load runs at the lowest CPU priority (nice 19): it still fills every idle cycle, so the power drawn is the same,
but the daemon that measures it (and anything else on the machine) runs first when it wakes, so its samples stay on
time while every core is busy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

# stress-ng's stressor for each load (None: jouled's own load is used even with stress-ng)
STRESS_NG_ARGS: dict[str, list[str]] = {
    "cpu-prime": ["--cpu", "{n}", "--cpu-method", "prime"],
    "cpu-fma": ["--cpu", "{n}", "--cpu-method", "fma"],
    "memory": ["--stream", "{n}"],
}


@dataclass
class LoadProcs:
    """The processes of one running load; `stop()` ends them (SIGTERM, then SIGKILL)."""

    kind: str
    tool: str  # "stress-ng" or "jouled"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


LOAD_NICENESS = 19


def _lowest_priority() -> None:
    """In the load's child process before exec: the lowest priority (raising niceness needs no privilege)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, LOAD_NICENESS)


def stress_ng() -> str | None:
    return shutil.which("stress-ng")


def start_load(kind: str, workers: int, duty: float = 1.0, *, use_stress_ng: bool = True) -> LoadProcs:
    """Start `workers` processes of load `kind` (idle: none). stress-ng where it has the stressor, else our own."""
    if kind == "idle" or workers <= 0:
        return LoadProcs(kind, "none")
    if kind == "gpu+cpu":  # both at once: the GPU at `duty`, prime numbers on `workers` cores
        gpu = start_load("gpu-stress", 1, duty, use_stress_ng=use_stress_ng)
        cpu = start_load("cpu-prime", workers, use_stress_ng=use_stress_ng)
        return LoadProcs(kind, cpu.tool, [*gpu.procs, *cpu.procs])
    exe = stress_ng() if use_stress_ng else None
    if exe is not None and kind in STRESS_NG_ARGS:
        args = [a.replace("{n}", str(workers)) for a in STRESS_NG_ARGS[kind]]
        p = subprocess.Popen([exe, *args, "--timeout", "0", "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
                             preexec_fn=_lowest_priority)
        time.sleep(0.3)
        if p.poll() is None:  # an old stress-ng without the method exits at once: fall through to our own
            return LoadProcs(kind, "stress-ng", [p])
    n = 1 if kind == "gpu-stress" else workers
    procs = [subprocess.Popen([sys.executable, "-m", "jouled.quality.loads", kind, f"{duty:g}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              preexec_fn=_lowest_priority)
             for _ in range(n)]
    return LoadProcs(kind, "jouled", procs)


# ---------------------------------------------------------------------------------------------- the loads themselves


def _prime() -> None:
    n = 3
    while True:  # trial division: integer ALU work, no memory traffic
        d = 3
        while d * d <= n and n % d:
            d += 2
        n += 2


def _fma() -> None:
    import numpy as np

    a = np.random.default_rng(0).random(4096)  # 32 KiB per array: stays in L1/L2
    b, c = a.copy(), a.copy()
    while True:
        for _ in range(1000):
            np.multiply(a, b, out=a)
            np.add(a, c, out=a)
            a *= 0.5  # keep the values finite


def _memory() -> None:
    import numpy as np

    src = np.ones(16 * 1024 * 1024)  # 128 MiB: far past the caches
    dst = np.empty_like(src)
    while True:
        np.copyto(dst, src)
        np.copyto(src, dst)


def _gpu(duty: float) -> None:
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu-stress: torch sees no CUDA device")
    x = torch.randn(4096, 4096, device="cuda")
    period_s = 0.1
    while True:
        t0 = time.monotonic()
        while time.monotonic() - t0 < duty * period_s:
            x = (x @ x).clamp_(-1, 1)
            torch.cuda.synchronize()
        rest = period_s - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    kind = argv[0] if argv else ""
    duty = float(argv[1]) if len(argv) > 1 else 1.0
    with contextlib.suppress(KeyboardInterrupt):
        if kind == "cpu-prime":
            _prime()
        elif kind == "cpu-fma":
            _fma()
        elif kind == "memory":
            _memory()
        elif kind == "gpu-stress":
            _gpu(duty)
        else:
            sys.exit(f"unknown load {kind!r}: cpu-prime, cpu-fma, memory or gpu-stress")


if __name__ == "__main__":
    main(sys.argv[1:])
