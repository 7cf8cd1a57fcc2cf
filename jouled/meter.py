"""`jouled.measure()`: energy of a block or a function, measured in-process without a daemon (notebooks, scripts).

(This module is `jouled.meter`, not `jouled.measure`: a submodule of that name would replace the function
`jouled.measure` on the package as soon as anything imported it.)

    import jouled

    with jouled.measure() as m:             # this machine's sources (NVML, RAPL, meter, estimate) at 20 Hz
        train()
    print(m.energy_j, m.energy_j_by_device, m.flags)

    @jouled.measure(sync=torch.cuda.synchronize)
    def step(): ...
    step(); print(step.last_measurement.energy_j)

The same source classes as the daemon (`jouled.sources` via its registry) are read by the daemon's own
sampling threads (`jouled.sampler.Sampler`) in the background; the window's energy comes from the same
math as `jouled energy epochs` (`jouled.energy.energy_rows`), its total from `run_totals` (a GPU is counted
once, RAPL sub-zones never added to their package, a wall meter reported beside the total as `wall_j`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from jouled.config import Config, load_config
from jouled.errors import UserError
from jouled.query import Measurement, measure_window

if TYPE_CHECKING:
    from jouled.sampler import Sampler
    from jouled.sources.base import Source

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RATE_HZ = 20.0
START_TIMEOUT_S = 10.0  # sources open in their threads; a meter's handshake may take a few seconds
DRAIN_INTERVAL_S = 0.5  # readings move from the sampler's column sink into compact typed arrays this often


class _Columns:
    """One series' samples as growing typed arrays (24 bytes a sample, not a Reading object each)."""

    __slots__ = ("e", "p", "t")

    def __init__(self) -> None:
        self.t, self.p, self.e = array("q"), array("d"), array("d")


class _Session:
    """One measurement: the sampler threads, a drainer, and the window's edges."""

    def __init__(self, sources: list[Source], rate_hz: float, sync: Callable[[], Any] | None, explicit: bool) -> None:
        from jouled.sampler import Sampler

        self.sync = sync
        self.explicit = explicit
        self.period_s = 1.0 / rate_hz
        # a source this machine lacks is in the result (`Measurement.unavailable`), not a warning at every call
        self.sampler: Sampler = Sampler([(s, self.period_s) for s in sources], absent_level=logging.DEBUG)
        self.kinds = {s.name: s.kind for s in sources}
        self.cols: dict[tuple[str, str], _Columns] = {}
        self.lock = threading.Lock()
        self.stop_drain = threading.Event()
        self.drainer = threading.Thread(target=self._drain_loop, name="jouled-measure-drain", daemon=True)
        self.measurement = Measurement()

    def _drain(self) -> None:
        batches = self.sampler.drain("")
        if not batches:
            return
        with self.lock:
            for b in batches:
                c = self.cols.get((b.key.source, b.key.device))
                if c is None:
                    c = self.cols[(b.key.source, b.key.device)] = _Columns()
                c.t.frombytes(b.time_ns.tobytes())
                c.p.frombytes(b.power_w.tobytes())
                c.e.frombytes(b.energy_j.tobytes())

    def _drain_loop(self) -> None:
        while not self.stop_drain.wait(DRAIN_INTERVAL_S):
            self._drain()

    def start(self) -> Measurement:
        from jouled.clock import CLOCK

        self.sampler.start()
        self.drainer.start()
        # the first reading of every source before the window opens: the start edge has a neighbour on each side
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(r.is_alive() and (r.health.state == "starting" or not r.health.last_sample_ns)
                  for r in self.sampler.runners):
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        m = self.measurement
        for r in self.sampler.runners:
            if not r.health.last_sample_ns:
                why = r.health.reason or r.health.last_error
                m.unavailable[r.source.name] = why or ("failed to open" if not r.is_alive() else "no reading yet")
        live = [r.source.name for r in self.sampler.runners if r.source.name not in m.unavailable]
        if not live or (self.explicit and m.unavailable):
            self.close()
            name, why = next(iter(m.unavailable.items())) if m.unavailable else ("", "no source")
            raise UserError(f"jouled.measure(): source {name!r} cannot sample: {why}" if name
                            else "jouled.measure(): no source to sample — pass sources=[...]")
        m.sources = tuple(live)
        if self.sync is not None:
            self.sync()
        m.start_ns = CLOCK.now_ns()
        self.sampler.snapshot()  # fresh energy counters at the edge
        return m

    def finish(self) -> Measurement:
        from jouled.clock import CLOCK

        if self.sync is not None:
            self.sync()
        m = self.measurement
        m.end_ns = CLOCK.now_ns()
        self.sampler.snapshot()
        # a reading past the end from every source that sampled: the end edge is interpolated, never extrapolated
        deadline = time.monotonic() + max(2.0, 5 * self.period_s)
        live = [r for r in self.sampler.runners if r.source.name in m.sources]
        while any(r.health.last_sample_ns <= m.end_ns and r.is_alive() for r in live) and time.monotonic() < deadline:
            time.sleep(0.002)
        self.close()
        measure_window(self._series(), m.start_ns, m.end_ns, into=m)
        return m

    def close(self) -> None:
        self.sampler.stop()
        self.stop_drain.set()
        if self.drainer.is_alive():
            self.drainer.join(5.0)
        self._drain()

    def _series(self) -> dict[tuple[str, str], Any]:
        from jouled.energy import SeriesArrays
        from jouled.series import period_or_nan

        # what each series is, as its source declared it (periods resolved to the sampler's): the same judgement
        # of gaps and the same totals as the daemon's log gives; undeclared series take the default for their name
        declared = {(r.source.name, dev): m for r in self.sampler.runners for dev, m in r.series_meta().items()}
        out: dict[tuple[str, str], Any] = {}
        with self.lock:
            for (src, dev), c in self.cols.items():
                meta = declared.get((src, dev))
                out[(src, dev)] = SeriesArrays(
                    np.frombuffer(c.t, dtype=np.int64).copy(), np.frombuffer(c.p, dtype=np.float64).copy(),
                    np.frombuffer(c.e, dtype=np.float64).copy(), src, dev,
                    period_or_nan(meta.power_period_s) if meta is not None else 0.0,
                    meta.estimated if meta is not None else self.kinds.get(src) == "estimated",
                    counter_period_s=period_or_nan(meta.counter_period_s) if meta is not None else float("nan"),
                    meta=meta,
                )
        return out


