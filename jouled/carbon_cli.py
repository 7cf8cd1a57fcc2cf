"""`jouled carbon now|history|forecast`: grid carbon intensity from a configured provider, as a table or JSON."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from jouled.carbon.base import CarbonProvider, CarbonReading, ManualClock, NotOffered, ProviderError
from jouled.carbon.factory import PROVIDERS, make_provider
from jouled.carbon.trace import TraceProvider
from jouled.cli_common import ConfigOpt, StoreOpt, context, make_app
from jouled.errors import UserError
from jouled.tables import Column, WideOpt, print_table

carbon_app = make_app(help="Grid carbon intensity: now, history, forecast.")

ProviderOpt = Annotated[
    str | None, typer.Option("--provider", metavar="NAME", help=f"{' | '.join(PROVIDERS)} (default: [carbon] provider)")
]
ZoneOpt = Annotated[
    str | None,
    typer.Option("--zone", metavar="ZONE", help="zone/region, e.g. DE, GB, GB-13, CAISO_NORTH (default: [carbon] zone)"),
]
FormatOpt = Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", metavar="URL",
            help="provider base URL override (self-hosted SDK, a mirror; default: the provider's own)")
]
TraceOpt = Annotated[
    Path | None, typer.Option("--trace", metavar="FILE",
            help="replay this CSV trace (implies --provider trace; default: [carbon] trace_file)")
]
AtOpt = Annotated[
    str | None, typer.Option("--at", metavar="TIME", help="trace replay: the clock time, RFC 3339 (default: trace start)")
]
ColumnOpt = Annotated[
    str, typer.Option("--column", metavar="COLUMN", help="trace column: direct | lca (Electricity Maps exports)")
]


def _open(
    config: Path | None,
    store: str | None,
    provider: str | None,
    zone: str | None,
    url: str | None,
    trace: Path | None,
    column: str,
    fmt: str,
    at: str | None = None,
) -> tuple[CarbonProvider, str]:
    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r}: unknown — use table or json")
    cfg = context(config, store).config.carbon.copy()
    if trace is not None:
        cfg.provider, cfg.trace_file = "trace", str(trace)
    if provider:
        cfg.provider = provider
    if url:
        cfg.url = url
    z = zone if zone is not None else cfg.zone
    p = make_provider(cfg, column=column)
    if at is not None:
        if not isinstance(p, TraceProvider):
            raise UserError(f"--at {at}: only a trace replay has a clock to set — drop --at or pass --trace FILE")
        t = _parse_time("--at", at)
        assert t is not None
        p.clock = ManualClock(t.timestamp())
    if not z and p.name not in ("trace", "constant"):
        raise UserError(f"carbon {p.name}: no zone — pass --zone (e.g. DE, GB, CAISO_NORTH) or set [carbon] zone")
    return p, z


def reading_dict(r: CarbonReading) -> dict[str, Any]:
    """The JSON form of a reading (also what the table shows)."""
    return {
        "time": r.time.isoformat().replace("+00:00", "Z"),
        "time_ns": r.time_ns,
        "zone": r.zone,
        "provider": r.provider,
        "intensity_g_per_kwh": r.intensity_g_per_kwh,
        "percentile": r.percentile,
        "forecast": r.forecast,
        "estimated": r.estimated,
        "stale": r.stale,
        "age_s": None if not math.isfinite(r.age_s) else round(r.age_s, 3),
        "duration_s": r.duration_s,
        "note": r.note,
    }


CARBON_COLUMNS = (
    Column("time (UTC)"), Column("zone", 2), Column("provider", 3), Column("gCO2eq/kWh", 0, "right"),
    Column("age", 1, "right"), Column("flags", 1, fit="wrap"), Column("note", 4, fit="wrap"),
)


def _emit(readings: list[CarbonReading], fmt: str, title: str, wide: bool = False) -> None:
    if fmt == "json":
        typer.echo(json.dumps([reading_dict(r) for r in readings], indent=2))
        return
    cells = []
    for r in readings:
        value = f"{r.intensity_g_per_kwh:.1f}" if r.intensity_g_per_kwh is not None else f"index {r.percentile:g}/100"
        flags = ",".join(f for f, on in (("forecast", r.forecast), ("estimated", r.estimated), ("stale", r.stale)) if on)
        cells.append([f"{r.time:%Y-%m-%d %H:%M}", r.zone, r.provider, value, "" if r.forecast else f"{r.age_s:.0f} s",
                      flags, r.note])
    print_table(title, CARBON_COLUMNS, cells, wide=wide)


def _call(p: CarbonProvider, what: str, fn: Any) -> list[CarbonReading]:
    try:
        out = fn()
    except NotOffered as e:
        raise UserError(f"carbon {p.name}: {what} not offered ({e}) — use another provider or plan") from None
    except ProviderError as e:
        raise UserError(f"carbon {p.name}: {e} — check the network, --url and credentials, then retry") from None
    return out if isinstance(out, list) else [out]


@carbon_app.command("now")
def now_cmd(
    provider: ProviderOpt = None,
    zone: ZoneOpt = None,
    url: UrlOpt = None,
    trace: TraceOpt = None,
    column: ColumnOpt = "direct",
    at: AtOpt = None,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The current intensity, with its age."""
    p, z = _open(config, store, provider, zone, url, trace, column, fmt, at)
    _emit(_call(p, "current value", lambda: p.current(z)), fmt, f"carbon intensity now ({p.name})", wide)


