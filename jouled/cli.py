"""The `jouled` command line (typer + rich): daemon, sources, status; the component apps mounted here, lazily."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
import typer.main
from typer.core import TyperCommand

from jouled import __version__
from jouled.cli_common import (
    ConfigOpt,
    FormatOpt,
    JouledGroup,
    StoreOpt,
    UnusedStoreOpt,
    WideOpt,
    context,
    ignore_store,
    make_app,
    print_user_error,
)
from jouled.errors import UserError

if TYPE_CHECKING:
    from jouled.tables import Column

# The commands mounted lazily: name → ("module:attribute", one-line help). The module is imported only when the
# command runs (or its own help is asked for), so `jouled --help`, `--version`, `status` and `sources` do not load
# httpx, the carbon stack, the scheduler, the trainer or numpy. The help here is what `jouled --help` lists;
# tests/cli/test_lazy_cli.py checks it against each command's own. Order: as `jouled --help` lists them.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("jouled.trainer.train_cli:train_command",
              "Train one model with run/epoch/phase markers, so the daemon can report energy per epoch."),
    "demo": ("jouled.demo:demo_command",
             "Start the daemon with an embedded broker, train a small NB201 cell with markers, print energy per epoch."),
    "import": ("jouled.import_cli:import_app", "Bring existing logs in (CSV or InfluxDB line protocol)."),
    "energy": ("jouled.energy_cli:energy_app", "Energy and carbon per epoch, phase and run, from the markers in the store."),
    "export": ("jouled.export_cli:export_app", "Take data out of the log: raw samples as CSV, line protocol or parquet."),
    "markers": ("jouled.trainer.markers_cli:markers_app", "Epoch/phase markers over MQTT."),
    "carbon": ("jouled.carbon_cli:carbon_app", "Grid carbon intensity: now, history, forecast."),
    "nas": ("jouled.cli:_nas_app", "Carbon-aware neural architecture search (CE-NAS) on NAS-Bench-201."),
    "service": ("jouled.service_cli:service_app", "Install or remove jouled as a systemd service."),
    "grafana": ("jouled.grafana_cli:grafana_app", "Upload jouled's Grafana dashboards (InfluxQL, Flux, PromQL)."),
    "calibrate": ("jouled.calibrate_cli:calibrate_command",
                  "Measure idle and stress loads with their own markers, fit P_idle, P_busy and the uncaptured power, "
                  "store them."),
    "assess": ("jouled.quality_cli:assess_command",
               "The measurement checklist of the energy-benchmark study, each finding with the numbers behind its verdict."),
    "compare": ("jouled.quality_cli:compare_command",
                "Per-epoch energy of every tool that measured the run, and each one's error against the best truth."),
    "report": ("jouled.quality_cli:report_command",
               "One self-contained HTML page: power, energy per epoch, tool errors, GPU range, carbon, the assess findings."),
}
COMMAND_ORDER = ("train", "demo", "run", "sources", "status", "import", "energy", "calibrate", "assess", "compare", "report",
                 "export", "markers", "carbon", "nas", "service", "grafana")


def _nas_app() -> typer.Typer:
    """`nas`: the scheduler's app, with `nas search` (the live search) added on first use."""
    from jouled.scheduler.nas_cli import nas_app
    from jouled.scheduler.search_cli import search_command

    if not any(c.name == "search" for c in nas_app.registered_commands):
        nas_app.command("search")(search_command)
    return nas_app


def load_command(target: str, name: str) -> typer.core.TyperGroup | typer.core.TyperCommand:
    """Import ``module:attribute`` and make it a click command: a typer app becomes its group, a function its command."""
    module_name, attr = target.split(":")
    obj = getattr(importlib.import_module(module_name), attr)
    if callable(obj) and not isinstance(obj, typer.Typer) and obj.__name__.startswith("_"):
        obj = obj()  # a loader (e.g. _nas_app)
    if isinstance(obj, typer.Typer):
        # get_group, not get_command: a mounted app must not grow its own --install-completion options
        return typer.main.get_group(obj)
    single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    single.command(name)(obj)
    cmd = typer.main.get_command(single)
    assert isinstance(cmd, TyperCommand)
    return cmd


