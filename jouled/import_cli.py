"""`jouled import samples|markers`: bring existing logs in (CSV or InfluxDB line protocol), all rows or none."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jouled.cli_common import ConfigOpt, StoreOpt, context, make_app
from jouled.errors import UserError
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.store.sqlite import open_store
from jouled.userfile import read_user_text

import_app = make_app(help="Bring existing logs in (CSV or InfluxDB line protocol).")


def _import(
    kind: str, file: Path, skip_bad: bool, fmt: str, config: Path | None, store: str | None, no_progress: bool = False
) -> None:
    from jouled.importers import parse_markers, parse_samples, summarize_errors

    if fmt not in ("auto", "csv", "lp"):
        raise UserError(f"--format {fmt!r}: choose auto, csv or lp")
    ctx = context(config, store)
    text = read_user_text(
        file, encoding="utf-8-sig",
        missing=f"{file}: no such file — pass the path of a CSV or line-protocol log",
        folder=f"{file}: is a folder — pass the path of one CSV or line-protocol file in it",
        not_utf8=f"{file}: not UTF-8 text — export it as UTF-8 CSV or line protocol",
        unreadable=f"{file}: cannot read ({{strerror}}) — check its permissions",
    )
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
            n = st.write_samples(parsed.items, skip_stored=True)  # type: ignore[arg-type]
        else:
            n = st.write_markers(parsed.items)  # type: ignore[arg-type]
    for bad in parsed.errors:
        typer.echo(f"{file}: skipped line {bad.line}: {bad.message}", err=True)
    # a sample (series and timestamp) or a marker (run and seq) already in the log is not stored twice
    known = f", {len(parsed.items) - n} already in the log" if n < len(parsed.items) else ""
    typer.echo(f"imported {n} {kind} from {file} ({len(parsed.errors)} bad rows skipped{known}) into {st.path}")


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
