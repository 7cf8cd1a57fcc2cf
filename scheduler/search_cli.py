"""`jouled nas search`: the live carbon-aware search with the daemon measuring every evaluation (register on nas_app)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jouled.cli_common import ConfigOpt, StoreOpt, context
from jouled.errors import UserError
from jouled.tables import Column, WideOpt, make_console, print_table


def _print_summary(doc: dict[str, Any], console: Console, wide: bool = False) -> None:
    console.print(
        f"[bold]{doc['search']}[/]: policy {doc['policy']}, slots {','.join(doc['slots'])}, "
        f"{doc['hours']:.2f} h of provider time in {doc['wall_s']:.1f} s wall"
    )
    console.print(
        f"decisions {len(doc['decisions'])}, samples {doc['samples']}, evaluations {doc['evaluations']} "
        f"(+{doc['evaluations_partial']} partial, {doc['resumes']} moved at an epoch boundary), "
        f"measured energy {doc['energy_j_measured']:.1f} J, carbon {doc['carbon_g']:.3f} g"
    )
    samp = doc.get("sampling")
    if samp is not None:
        console.print(
            f"sampling workers {samp['energy_j']:.1f} J, {samp['carbon_g']:.3f} g ({samp['measured_runs']}/{samp['runs']} "
            f"runs measured); search total {doc['energy_j_total']:.1f} J, {doc['carbon_g_total']:.3f} g"
        )
    cols = (
        Column("arch", 0, fit="fold", fold_min=24), Column("acc %", 0, "right"), Column("energy J", 0, "right"),
        Column("flags", 1, fit="wrap"), Column("table mJ", 3, "right"), Column("NB201 acc %", 2, "right"),
    )
    cells = [
        [r["arch"], f"{r['accuracy_pct']:.1f}", f"{r['energy_j']:.1f}", " ".join(r["energy_flags"]),
         f"{r['table_energy_mj']:.2f}", f"{r['table_test_acc_pct']:.1f}"]
        for r in doc["front"]
    ]
    print_table("Pareto front (accuracy vs MEASURED energy)", cols, cells, wide=wide, console=console)
    for e in doc["errors"]:
        console.print(f"[yellow]error:[/] {e}")


_PROVIDER_HELP = "electricitymaps | watttime | ukci | carbonaware | trace | constant (default [carbon] provider)"


_METHOD_HELP = ("cenas (truth-fed, clean hours: the simulator's cenas) | cenas-seed (the seed's λs split) | clean[:P[:LATE]] | "
                "static:F | threshold[:P] | forecast[:D] | random")
_GPUS_HELP = "how many worker slots: the first N GPUs (default: every GPU found, else 2 CPU slots)"
_DEVICES_HELP = "the worker slots themselves instead of --gpus: GPU ids 0,1,… or cpu:N / cpu0,cpu1 (default: from --gpus)"


def search_command(
    provider: Annotated[str, typer.Option("--provider", metavar="NAME", help=_PROVIDER_HELP)] = "",
    zone: Annotated[str, typer.Option("--zone", metavar="ZONE", help="grid zone, e.g. DE (default [carbon] zone)")] = "",
    gpus: Annotated[str | None, typer.Option("--gpus", metavar="N", help=_GPUS_HELP, show_default=False)] = None,
    devices: Annotated[str | None, typer.Option("--devices", metavar="SLOTS", help=_DEVICES_HELP)] = None,
    hours: Annotated[float, typer.Option("--hours", metavar="HOURS", help="search length in hours of provider time")] = 24.0,
    method: Annotated[str, typer.Option("--method", metavar="METHOD", help=_METHOD_HELP)] = "cenas",
    policy: Annotated[str | None, typer.Option("--policy", hidden=True, help="deprecated: --method")] = None,
    executor: Annotated[str, typer.Option("--executor", metavar="NAME", help="local | ray")] = "local",
    trace: Annotated[Path | None, typer.Option("--trace", metavar="FILE",
            help="trace CSV for --provider trace (default: [carbon] trace_file)")] = None,
    speedup: Annotated[
        float, typer.Option("--speedup", metavar="FACTOR", help="trace replay speed (virtual seconds per second)")
    ] = 1.0,
    start: Annotated[
        str, typer.Option("--start", metavar="TIME", help="trace replay start: RFC 3339 time or hours into the trace")
    ] = "24",
    epochs: Annotated[int, typer.Option("--epochs", metavar="N", help="training epochs of each evaluation")] = 2,
    max_batches: Annotated[int, typer.Option("--max-batches", metavar="N", help="batches per epoch (0: all)")] = 0,
    dataset: Annotated[str, typer.Option("--dataset", metavar="NAME", help="digits | synthetic | cifar10 | auto")] = "digits",
    channels: Annotated[int, typer.Option("--channels", metavar="N", help="NB201 C")] = 16,
    cells: Annotated[int, typer.Option("--cells", metavar="N", help="NB201 N (cells per stage)")] = 5,
    max_evaluations: Annotated[
        int, typer.Option("--max-evaluations", metavar="N", help="stop after this many (0: no limit)")
    ] = 0,
    period: Annotated[
        float, typer.Option("--period", metavar="SECONDS", help="decision period, provider seconds (0: [nas] decision_period_s)")
    ] = 0.0,
    no_daemon: Annotated[bool, typer.Option(
        "--no-daemon", help="start no daemon: markers go to the broker in [mqtt] url, where a daemon elsewhere records them"
    )] = False,
    data: Annotated[
        Path | None, typer.Option("--data", metavar="DIR", help="folder of the NAS-Bench-201 tables (default $JOULED_NAS_DATA)")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", metavar="DIR", help="checkpoints and supernet weights (default: a new temp dir)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")] = "table",
    seed: Annotated[int, typer.Option("--seed", metavar="N")] = 0,
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    from jouled.extras import require

    require("jouled nas search", "scheduler", "sklearn", "scipy", "threadpoolctl")
    require("jouled nas search (its workers train)", "trainer", "torch")
    if executor == "ray":
        require("--executor ray", "scheduler", "ray")
    from jouled.carbon.base import VirtualClock, WallClock
    from jouled.carbon.factory import PROVIDERS, make_provider
    from jouled.carbon.trace import TraceProvider, load_trace
    from jouled.scheduler.executors import make_executor
    from jouled.scheduler.live import LiveConfig, LiveSearch
    from jouled.scheduler.space import load_benchmark
    from jouled.scheduler.workers import WorkerSettings
    from jouled.store.sqlite import SqliteStore, parse_store_url

    ctx = context(config, store)
    cfg = ctx.config
    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r}: unknown — use table or json")
    if not (math.isfinite(hours) and hours > 0):
        raise UserError(f"--hours {hours}: must be a positive number — e.g. --hours 24")
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: need at least 1")
    if not (math.isfinite(speedup) and speedup > 0):
        raise UserError(f"--speedup {speedup}: must be > 0 — e.g. --speedup 3600 (an hour per second)")
    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: unknown — use local or ray")
    if policy is not None:
        typer.echo("warning: --policy is deprecated — use --method (same values)", err=True)
        method = policy
    slots = worker_slots(gpus, devices, _gpus_found)
    pol = live_policy(method, seed, cfg.nas.window_h)
    name = (provider or cfg.carbon.provider).strip().lower()
    if name and name not in PROVIDERS:
        raise UserError(f"--provider {provider!r}: unknown — use one of {', '.join(PROVIDERS)}")
    if zone:
        cfg.carbon.zone = zone
    clock: Any
    if name == "trace":
        path = trace or (Path(cfg.carbon.trace_file) if cfg.carbon.trace_file else None)
        if path is None:
            raise UserError("--provider trace needs --trace FILE (or [carbon] trace_file)")
        tr = load_trace(path)
        start_s = _trace_start(start, tr.start_s, tr.end_s)
        clock = VirtualClock(start_s, speedup)
        prov: Any = TraceProvider(tr, clock, zone="")
        if zone:
            prov._check_zone(zone)  # a zone the trace is not for is the user's mistake: say so now
    else:
        if not name:
            raise UserError("no carbon provider — pass --provider (e.g. trace with --trace FILE) or set [carbon] provider")
        cfg.carbon.provider = name
        clock = WallClock()
        prov = make_provider(cfg.carbon, resilient=True, fallback_g_per_kwh=cfg.carbon.constant_g_per_kwh or None)
    bench = load_benchmark(data)
    work = work_dir or Path(tempfile.mkdtemp(prefix="jouled-search-"))
    store_path = parse_store_url(ctx.store_url)
    err = Console(stderr=True)

    link = None
    if no_daemon:
        broker = cfg.mqtt.url
        if not broker:
            raise UserError("--no-daemon: no running daemon's broker configured — set [mqtt] url or drop --no-daemon")
    else:
        from jouled.daemonproc import attach_or_start

        # the daemon that logs to this store already, else `jouled run` as a child process (never in-process: the
        # scheduler does not import the daemon); it delivers what the workers spool while its broker is away
        link = attach_or_start(cfg, ctx.store_url, store_path, work / "daemon", config_file=config,
                               spool_dir=work / "spool")
        broker = link.broker_url  # may hold the embedded broker's credentials: in memory only, redacted when shown
        err.print(link.shown)
    settings = WorkerSettings(dataset=dataset, channels=channels, cells_per_stage=cells,
                              max_batches=max_batches or None, seed=seed, broker_url=broker, host=cfg.daemon.host,
                              spool_dir=str(work / "spool"))
    live_cfg = LiveConfig(hours=hours, zone=zone or cfg.carbon.zone, epochs=epochs, settings=settings, work_dir=work,
                          decision_period_s=period or cfg.nas.decision_period_s,
                          max_evaluations=max_evaluations or None, seed=seed)
    ex = None
    try:
        ex = make_executor(executor, slots)
        if name == "trace":  # restart the virtual clock now the workers are up: their start-up is no trace time
            clock = VirtualClock(start_s, speedup)
            prov.clock = clock
        search = LiveSearch(live_cfg, prov, clock, pol, ex, bench, store=SqliteStore(store_path), config=cfg)
        doc = search.run()
    finally:
        if ex is not None:
            ex.shutdown()
        if link is not None:
            link.close()
    doc["store"] = ctx.store_url
    doc["work_dir"] = str(work)
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        _print_summary(doc, make_console(), wide)


def live_policy(method: str, seed: int, window_h: float) -> Any:
    """`--method` of `nas search`: `cenas` is the simulator's cenas (the clean-hour policy over the truth-fed
    search, sampling first); `cenas-seed` the seed's λs split; any other name a policy spec (make_policy)."""
    from jouled.scheduler.policies import clean_spec, make_policy

    m = method.strip().lower()
    spec = {"cenas": clean_spec(), "cenas-seed": "cenas"}.get(m, m)
    try:
        return make_policy(spec, seed, window_s=window_h * 3600.0)
    except UserError:
        raise UserError(f"--method {method!r}: unknown or malformed — use one of: {_METHOD_HELP}") from None


