"""Grid carbon intensity in the core: providers behind one interface (base.py), a trace replayer, their factory,
the poller that stores readings, and the one intensity step-series type (series.py).

Names are loaded on first use (PEP 562), so `import jouled.carbon.series` (the energy math) does not load the
HTTP providers and httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jouled.carbon.base import (
        AuthError,
        CarbonProvider,
        CarbonReading,
        ManualClock,
        NotOffered,
        ProviderError,
        VirtualClock,
        WallClock,
        to_points,
    )
    from jouled.carbon.factory import PROVIDERS, make_provider
    from jouled.carbon.poll import poll_to_store
    from jouled.carbon.resilient import ConstantProvider, Resilient
    from jouled.carbon.series import IntensitySeries
    from jouled.carbon.trace import Trace, TraceProvider, load_trace

_WHERE = {
    **dict.fromkeys(
        ("AuthError", "CarbonProvider", "CarbonReading", "ManualClock", "NotOffered", "ProviderError", "VirtualClock",
         "WallClock", "to_points"),
        "base",
    ),
    "PROVIDERS": "factory",
    "make_provider": "factory",
    "poll_to_store": "poll",
    "ConstantProvider": "resilient",
    "Resilient": "resilient",
    "IntensitySeries": "series",
    "Trace": "trace",
    "TraceProvider": "trace",
    "load_trace": "trace",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jouled.carbon' has no attribute {name!r}")
    return getattr(importlib.import_module(f"jouled.carbon.{module}"), name)


__all__ = [
    "PROVIDERS",
    "AuthError",
    "CarbonProvider",
    "CarbonReading",
    "ConstantProvider",
    "IntensitySeries",
    "ManualClock",
    "NotOffered",
    "ProviderError",
    "Resilient",
    "Trace",
    "TraceProvider",
    "VirtualClock",
    "WallClock",
    "load_trace",
    "make_provider",
    "poll_to_store",
    "to_points",
]