class LazyCommands(MutableMapping[str, Any]):
    """A group's commands by name, in order; those in ``lazy`` are imported when first looked up.

    ``peek`` gives a placeholder carrying the one-line help instead, for listing without importing.
    """

    def __init__(self, loaded: Mapping[str, Any], lazy: Mapping[str, tuple[str, str]], order: Sequence[str]) -> None:
        self._loaded = dict(loaded)
        self._lazy = dict(lazy)
        names = [n for n in order if n in loaded or n in lazy]
        self._names = names + [n for n in (*loaded, *lazy) if n not in names]

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in self._lazy:
                raise KeyError(name)
            self._loaded[name] = load_command(self._lazy[name][0], name)
        return self._loaded[name]

    def peek(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        return TyperCommand(name=name, help=self._lazy[name][1]) if name in self._lazy else None

    def __setitem__(self, name: str, cmd: Any) -> None:
        self._loaded[name] = cmd
        if name not in self._names:
            self._names.append(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class LazyGroup(JouledGroup):
    """A command group whose sub-commands in ``lazy`` are imported on first use.

    Listing them (``--help``, shell completion, "did you mean") imports nothing: each lists with the one-line help
    of the table; resolving one to run it (or to show its own help) imports its module and converts its typer app.
    """

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}
    order: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands, self.lazy, self.order)
        self._listing = 0

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: TyperGroup's reads every value, which would import them all

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if self._listing and isinstance(self.commands, LazyCommands):
            return self.commands.peek(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        self._listing += 1  # the list shows one line per command: the table has it
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing -= 1

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        self._listing += 1  # completing a command name needs its name and help only
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing -= 1


class RootGroup(LazyGroup):
    lazy = LAZY_COMMANDS
    order = COMMAND_ORDER


app = make_app(
    name="jouled",
    help="Measure the energy and carbon of ML work, and search architectures when the grid is clean.",
    cls=RootGroup,
)


def _check_format(fmt: str, allowed: tuple[str, ...] = ("table", "json")) -> None:
    if fmt not in allowed:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(allowed)}")


