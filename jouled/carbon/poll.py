"""Poll a provider into a store (anything with ``write_carbon(list[CarbonPoint])``) until told to stop."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from jouled.carbon.base import CarbonProvider, NotOffered, ProviderError
from jouled.model import CarbonPoint

log = logging.getLogger("jouled.carbon")


class CarbonStore(Protocol):
    def write_carbon(self, points: list[CarbonPoint]) -> Any: ...


def poll_to_store(
    provider: CarbonProvider,
    zone: str,
    store: CarbonStore,
    interval_s: float,
    stop_event: threading.Event,
    *,
    forecast: bool = False,
) -> int:
    """Every ``interval_s`` write the current value (once per distinct provider time; stale and index-only
    values are not stored, since they are not new measurements) and, with ``forecast``, the forecast.
    Returns the number of points written. Errors are logged and polling goes on."""
    written = 0
    last_time_ns: int | None = None
    failing = False
    while not stop_event.is_set():
        try:
            r = provider.current(zone)
            if not r.stale and r.intensity_g_per_kwh is not None and r.time_ns != last_time_ns:
                store.write_carbon([r.to_point()])
                written += 1
                last_time_ns = r.time_ns
            if forecast:
                try:
                    pts = [p.to_point() for p in provider.forecast(zone) if p.intensity_g_per_kwh is not None]
                except NotOffered:
                    forecast = False
                    log.info("carbon %s %s: no forecast offered; polling the current value only", provider.name, zone)
                else:
                    if pts:
                        store.write_carbon(pts)
                        written += len(pts)
            failing = False
        except ProviderError as e:
            if not failing:  # one line per outage, not one per poll
                log.warning("carbon poll %s %s: %s", provider.name, zone, str(e).splitlines()[0] if str(e) else e)
            failing = True
        stop_event.wait(interval_s)
    return written