def _gpus_found() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def worker_slots(gpus: str | None, devices: str | None, gpus_found: Callable[[], int]) -> list[str]:
    """Worker slots from `--gpus N` (a count: the first N GPUs, or N CPU slots where there is no GPU) or
    `--devices 0,1 | cpu:2` (the slots themselves); neither: every GPU found, else 2 CPU slots."""
    from jouled.scheduler.executors import parse_slots

    if gpus is not None and devices is not None:
        raise UserError(f"--gpus {gpus} and --devices {devices}: pass one — a count, or the slots themselves")
    if devices is not None:
        return parse_slots(devices, option="--devices")
    if gpus is not None:
        text = gpus.strip()
        if not text.isdigit():
            raise UserError(
                f"--gpus {gpus!r}: --gpus is a count of worker slots — list the slots with --devices {gpus} "
                "(e.g. --devices 0,1 or --devices cpu:2)"
            )
        n = int(text)
        if n < 1:
            raise UserError(f"--gpus {n}: need at least 1 worker slot — e.g. --gpus 2")
    found = gpus_found()
    if gpus is None:
        return [str(i) for i in range(found)] if found else ["cpu0", "cpu1"]
    if found == 0:
        return [f"cpu{i}" for i in range(n)]  # no GPU here: N CPU worker slots
    if n > found:
        raise UserError(f"--gpus {n}: only {found} GPU(s) found — pass --gpus {found} or fewer, or --devices cpu:{n}")
    return [str(i) for i in range(n)]


def _trace_start(text: str, first_s: float, last_s: float) -> float:
    """`--start`: hours into the trace (a day by default, so the trailing window has history) or RFC 3339."""
    from jouled.carbon.base import parse_iso_ns

    try:
        t = first_s + float(text) * 3600.0
    except ValueError:
        try:
            t = parse_iso_ns(text) / 1e9
        except ValueError:
            raise UserError(f"--start {text!r}: not hours or an RFC 3339 time — e.g. --start 24") from None
    if not (first_s <= t < last_s):
        raise UserError(f"--start {text!r}: outside the trace — pick a time within it")
    return t