@app.command()
def run(
    duration: Annotated[
        float | None, typer.Option("--duration", metavar="SECONDS", help="stop after this long (default: run until stopped)")
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", metavar="HZ", help="sampling rate for every source (default: each source's rate_hz)")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", metavar="NAME", help="only these sources (repeat; default: every enabled one)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Run the daemon in the foreground (the systemd service runs exactly this)."""
    from jouled.runcmd import run_daemon_command

    run_daemon_command(duration=duration, rate=rate, source=source, verbose=verbose, config=config, store=store)


@app.command()
def sources(
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: UnusedStoreOpt = None,
) -> None:
    """Each source: name, devices, available, reason when not, period."""
    from rich.markup import escape
    from rich.text import Text

    from jouled.sources.registry import probe_all
    from jouled.tables import Column, make_console, print_table

    _check_format(fmt)
    ignore_store(store, "jouled sources")
    ctx = context(config, None)
    infos = probe_all(ctx.config)
    rows: list[dict[str, Any]] = [
        {
            "name": i.name, "kind": i.kind, "available": i.available, "devices": i.devices, "reason": i.reason,
            "period_s": i.period_s, "counter": i.counter, "notes": i.notes,
            "enabled": bool(getattr(getattr(ctx.config.sources, i.name, None), "enabled", True)),
        }
        for i in infos
    ]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    con = make_console()
    cols = (Column("source"), Column("kind", 3), Column("available"), Column("devices", 1, fit="wrap"),
            Column("period", 2, "right"), Column("counter", 4))
    cells = [
        [
            r["name"], r["kind"],
            Text.from_markup("[green]yes[/]" if r["available"] else ("[dim]off[/]" if not r["enabled"] else "[red]no[/]")),
            " ".join(r["devices"]), f"{r['period_s'] * 1000:.0f} ms", "yes" if r["counter"] else "",
        ]
        for r in rows
    ]
    print_table("jouled sources", cols, cells, wide=wide, console=con)
    # reasons and notes are sentences with a fix in them: print them whole, not squeezed into a cell
    for r in rows:
        for line in ([r["reason"]] if r["reason"] else []) + r["notes"]:
            con.print(f"[bold]{r['name']}[/]: {escape(line)}", highlight=False)


def _read_status(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"status file {path}: not found — is the daemon running? start it with `jouled run`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"status file {path}: unreadable ({e}) — restart the daemon") from None
    data["running"] = _pid_alive(int(data.get("pid", 0)))
    return data


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _status_columns() -> tuple[Column, ...]:
    from jouled.tables import Column

    return (
        Column("source"), Column("state"), Column("devices", 0, fit="wrap"), Column("Hz (target)", 1, "right"),
        Column("delivered", 3, "right"), Column("jitter p50/p99 ms", 4, "right"), Column("errors", 1, "right"),
        Column("age", 2, "right"),
    )


def _print_status_table(st: dict[str, Any], wide: bool = False) -> None:
    from rich.markup import escape

    from jouled.secrets import redact_url
    from jouled.tables import make_console, print_table

    console = make_console()
    off = []
    cells = []
    for s in st.get("sources", []):
        if s["state"] == "unavailable":
            off.append(s)
            continue
        cells.append([
            s["name"], s["state"], " ".join(s.get("devices", [])),
            f"{s['achieved_rate_hz']:.1f} ({s['target_rate_hz']:.0f})",
            f"{100 * s['delivered_ratio']:.1f} %",
            f"{s['jitter_p50_ms']:.2f} / {s['jitter_p99_ms']:.2f}",
            str(s["errors"]), _fmt(s.get("last_sample_age_s"), ".2f") + " s",
        ])
    title = f"jouled on {st.get('host', '?')} — uptime {st.get('uptime_s', 0):.0f} s"
    print_table(title, _status_columns(), cells, wide=wide, console=console)
    # an error message is a sentence: whole, under the table, not squeezed into a cell
    running = bool(st.get("running"))  # a stopped daemon's last status: nothing tries again
    for s in st.get("sources", []):
        if s.get("last_error") and s["state"] == "retrying":
            console.print(f"[yellow]{s['name']} retrying:[/] {escape(s['last_error'])}{_next_try(s, running)}",
                          highlight=False)
    for s in off:
        console.print(f"[dim]{s['name']} unavailable: {escape(s['reason'])}{_next_try(s, running)}[/]", highlight=False)
    sto = st.get("store", {})
    console.print(
        f"store {sto.get('path')}: {sto.get('written', 0)} samples written, {sto.get('pending', 0)} pending, "
        f"{sto.get('write_errors', 0)} write errors"
        + (f" (last: {sto['last_error']})" if sto.get("last_error") else "")
    )
    mk = st.get("markers")
    if mk:
        console.print(
            f"markers via {redact_url(str(mk.get('broker')))}: {mk.get('received', 0)} received, {mk.get('stored', 0)} stored, "
            f"{mk.get('duplicates', 0)} duplicates, {sum(mk.get('rejected', {}).values())} rejected"
        )
        session = SESSION_WORDS.get(str(mk.get("session")))
        if session:
            warn = mk.get("session") == "not persistent"
            console.print(f"broker session: {session}", style="yellow" if warn else None, highlight=False)
    fw = st.get("forwarder")
    if fw:  # [influx] url set: the forwarder's progress, and its error as a whole sentence
        console.print(
            f"forwarding to {redact_url(str(fw.get('url')))}: {fw.get('state')}, lag {_fmt(fw.get('lag_s'), '.1f')} s, "
            f"backlog {fw.get('backlog_points', 0)} points, {fw.get('points_sent', 0)} sent, {fw.get('errors', 0)} errors, "
            f"{fw.get('quarantined', 0)} quarantined",
            style="yellow" if fw.get("last_error") else None, highlight=False,
        )
        if fw.get("last_error"):
            console.print(f"[yellow]forwarder:[/] {escape(str(fw['last_error']))}", highlight=False)


# what the daemon's marker recorder learned about the broker's sessions (daemon/recorder.py session_verdict)
SESSION_WORDS = {
    "persistent": "persistent (kept across a broker restart: nothing is lost while the daemon reconnects)",
    "not persistent": "not persistent — markers sent while the daemon reconnects may be lost; enable persistence "
                      "on the broker (mosquitto: persistence true)",
    "unknown": "not known yet (told at the broker's first restart; it must have persistence on)",
    "embedded": "embedded broker (runs inside the daemon; marker clients spool while it is down)",
}


def _next_try(s: dict[str, Any], running: bool) -> str:
    nxt = s.get("next_try_s")
    return "" if nxt is None or not running else f" — next try in {nxt:.0f} s"


@app.command()
def status(
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """The running daemon's health: per source achieved rate, jitter, errors, last sample age; store lag.

    Exit code: 0 the daemon runs, 1 it does not (its last status is shown), 2 no status file (or a usage error).
    """
    from jouled.statusfile import freshest, read_live
    from jouled.store.url import parse_store_url

    _check_format(fmt)
    ctx = context(config, store)
    store_path = parse_store_url(ctx.store_url)
    # the daemon may run in another environment (the service): the freshest of the files it may have written, and
    # the socket beside it, where the daemon answers with its status as it is now
    path = freshest(ctx.config.status_paths(store_path)) or ctx.config.status_path(store_path)
    live, why_not = read_live(path)
    if live is not None:
        live["running"] = True
        st = live
    else:
        st = _read_status(path)
        if st["running"] and why_not:  # a daemon runs but would not answer: say how old the file's figures are
            age_s = (time.time_ns() - int(st.get("updated_ns") or 0)) / 1e9
            typer.echo(f"{why_not}; showing the status file, written {age_s:.0f} s ago", err=True)
    if fmt == "json":
        typer.echo(json.dumps(st, indent=2))
    else:
        _print_status_table(st, wide=wide)
    if not st["running"]:
        typer.echo(
            f"daemon not running: pid {st.get('pid')} is gone; the status above is its last, from {path} "
            "— start it with `jouled run` (or systemctl start jouled)",
            err=True,
        )
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jouled {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Measure the energy and carbon of ML work, and search architectures when the grid is clean."""


def main() -> None:
    try:
        app()
    except UserError as e:  # raised outside a command group's invoke (e.g. while parsing): still one line
        print_user_error(e)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
