"""A tiny TTL cache for provider answers, so polling faster than the data changes costs no requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class TTLCache:
    """Values keyed by anything hashable, each kept for its own TTL (monotonic clock: immune to NTP steps)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._mono = monotonic
        self._items: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._mono() >= expires:
            del self._items[key]
            return None
        return value

    def put(self, key: Hashable, value: Any, ttl_s: float) -> None:
        if ttl_s > 0:
            self._items[key] = (self._mono() + ttl_s, value)

    def clear(self) -> None:
        self._items.clear()
