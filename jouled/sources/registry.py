"""Source names → classes; building the configured sources and probing them for `jouled sources`."""

from __future__ import annotations

from typing import Any

from jouled.config import Config
from jouled.errors import SourceUnavailable, UserError

from .base import Source, SourceInfo
from .estimate import EstimateSource
from .nvml import NvmlSource
from .rapl import RaplSource
from .smi import SmiSource
from .visa import VisaSource

SOURCES: dict[str, type] = {
    "nvml": NvmlSource,
    "rapl": RaplSource,
    "visa": VisaSource,
    "smi": SmiSource,
    "estimate": EstimateSource,
}


def _section(config: Config, name: str) -> Any:
    return getattr(config.sources, name)


def make_source(config: Config, name: str) -> Source:
    """One source from its config section (the estimate also needs to know where RAPL lives)."""
    cls = SOURCES.get(name)
    if cls is None:
        raise UserError(f"unknown source '{name}' — choose from {', '.join(SOURCES)}")
    if cls is EstimateSource:
        return EstimateSource(config.sources.estimate, rapl_root=config.sources.rapl.root)
    src: Source = cls(_section(config, name))
    return src


def build_sources(config: Config, names: list[str] | None = None) -> list[Source]:
    """The sources to run: ``names`` when given (even ones disabled in the config: the command line
    wins), else every source with ``enabled = true``, in SOURCES order. Unknown names → UserError."""
    if names:
        unknown = [n for n in names if n not in SOURCES]
        if unknown:
            raise UserError(f"unknown source '{unknown[0]}' — choose from {', '.join(SOURCES)}")
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [n for n in SOURCES if _section(config, n).enabled]
    return [make_source(config, n) for n in chosen]


def probe(source: Source, period_s: float = 0.1) -> SourceInfo:
    """Open and close one source; whatever goes wrong becomes an unavailable SourceInfo with the reason."""
    try:
        return source.open()
    except SourceUnavailable as e:
        return SourceInfo(name=source.name, kind=source.kind, available=False, reason=str(e), period_s=period_s)
    except Exception as e:  # a bug or an unexpected driver error must not hide the other sources
        return SourceInfo(
            name=source.name,
            kind=source.kind,
            available=False,
            reason=f"{type(e).__name__}: {e} — please report this with the output of `jouled sources --format json`",
            period_s=period_s,
        )
    finally:
        try:
            source.close()
        except Exception:  # closing a half-open source must not fail the probe
            pass


def probe_all(config: Config, names: list[str] | None = None) -> list[SourceInfo]:
    """Every source (or ``names``) with its availability; disabled ones are listed as such, not opened."""
    chosen = names or list(SOURCES)
    out: list[SourceInfo] = []
    for name in chosen:
        src = make_source(config, name)
        section = _section(config, name)
        if not names and not section.enabled:
            out.append(
                SourceInfo(
                    name=name,
                    kind=src.kind,
                    available=False,
                    reason=f"disabled in the config — set [sources.{name}] enabled = true to use it",
                    period_s=1.0 / section.rate_hz,
                )
            )
            continue
        out.append(probe(src, 1.0 / section.rate_hz))
    return out
