"""nvidia-smi as a comparison source: a `-lms` child process whose CSV lines are read by a thread."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
import time
from datetime import datetime
from typing import IO

from jouled.clock import CLOCK
from jouled.config import SmiConfig
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.series import SeriesMeta

from .base import SourceInfo

QUERY = "timestamp,index,power.draw,utilization.gpu"
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S.%f"  # nvidia-smi prints local time, millisecond resolution
FIRST_LINE_WAIT_S = 3.0
MAX_QUEUED = 200_000  # a stalled sampler must not grow memory without bound


def smi_command(binary: str, period_ms: int) -> list[str]:
    return [binary, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", str(period_ms)]


def _number(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", "[Unknown Error]"


def parse_line(line: str, arrival_ns: int) -> Reading | None:
    """One CSV line → a Reading stamped with nvidia-smi's own timestamp (arrival time if unparsable)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 4:
        return None
    try:
        index = int(parts[1])
    except ValueError:
        return None
    try:
        # naive local time → POSIX seconds through the system's time zone, as nvidia-smi printed it
        time_ns = int(datetime.strptime(parts[0], TIMESTAMP_FORMAT).timestamp() * 1e6) * 1000
    except ValueError:
        time_ns = arrival_ns
    util = _number(parts[3])
    extras = {"util_gpu_pct": util} if util is not None else {}
    extras["smi_lag_ms"] = (arrival_ns - time_ns) / 1e6
    return Reading(time_ns, f"gpu{index}", _number(parts[2]), None, extras)


class SmiSource:
    """``read()`` returns every line that arrived since the last call: zero, one or many readings.

    That is the point of this source: it shows what a `nvidia-smi -lms` logger really delivers (the
    energy-benchmark study found far fewer samples than asked in short epochs). ``extras.smi_lag_ms``
    is the delay between nvidia-smi's timestamp and the line reaching us. A child that dies makes the
    next ``read()`` raise with its stderr; the read after that starts a new child.
    """

    name = "smi"
    kind: SourceKind = "comparison"

    def __init__(self, cfg: SmiConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else SmiConfig()
        self.period_ms = max(1, round(1000.0 / self.cfg.rate_hz))
        self._binary = ""
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._queue: collections.deque[Reading] = collections.deque(maxlen=MAX_QUEUED)
        self._first_line = threading.Event()
        self._restart = False
        self._other_lines: collections.deque[str] = collections.deque(maxlen=3)
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=5)
        self._err_thread: threading.Thread | None = None
        self.lines_dropped = 0

    def _find_binary(self) -> str:
        b = self.cfg.binary
        found = shutil.which(b)
        if found is None:
            where = "on PATH" if os.sep not in b else ""
            raise SourceUnavailable(
                f"{b} not found {where}".rstrip() + " — install the NVIDIA driver utilities or set [sources.smi] binary"
            )
        return found

    def _start(self) -> None:
        self._first_line.clear()
        self._proc = subprocess.Popen(
            smi_command(self._binary, self.period_ms),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        self._thread = threading.Thread(target=self._pump, args=(self._proc.stdout,), name="jouled-smi-reader", daemon=True)
        self._thread.start()
        # Drain stderr too, so a chatty child can never block on a full pipe.
        self._err_thread = threading.Thread(
            target=self._pump_stderr, args=(self._proc.stderr,), name="jouled-smi-stderr", daemon=True
        )
        self._err_thread.start()

    def _pump_stderr(self, stream: IO[str] | None) -> None:
        if stream is None:
            return
        try:
            for line in stream:
                if line.strip():
                    self._stderr_lines.append(line.strip())
        except (ValueError, OSError):
            pass

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                reading = parse_line(line, CLOCK.now_ns())
                if reading is None:
                    if line.strip():
                        self._other_lines.append(line.strip())  # e.g. "NVIDIA-SMI has failed because …"
                    continue
                if len(self._queue) == self._queue.maxlen:
                    self.lines_dropped += 1
                self._queue.append(reading)  # deque.append is atomic: no lock with the sampler thread
                self._first_line.set()
        except (ValueError, OSError):
            pass  # the pipe was closed under us by close()

    def open(self) -> SourceInfo:
        self._binary = self._find_binary()
        self._start()
        # Wait for the first lines so `jouled sources` can list the GPUs and a broken driver shows here.
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + max(FIRST_LINE_WAIT_S, 3 * self.period_ms / 1000.0)
        while not self._first_line.wait(0.05) and proc.poll() is None and time.monotonic() < deadline:
            pass
        if not self._first_line.is_set() and proc.poll() is not None and self._thread is not None:
            self._thread.join(timeout=1)  # lines printed just before the exit are still in the pipe
        if not self._first_line.is_set() and proc.poll() is not None:
            why = self._child_output(proc)
            self.close()
            raise SourceUnavailable(
                f"{self._binary} exited with code {proc.returncode} ({why}) — check that `nvidia-smi` "
                "works in a shell, or disable with [sources.smi] enabled = false"
            )
        time.sleep(min(0.5, 1.5 * self.period_ms / 1000.0))  # one more period so every GPU has a line
        devices = sorted({r.device for r in list(self._queue)}, key=lambda d: int(d[3:]))
        notes = [f"child: {' '.join(smi_command('nvidia-smi', self.period_ms))}"]
        if not devices:
            notes.append("no line from nvidia-smi yet")
        return SourceInfo(
            name=self.name,
            kind=self.kind,
            available=True,
            devices=devices,
            period_s=self.period_ms / 1000.0,
            notes=notes,
            counter=False,
            # the same GPUs NVML reads, seen through nvidia-smi's own -lms loop: power only, at its period; a
            # comparison series, counted in a total only where no NVML series of that GPU exists
            series={d: SeriesMeta(role="gpu", device=d, power_period_s=self.period_ms / 1000.0, comparison=True)
                    for d in devices},
        )

    def _child_output(self, proc: subprocess.Popen[str]) -> str:
        """stderr of a child that has exited, else the last stdout lines that were not CSV."""
        for t in (self._thread, self._err_thread):
            if t is not None:
                t.join(timeout=1)  # both pipes reach EOF once the child is gone
        text = " ".join(self._stderr_lines) or " ".join(self._other_lines) or "no output"
        return " ".join(text.split())[:300]

    def read(self) -> list[Reading]:
        if self._restart:
            self._restart = False
            self.close()
            self._stderr_lines.clear()
            self._other_lines.clear()
            self._start()
        out: list[Reading] = []
        q = self._queue
        while q:
            out.append(q.popleft())
        proc = self._proc
        if proc is not None and proc.poll() is not None and not out:
            if self._thread is not None:
                self._thread.join(timeout=1)
            while q:  # lines that arrived between the drain and the exit
                out.append(q.popleft())
            if out:
                return out
            why = self._child_output(proc)
            self._restart = True
            raise RuntimeError(f"smi: {self._binary} exited with code {proc.returncode} ({why}) — restarting it on the next read")
        return out

    def read_counters(self) -> list[Reading]:
        return []  # nvidia-smi's power.draw has no energy counter

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=2)
        for t in (self._thread, self._err_thread):
            if t is not None:
                t.join(timeout=2)  # EOF follows the child's exit
        self._thread = self._err_thread = None
        if proc is not None:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
