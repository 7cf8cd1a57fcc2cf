"""``jouled markers send``: publish one marker from a shell script (typer app ``markers_app``).

Exit codes: 0 when the broker acknowledged the marker, and also 0 when the broker could not be
reached: the marker is then in the spool (nothing is lost) and the next ``jouled markers send`` or
training client on this host delivers it, in order, and so does a ``jouled run`` of the same user (it adopts
spools whose client has exited, every 5 s); one line on stderr says so. ``--require-delivery``
turns that case into exit 1. Bad input: exit 2 with a one-line message (UserError).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from jouled.cli_common import ConfigOpt, StoreOpt, context, make_app
from jouled.errors import UserError
from jouled.markers import MarkerError, parse_broker_url, parse_time_ns, validate_marker
from jouled.secrets import mqtt_auth, redact_text, redact_url
from jouled.trainer.markers import MarkerClient, SeqAllocator, default_spool_dir

markers_app = make_app(help="Epoch/phase markers over MQTT.")


@markers_app.callback()
def _group() -> None:
    """Epoch/phase markers over MQTT (a group, so `send` stays a subcommand even while it is the only one)."""


@markers_app.command("send")
def send(
    run: Annotated[str, typer.Option("--run", metavar="RUN", help="run id")],
    scope: Annotated[str, typer.Option("--scope", metavar="SCOPE", help="run | epoch | phase")],
    event: Annotated[str, typer.Option("--event", metavar="EVENT", help="start | end")],
    epoch: Annotated[int | None, typer.Option("--epoch", metavar="N",
            help="epoch number (scope epoch and phase; default: none)")] = None,
    phase: Annotated[
        str | None, typer.Option("--phase", metavar="PHASE",
                help="train | eval | sample | calibrate:idle | … (scope phase; default: none)")
    ] = None,
    time_: Annotated[
        str | None, typer.Option("--time", metavar="TIME", help="RFC 3339 or integer ns since the epoch, UTC (default: now)")
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", metavar="ARCH", help="architecture of the run (default: none)")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", metavar="DEVICES",
            help="devices the run uses: gpu0,gpu1 (default: none)")] = None,
    seq: Annotated[
        int | None, typer.Option("--seq", metavar="N", help="sequence number (default: the run's persisted counter + 1)")
    ] = None,
    attrs: Annotated[str | None, typer.Option("--attrs", metavar="JSON",
            help='JSON object, e.g. {"loss": 0.3} (default: none)')] = None,
    host: Annotated[str | None, typer.Option("--host", metavar="HOST", help="host tag (default: [daemon] host)")] = None,
    url: Annotated[
        str | None, typer.Option("--url", metavar="URL", help="broker (default: [mqtt] url, else the embedded one)")
    ] = None,
    spool_dir: Annotated[
        Path | None,
        typer.Option("--spool-dir", metavar="DIR", help="spool directory (default $JOULED_SPOOL_DIR or ~/.local/state)"),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="seconds to wait for the broker's PUBACK")] = 5.0,
    require_delivery: Annotated[
        bool, typer.Option("--require-delivery", help="exit 1 when the marker could only be spooled")
    ] = False,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Publish one marker with QoS 1 and wait for the broker's acknowledgement."""
    ctx = context(config, store)
    cfg = ctx.config
    host = host or cfg.daemon.host
    broker_url = url or cfg.mqtt.url or f"mqtt://127.0.0.1:{cfg.mqtt.embedded_port}"
    try:
        parse_broker_url(broker_url)
    except ValueError as e:
        raise UserError(redact_text(f"--url / [mqtt] url: {e}")) from None
    if timeout <= 0:
        raise UserError(f"--timeout {timeout}: must be > 0 seconds")
    try:
        if time_ is None:
            time_ns = time.time_ns()
        else:
            time_ns = parse_time_ns(int(time_) if time_.strip().isdigit() else time_)
    except MarkerError as e:
        raise UserError(f"--time {time_!r}: {e.message}") from None
    attrs_obj: dict[str, Any] = {}
    if attrs:
        try:
            attrs_obj = json.loads(attrs)
        except json.JSONDecodeError as e:
            raise UserError(f"--attrs: not valid JSON ({e}) — pass an object such as '{{\"loss\": 0.3}}'") from None
    gpu_list = [g.strip() for g in (gpus or "").split(",") if g.strip()]
    spool = spool_dir or default_spool_dir()
    # validate before touching the counter or the broker: a bad marker must not consume a seq
    candidate = {
        "time": time_ns, "host": host, "run": run, "scope": scope, "event": event, "seq": seq if seq is not None else 0,
        "epoch": epoch, "phase": phase, "arch": arch, "gpus": gpu_list, "attrs": attrs_obj,
    }
    try:
        validate_marker(candidate)
    except MarkerError as e:
        flag = {"seq": "--seq", "time": "--time", "attrs": "--attrs", "gpus": "--gpus"}.get(e.field or "", f"--{e.field}")
        if e.kind == "missing_field":  # the option was not given: say when it is needed, not the schema's code
            raise UserError(f"{flag}: required with --scope {scope} — pass {flag} N") from None
        raise UserError(f"{flag}: {e.message}") from None
    alloc = SeqAllocator(spool)
    if seq is None:
        seq = alloc.reserve(run)
    else:
        alloc.observe(run, seq)

    m = cfg.mqtt
    auth = mqtt_auth(cfg, broker_url)  # the daemon's resolution: password_file, systemd credential, password, URL
    client = MarkerClient(
        broker_url, host=host, spool_path=spool, username=auth.username, password=auth.password,
        tls_ca=m.tls_ca or None, tls_cert=m.tls_cert or None, tls_key=m.tls_key or None,
        tls_insecure=m.tls_insecure, connect_timeout_s=min(timeout, 3.0),
    )
    try:
        client.mark(
            scope, event, run, epoch, phase, arch=arch, gpus=gpu_list, attrs=attrs_obj or None, seq=seq,
            time_ns=None if time_ is None else time_ns,  # stamped by the client: with its monotonic reading
        )
        delivered = client.flush(timeout)
        stats = client.stats()
    finally:
        client.close(timeout_s=0.5)
    what = f"{run} {scope}{'' if epoch is None else f' {epoch}'}{f' {phase}' if phase else ''} {event} seq={seq}"
    if delivered:
        extra = f" (and {stats.adopted} spooled earlier)" if stats.adopted else ""
        typer.echo(f"sent {what} to {redact_url(broker_url)}{extra}")
        return
    reason = stats.last_error or f"no PUBACK within {timeout:g} s"
    print(
        f"spooled {what} in {spool}: {reason}; the next `jouled markers send` or training client on this host "
        "delivers it, and so does a `jouled run` of this user (within 5 s)",
        file=sys.stderr,
    )
    if require_delivery:
        raise typer.Exit(1)


def main() -> None:  # ``python -m jouled.trainer.markers_cli send …`` before the app is mounted
    markers_app()


if __name__ == "__main__":
    main()
