"""`jouled export samples`: the raw samples of a run or a time span, for other tools (CSV, line protocol, parquet)."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated

import typer

from jouled.cli_common import ConfigOpt, StoreOpt, context, make_app
from jouled.errors import NothingFound, UserError
from jouled.export import iter_slices, write_csv, write_line_protocol, write_parquet
from jouled.query import MissingModule, UnknownRun, open_readonly
from jouled.timefmt import parse_time_arg_ns

export_app = make_app(help="Take data out of the log: raw samples as CSV, line protocol or parquet.")
FORMATS = ("csv", "line-protocol", "parquet")


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_arg_ns(value)  # ns-exact; a time without an offset is UTC
    except ValueError:
        raise UserError(f"{option} {value!r}: not a time — give RFC 3339 (2024-05-01T12:00:00Z) or integer ns") from None


@export_app.command("samples")
def samples(
    run: Annotated[str | None, typer.Option("--run", metavar="RUN", help="the span of this run's markers")] = None,
    start: Annotated[str | None, typer.Option(
        "--from", metavar="TIME", help="RFC 3339 or ns (with --to alone: the log's start)")] = None,
    end: Annotated[str | None, typer.Option(
        "--to", metavar="TIME", help="RFC 3339 or ns, inclusive (with --from alone: the log's end)")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", metavar="HOST", help="only this host (repeat)")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="csv | line-protocol | parquet")] = "csv",
    time_fmt: Annotated[str, typer.Option("--time", metavar="ns|rfc3339", help="CSV time column")] = "ns",
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE", help="write here (default: stdout)")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Raw samples (time, host, source, device, power_w, energy_j) of a run (--run) or a span (--from/--to).

    CSV and line protocol are what `jouled import samples` reads back; parquet needs pyarrow and -o.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose csv, line-protocol or parquet")
    if time_fmt not in ("ns", "rfc3339"):
        raise UserError(f"--time {time_fmt!r}: choose ns or rfc3339")
    if run is not None and (start is not None or end is not None):
        raise UserError("--run with --from/--to: give a run or a time span, not both")
    if run is None and start is None and end is None:
        raise UserError("export samples: say which — --run RUN, or --from TIME [--to TIME]")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingModule("--format parquet", "pyarrow") from None
        if output is None:
            raise UserError("--format parquet: a binary file — pass -o FILE.parquet")
    ctx = context(config, store)
    st = open_readonly(ctx.store_url, ctx.config)  # sqlite:///, influx://, influx2://
    hosts = list(host) if host else None
    if run is not None:
        markers = st.read_markers(run)
        if not markers:
            known = ", ".join(st.runs()[:10]) or "none"
            raise UnknownRun(f"run {run!r}: no markers in {st.path} — known runs: {known}")
        lo, hi = min(m.time_ns for m in markers), max(m.time_ns for m in markers)
        hosts = hosts or sorted({m.host for m in markers})  # the run's own host(s)
    else:
        span = st.time_range() or (0, 0)
        t0, t1 = _time(start, "--from"), _time(end, "--to")
        lo = span[0] if t0 is None else t0
        hi = span[1] if t1 is None else t1
        if hi < lo:
            raise UserError(f"--to {end}: before --from {start} — swap them")
    slices = iter_slices(st, lo, hi, hosts=hosts, extras=fmt == "line-protocol")
    if fmt == "parquet":
        assert output is not None
        _report(write_parquet(slices, output), lo, hi, st.path, output)
        return
    with ExitStack() as stack:
        out: IO[str] = sys.stdout
        if output is not None:
            try:
                out = stack.enter_context(output.open("w", encoding="utf-8", newline=""))
            except OSError as e:
                raise UserError(f"-o {output}: cannot write ({e.strerror}) — choose a writable path") from None
        try:
            if fmt == "csv":
                n = write_csv(slices, out, rfc3339=time_fmt == "rfc3339")
            else:
                n = write_line_protocol(slices, out)
            out.flush()
        except BrokenPipeError:
            # the reader went away (| head): stop quietly like other Unix tools, no traceback at exit's flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
    _report(n, lo, hi, st.path, output)


def _report(n: int, lo_ns: int, hi_ns: int, store: Path | str, output: Path | None) -> None:
    """A count on stderr (stdout carries the data); an export of nothing is not a success."""
    span = f"{_iso(lo_ns)} … {_iso(hi_ns)}"
    if n == 0:
        raise NothingExported(
            f"no samples between {span} in {store} — check the span (jouled energy runs shows when runs were) "
            "or whether the daemon was running"
        )
    typer.echo(f"exported {n} samples ({span}){f' to {output}' if output else ''}", err=True)


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class NothingExported(NothingFound):
    """The export matched no sample (exit 1)."""
