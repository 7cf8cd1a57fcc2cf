"""Grid carbon-intensity providers behind one interface (see base.py), a trace replayer, and their factory."""

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
from jouled.carbon.trace import Trace, TraceProvider, load_trace

__all__ = [
    "PROVIDERS",
    "AuthError",
    "CarbonProvider",
    "CarbonReading",
    "ConstantProvider",
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
