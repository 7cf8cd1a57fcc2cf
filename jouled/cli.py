"""The `jouled` command line (typer + rich): daemon, sources, status, import; component apps mounted here."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from jouled import __version__
from jouled.cli_common import (
    ConfigOpt,
    FormatOpt,
    StoreOpt,
    UnusedStoreOpt,
    context,
    ignore_store,
    make_app,
    print_user_error,
)
from jouled.demo import demo_command
from jouled.energy_cli import energy_app
from jouled.errors import UserError
from jouled.export_cli import export_app
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.scheduler.carbon_cli import carbon_app
from jouled.scheduler.nas_cli import nas_app
from jouled.scheduler.search_cli import search_command
from jouled.secrets import redact_url
from jouled.service_cli import service_app
from jouled.statusfile import freshest
from jouled.store.sqlite import open_store, parse_store_url
from jouled.tables import Column, WideOpt, make_console, print_table
from jouled.trainer.markers_cli import markers_app
from jouled.trainer.train_cli import train_command

app = make_app(
    name="jouled",
    help="Measure the energy and carbon of ML work, and search architectures when the grid is clean.",
)
import_app = make_app(help="Bring existing logs in (CSV or InfluxDB line protocol).")
app.add_typer(import_app, name="import")
app.add_typer(energy_app, name="energy")
app.add_typer(export_app, name="export")
app.add_typer(markers_app, name="markers")
app.add_typer(carbon_app, name="carbon")
nas_app.command("search")(search_command)
app.add_typer(nas_app, name="nas")
app.add_typer(service_app, name="service")
app.command("train")(train_command)
app.command("demo")(demo_command)

def _check_format(fmt: str, allowed: tuple[str, ...] = ("table", "json")) -> None:
    if fmt not in allowed:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(allowed)}")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from jouled.secrets import install_log_redaction

    install_log_redaction()  # URL passwords, tokens and every secret jouled read are masked in every log line


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
    from jouled.daemon.app import build_daemon, run_daemon

    if duration is not None and not duration > 0:  # 0, negative or NaN would stop at once, having sampled nothing
        raise UserError(f"--duration {duration:g}: must be > 0 seconds — or leave it out to run until stopped")
    _setup_logging(verbose)
    ctx = context(config, store)
    from jouled.trainer.markers import default_spool_dir

    # the daemon also records markers that marker clients on this host left spooled (broker down, client gone)
    daemon = build_daemon(
        ctx.config, ctx.store_url, rate_hz=rate, source_names=source or None, spool_dir=default_spool_dir()
    )
    final = run_daemon(daemon, duration)
    if duration is not None:
        _print_status_table(final)


@app.command()
def sources(
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    config: ConfigOpt = None,
    store: UnusedStoreOpt = None,
) -> None:
    """Each source: name, devices, available, reason when not, period."""
    from jouled.daemon.sources.registry import probe_all

    _check_format(fmt)
    ignore_store(store, "jouled sources")
    ctx = context(config, None)
    infos = probe_all(ctx.config)
    rows = [
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


STATUS_COLUMNS = (
    Column("source"), Column("state"), Column("devices", 0, fit="wrap"), Column("Hz (target)", 1, "right"),
    Column("delivered", 3, "right"), Column("jitter p50/p99 ms", 4, "right"), Column("errors", 1, "right"),
    Column("age", 2, "right"),
)


def _print_status_table(st: dict[str, Any], wide: bool = False) -> None:
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
    print_table(title, STATUS_COLUMNS, cells, wide=wide, console=console)
    # an error message is a sentence: whole, under the table, not squeezed into a cell
    for s in st.get("sources", []):
        if s.get("last_error") and s["state"] == "retrying":
            console.print(f"[yellow]{s['name']} retrying:[/] {escape(s['last_error'])}{_next_try(s)}", highlight=False)
    for s in off:
        console.print(f"[dim]{s['name']} unavailable: {escape(s['reason'])}{_next_try(s)}[/]", highlight=False)
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


# what the daemon's marker recorder learned about the broker's sessions (daemon/recorder.py session_verdict)
SESSION_WORDS = {
    "persistent": "persistent (kept across a broker restart: nothing is lost while the daemon reconnects)",
    "not persistent": "not persistent — markers sent while the daemon reconnects may be lost; enable persistence "
                      "on the broker (mosquitto: persistence true)",
    "unknown": "not known yet (told at the broker's first restart; it must have persistence on)",
    "embedded": "embedded broker (runs inside the daemon; marker clients spool while it is down)",
}


def _next_try(s: dict[str, Any]) -> str:
    nxt = s.get("next_try_s")
    return "" if nxt is None else f" — next try in {nxt:.0f} s"


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
    _check_format(fmt)
    ctx = context(config, store)
    store_path = parse_store_url(ctx.store_url)
    # the daemon may run in another environment (the service): the freshest of the files it may have written
    path = freshest(ctx.config.status_paths(store_path)) or ctx.config.status_path(store_path)
    st = _read_status(path)
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


def _import(
    kind: str, file: Path, skip_bad: bool, fmt: str, config: Path | None, store: str | None, no_progress: bool = False
) -> None:
    from jouled.importers import parse_markers, parse_samples, summarize_errors

    if fmt not in ("auto", "csv", "lp"):
        raise UserError(f"--format {fmt!r}: choose auto, csv or lp")
    ctx = context(config, store)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{file}: no such file — pass the path of a CSV or line-protocol log") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text — export it as UTF-8 CSV or line protocol") from None
    except IsADirectoryError:
        raise UserError(f"{file}: is a folder — pass the path of one CSV or line-protocol file in it") from None
    except OSError as e:
        raise UserError(f"{file}: cannot read ({e.strerror}) — check its permissions") from None
    host = ctx.config.daemon.host
    show = progress_enabled(no_progress)
    with progress_bar(f"parsing {file.name} (lines)", enabled=show) as on_progress:
        parsed = parse_samples(text, default_host=host, fmt=fmt, on_progress=on_progress) if kind == "samples" else (
            parse_markers(text, default_host=host, fmt=fmt, on_progress=on_progress)
        )
    if parsed.fatal:  # the file's shape is wrong: no row is readable, so --skip-bad would import nothing
        raise UserError(f"{file}: {parsed.fatal}")
    if parsed.errors and not skip_bad:
        raise UserError(summarize_errors(parsed.errors, str(file)))
    if not parsed.items:
        what = f"all {len(parsed.errors)} rows are bad, first {parsed.errors[0]}" if parsed.errors else "it has no rows"
        raise UserError(f"{file}: nothing to import ({what}) — fix the rows, or check it is the {kind} file")
    st = open_store(ctx.store_url)
    # one transaction (all or nothing), so no count to report: the bar only says it is still working
    with progress_bar(f"writing {len(parsed.items)} {kind}", enabled=show and len(parsed.items) > 100_000):
        if kind == "samples":
            n = st.write_samples(parsed.items)  # type: ignore[arg-type]
        else:
            n = st.write_markers(parsed.items)  # type: ignore[arg-type]
    for bad in parsed.errors:
        typer.echo(f"{file}: skipped line {bad.line}: {bad.message}", err=True)
    typer.echo(f"imported {n} {kind} from {file} ({len(parsed.errors)} bad rows skipped) into {st.path}")


@import_app.command("samples")
def import_samples(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="CSV time,host,source,device,power_w,energy_j or line protocol")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="import the good rows, report the bad")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="auto | csv | lp")] = "auto",
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Import samples; every row is validated and nothing is imported if one is bad (unless --skip-bad)."""
    _import("samples", file, skip_bad, fmt, config, store, no_progress)


@import_app.command("markers")
def import_markers(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="CSV time,host,run,scope,event,epoch,phase,arch,gpus or line protocol")
    ],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="import the good rows, report the bad")] = False,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="auto | csv | lp")] = "auto",
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Import markers; every row is validated and nothing is imported if one is bad (unless --skip-bad)."""
    _import("markers", file, skip_bad, fmt, config, store, no_progress)


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
