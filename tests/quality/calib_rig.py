"""A machine with known power, for calibration tests and bench/calibration.py: a fake RAPL tree and a SCPI wall meter
on a real TCP socket, both driven by the real CPU utilisation of this machine.

Every 50 ms the rig reads the system's CPU utilisation u (psutil, as the calibrate command and the estimate source
do) and advances the truth: package P = PKG_IDLE_W + PKG_SPAN_W·u, DRAM P = DRAM_IDLE_W + DRAM_SPAN_W·u written into
the powercap tree's energy_uj counters (the kernel's layout, tests/sources/powercap.py), and the wall meter's power and
integrated energy = package + DRAM + uncaptured, uncaptured = UNC_W + UNC_UTIL_W·u. The meter answers the WT310's
SCPI queries (pyvisa-py `TCPIP0::127.0.0.1::PORT::SOCKET`); its integrated energy runs on between ticks at the
current power, as a meter's integrator does. The rig runs in its own process (the test's GIL cannot hold it up) and
asks for a higher scheduling priority (nice −10, when allowed): hardware counters do not stall when the loads and
other work fill every core.
So P_idle = PKG_IDLE + DRAM_IDLE + UNC at u = 0 and
P_busy = the same at u = 1, and calibration must recover UNC_W and UNC_UTIL_W.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.faults.procs import serve_scpi_queries
from tests.sources.powercap import powercap_tree

PKG_IDLE_W, PKG_SPAN_W = 20.0, 60.0
DRAM_IDLE_W, DRAM_SPAN_W = 4.0, 6.0
UNC_W, UNC_UTIL_W = 30.0, 25.0  # the uncaptured power: board, fans, PSU losses
P_IDLE_W = PKG_IDLE_W + DRAM_IDLE_W + UNC_W
P_BUSY_W = P_IDLE_W + PKG_SPAN_W + DRAM_SPAN_W + UNC_UTIL_W
STEP_S = 0.05


def _busy(prev: object, now: object) -> float:
    def split(t: object) -> tuple[float, float]:
        return float(sum(t)), float(getattr(t, "idle", 0.0)) + float(getattr(t, "iowait", 0.0))  # type: ignore[call-overload]

    t0, i0 = split(prev)
    t1, i1 = split(now)
    return 0.0 if t1 <= t0 else max(0.0, min(1.0, 1.0 - (i1 - i0) / (t1 - t0)))


class _Machine:
    """The fake machine's state and threads, inside the rig's own process (see Rig)."""

    def __init__(self, pkg_file: str, dram_file: str, stop: Any, gap: Any) -> None:
        self.pkg_file = Path(pkg_file)
        self.dram_file = Path(dram_file)
        self.lock = threading.Lock()
        self.energy_j = {"package": 0.0, "dram": 0.0, "wall": 0.0, "uncaptured": 0.0}
        self.power_w = {"package": PKG_IDLE_W, "dram": DRAM_IDLE_W, "wall": P_IDLE_W}
        self._tick_t = time.monotonic()
        self._gap = gap  # shared with the test: the longest the fake counters went without an update
        self._stop = stop
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._sock.listen(4)
        self._sock.settimeout(0.1)

    def run(self) -> None:
        """Serve the meter on a thread and tick the counters on this one until the stop event."""
        threading.Thread(target=self._serve, daemon=True).start()
        self._tick()
        self._sock.close()

    @staticmethod
    def _raise_priority() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)

    def _tick(self) -> None:
        self._raise_priority()
        prev = psutil.cpu_times()
        last = time.monotonic()
        pkg_uj, dram_uj = 1_000_000.0, 1_000_000.0
        # written in place with one pwrite, never truncated first: a counter only grows, so each value is at least as
        # long as the last, and a reader never sees the empty file a truncate-then-write would show it
        fds = [os.open(f, os.O_WRONLY) for f in (self.pkg_file, self.dram_file)]
        try:
            self._tick_loop(prev, last, pkg_uj, dram_uj, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _tick_loop(self, prev: object, last: float, pkg_uj: float, dram_uj: float, fds: list[int]) -> None:
        while not self._stop.wait(STEP_S):
            now_t = psutil.cpu_times()
            now = time.monotonic()
            u, dt = _busy(prev, now_t), now - last
            if dt > self._gap.value:
                self._gap.value = dt
            prev, last = now_t, now
            pkg = PKG_IDLE_W + PKG_SPAN_W * u
            dram = DRAM_IDLE_W + DRAM_SPAN_W * u
            unc = UNC_W + UNC_UTIL_W * u
            pkg_uj += pkg * dt * 1e6
            dram_uj += dram * dt * 1e6
            os.pwrite(fds[0], f"{int(pkg_uj)}\n".encode(), 0)
            os.pwrite(fds[1], f"{int(dram_uj)}\n".encode(), 0)
            with self.lock:
                self._tick_t = now
                self.power_w = {"package": pkg, "dram": dram, "wall": pkg + dram + unc}
                for k, p in (("package", pkg), ("dram", dram), ("wall", pkg + dram + unc), ("uncaptured", unc)):
                    self.energy_j[k] += p * dt

    def _serve(self) -> None:
        self._raise_priority()
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        self._raise_priority()
        with conn:
            serve_scpi_queries(conn, self._stop, self._reply)

    def _reply(self, cmd: str) -> str:
        if cmd == ":NUMeric:NORMal:VALue?":
            with self.lock:
                p = self.power_w["wall"]
                e = self.energy_j["wall"] + p * (time.monotonic() - self._tick_t)
            return f"{p:.4E},{e / 3600.0:.9E}"
        return {"*IDN?": "YOKOGAWA,WT310,RIG0001,F1.03", ":STATus:EESR?": "1"}.get(cmd, "0")


def _rig_main(pkg_file: str, dram_file: str, stop: Any, gap: Any, ports: Any) -> None:
    """The rig process: the machine's counters and meter, away from the test process's GIL."""
    m = _Machine(pkg_file, dram_file, stop, gap)
    ports.put(m.port)
    m.run()


class Rig:
    """The fake machine: `start()` builds the tree and starts the rig's process (counters and meter); `stop()` ends it.

    The rig runs in its own process: in the test's process its ticks waited whenever the test held the GIL (the real
    CodeCarbon tracker's flush, say), and a counter that stalls half a second at a window's edge moves energy
    across it."""

    def __init__(self, root: Path) -> None:
        self.root = powercap_tree(root / "powercap", 2)  # intel-rapl:0 package-0 and intel-rapl:0:0 dram
        self.pkg_file = self.root / "intel-rapl:0" / "energy_uj"
        self.dram_file = self.root / "intel-rapl:0:0" / "energy_uj"
        self._mp = multiprocessing.get_context("spawn")
        self._stop = self._mp.Event()
        self._gap = self._mp.Value("d", 0.0)
        self._proc: Any = None
        self.port = 0

    @property
    def resource(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    @property
    def max_tick_gap_s(self) -> float:
        """The longest the fake counters went without an update (the rig starved of CPU)."""
        return float(self._gap.value)

    def config_text(self, host: str = "rig", rate_hz: float = 10.0) -> str:
        """A daemon config sampling the rig: RAPL at the tree, the meter, the CPU estimate (it logs utilisation)."""
        return (
            f'[daemon]\nhost = "{host}"\nflush_interval_s = 0.2\nhealth_interval_s = 0.5\n'
            f'[sources.rapl]\nenabled = true\nroot = "{self.root}"\nrate_hz = {rate_hz}\n'
            f'[sources.visa]\nenabled = true\nresource = "{self.resource}"\nmodel = "wt310"\nbackend = "@py"\n'
            f"timeout_ms = 500\nrate_hz = {rate_hz}\nupdate_interval_s = 0.1\n"
            f"[sources.estimate]\nenabled = true\nrate_hz = 10\nonly_without_sensors = false\n"
            "[sources.nvml]\nenabled = false\n[sources.smi]\nenabled = false\n"
        )

    def start(self) -> Rig:
        ports = self._mp.Queue()
        self._proc = self._mp.Process(target=_rig_main, daemon=True, args=(
            str(self.pkg_file), str(self.dram_file), self._stop, self._gap, ports))
        self._proc.start()
        self.port = int(ports.get(timeout=60))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