def _resolve_sources(config: Config, sources: Sequence[str | Source] | None) -> tuple[list[Source], bool]:
    from jouled.sources.registry import build_sources

    if sources is None:
        return build_sources(config), False
    names = [s for s in sources if isinstance(s, str)]
    built = iter(build_sources(config, names)) if names else iter(())
    return [next(built) if isinstance(s, str) else s for s in sources], True


class measure:  # lower case: used like a function, jouled.measure()
    """Measure the energy of a `with` block or of each call of a decorated function, in this process.

    `sources`: names (`"nvml"`, `"rapl"`, `"visa"`, `"estimate"`, `"smi"`) or source objects; default: the sources
    the config enables (as `jouled run` would start), skipping those this machine lacks. Sources named here must
    sample, else a UserError says why. `rate_hz`: sampling rate of every source (NVML's energy counter keeps its
    own `counter_rate_hz`). `sync`: called at both edges before the time is taken (e.g. `torch.cuda.synchronize`),
    so queued GPU work is inside the window. `config`: a TOML path, a Config, or None (as the CLI resolves it).

    As a context manager it yields the Measurement (filled when the block ends); as a decorator the function's
    return value is unchanged and its last Measurement is at `fn.last_measurement`.
    """

    def __init__(
        self,
        *,
        sources: Sequence[str | Source] | None = None,
        rate_hz: float = DEFAULT_RATE_HZ,
        sync: Callable[[], Any] | None = None,
        config: str | Path | Config | None = None,
    ) -> None:
        if not (0 < rate_hz <= 10000):
            raise UserError(f"jouled.measure(rate_hz={rate_hz}): must be > 0 and <= 10000 Hz")
        self.sources = sources
        self.rate_hz = rate_hz
        self.sync = sync
        self.config = config if isinstance(config, Config) else load_config(config)
        self._session: _Session | None = None
        self.last: Measurement | None = None

    def _new_session(self) -> _Session:
        srcs, explicit = _resolve_sources(self.config, self.sources)
        if not srcs:
            raise UserError("jouled.measure(): no source enabled — pass sources=['estimate'] or enable one in the config")
        return _Session(srcs, self.rate_hz, self.sync, explicit)

    def __enter__(self) -> Measurement:
        if self._session is not None:
            raise RuntimeError("jouled.measure(): this measurement is already running; make a new one to nest")
        self._session = self._new_session()
        return self._session.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        session, self._session = self._session, None
        if session is not None:
            self.last = session.finish()

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = self._new_session()  # one per call: the decorated function may run in several threads
            session.start()
            try:
                return fn(*args, **kwargs)
            finally:
                wrapper.last_measurement = session.finish()  # type: ignore[attr-defined]

        wrapper.last_measurement = None  # type: ignore[attr-defined]
        return cast(F, wrapper)