def _parse_time(opt: str, v: str | None) -> datetime | None:
    if v is None:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{opt} {v!r}: not a time — write RFC 3339, e.g. 2024-01-20T12:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@carbon_app.command("history")
def history_cmd(
    provider: ProviderOpt = None,
    zone: ZoneOpt = None,
    url: UrlOpt = None,
    trace: TraceOpt = None,
    column: ColumnOpt = "direct",
    at: AtOpt = None,
    start: Annotated[str | None, typer.Option("--start", metavar="TIME", help="RFC 3339 (default: end − 24 h)")] = None,
    end: Annotated[str | None, typer.Option("--end", metavar="TIME", help="RFC 3339 (default: now)")] = None,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Past values (by default the last 24 h)."""
    p, z = _open(config, store, provider, zone, url, trace, column, fmt, at)
    s, e = _parse_time("--start", start), _parse_time("--end", end)
    if s and e and s >= e:
        raise UserError(f"--start {start} is not before --end {end} — swap them")
    if s and not e and p.name not in ("trace",):
        e = datetime.now(UTC)
    if e and not s:
        s = e - timedelta(days=1)
    readings = _call(p, "history", lambda: p.history(z, s, e))
    if not readings:  # an empty table with exit 0 reads as "it worked"; say what was asked and found nothing
        def _t(t: datetime | None, default: str) -> str:
            return t.isoformat().replace("+00:00", "Z") if t else default

        fix = (
            "a trace replay's clock starts at its first point: pass --at after the window, or pick --start/--end in it"
            if isinstance(p, TraceProvider)
            else "pick --start/--end inside the provider's history for this zone"
        )
        if fmt == "json":
            typer.echo("[]")
        typer.echo(
            f"carbon {p.name}: no intensity for zone {z or '(any)'} between {_t(s, 'the start')} and "
            f"{_t(e, 'now')} — {fix}",
            err=True,
        )
        raise typer.Exit(1)
    _emit(readings, fmt, f"carbon intensity history ({p.name})", wide)


@carbon_app.command("forecast")
def forecast_cmd(
    provider: ProviderOpt = None,
    zone: ZoneOpt = None,
    url: UrlOpt = None,
    trace: TraceOpt = None,
    column: ColumnOpt = "direct",
    at: AtOpt = None,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The provider's forecast (a trace gives perfect foresight, flagged in the note)."""
    p, z = _open(config, store, provider, zone, url, trace, column, fmt, at)
    _emit(_call(p, "forecast", lambda: p.forecast(z)), fmt, f"carbon intensity forecast ({p.name})", wide)
