"""A programmable source for sampler tests (the device layer is the only fake; sampler, loop and store are real)."""

from __future__ import annotations

import threading
import time

from jouled.clock import CLOCK
from jouled.errors import SourceUnavailable
from jouled.model import Reading, SourceKind
from jouled.sources.base import SourceInfo


class ScriptedSource:
    """Draws a constant 100 W (power and a matching energy counter); can fail, be unavailable, or be slow."""

    POWER_W = 100.0

    def __init__(self, name: str = "fake", devices: int = 1, fail_reads: range | None = None,
                 unavailable: str = "", read_cost_s: float = 0.0) -> None:
        self.name = name
        self.kind: SourceKind = "measured"
        self.devices = [f"dev{i}" for i in range(devices)]
        self.fail_reads = fail_reads or range(0)
        self.unavailable = unavailable
        self.read_cost_s = read_cost_s
        self.reads = 0
        self.counter_reads = 0
        self.opens = 0
        self.closed = threading.Event()
        self.t0_ns = CLOCK.now_ns()

    def open(self) -> SourceInfo:
        self.opens += 1
        if self.unavailable:
            raise SourceUnavailable(self.unavailable)
        return SourceInfo(self.name, self.kind, True, list(self.devices), counter=True)

    def read(self) -> list[Reading]:
        i = self.reads
        self.reads += 1
        if self.read_cost_s:
            time.sleep(self.read_cost_s)
        if i in self.fail_reads:
            raise OSError(f"device {self.name} stopped answering (read {i})")
        t = CLOCK.now_ns()
        return [Reading(t, d, self.POWER_W, self.energy_at(t)) for d in self.devices]

    def energy_at(self, t_ns: int) -> float:
        return self.POWER_W * (t_ns - self.t0_ns) / 1e9

    def read_counters(self) -> list[Reading]:
        self.counter_reads += 1
        t = CLOCK.now_ns()
        return [Reading(t, d, None, self.energy_at(t)) for d in self.devices]

    def close(self) -> None:
        self.closed.set()
