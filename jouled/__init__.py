"""jouled: measure what machine-learning work costs in energy and carbon, and search architectures when the grid is clean."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from jouled.meter import Measurement, measure

__all__ = ["Measurement", "__version__", "measure"]


def __getattr__(name: str) -> Any:
    # lazy: `import jouled` stays light (no numpy, no sources) until jouled.measure is used
    if name in ("measure", "Measurement"):
        from jouled import meter

        return getattr(meter, name)
    raise AttributeError(f"module 'jouled' has no attribute {name!r}")
