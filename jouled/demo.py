"""`jouled demo`: daemon + embedded broker + a short NB201 training with markers, then energy per epoch."""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from jouled.cli_common import ConfigOpt, context
from jouled.errors import UserError
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.store.sqlite import sqlite_url
from jouled.tables import WideOpt

DEMO_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_command(
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N", help="short epochs to train")] = 3,
    arch: Annotated[str, typer.Option("--arch", metavar="ARCH", help="NB201 cell (arch_str)")] = DEMO_ARCH,
    # the demo's epochs last a fraction of a second: 100 Hz gives each one well over the 10 samples below
    # which a window is flagged `sparse` (the estimate source costs ~2 % of a core at this rate)
    rate: Annotated[float, typer.Option("--rate", metavar="HZ", help="sampling rate of every source")] = 100.0,
    dataset: Annotated[str, typer.Option("--dataset", metavar="NAME", help="auto | digits | synthetic | cifar10")] = "digits",
    wide: WideOpt = False,
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: Annotated[
        str | None, typer.Option("--store", metavar="URL", help="where the demo logs (default: a new temporary SQLite file)")
    ] = None,
) -> None:
    """Start the daemon with an embedded broker, train a small NB201 cell with markers, print energy per epoch."""
    from jouled.extras import require

    require("jouled demo", "trainer", "torch")
    if dataset == "digits":
        require("jouled demo --dataset digits", "trainer", "sklearn")
    import torch

    from jouled.daemon.app import build_daemon
    from jouled.daemon.background import BackgroundDaemon
    from jouled.energy_cli import print_rows
    from jouled.query import compute_rows
    from jouled.trainer.data import load_data
    from jouled.trainer.markers import MarkerClient
    from jouled.trainer.models import build_model
    from jouled.trainer.train import train

    console = Console(stderr=True)
    ctx = context(config, store)
    cfg = ctx.config
    tmp = Path(tempfile.mkdtemp(prefix="jouled-demo-"))
    store_url = store or sqlite_url(tmp / "demo.db")
    cfg.mqtt.url = ""  # the demo always brings its own broker, on a free loopback port
    cfg.mqtt.embedded_port = _free_port()
    cfg.daemon.status_path = str(tmp / "demo.status.json")
    cfg.daemon.flush_interval_s = 0.2
    cfg.sources.estimate.only_without_sensors = False  # show an estimated source beside any measured one
    try:  # a bad --dataset is refused before anything starts, not after the daemon is up
        data = load_data(dataset, None, 64, seed=0)
    except ValueError as e:
        raise UserError(f"--dataset {dataset}: {e}") from None
    daemon = build_daemon(cfg, store_url, rate_hz=rate)
    for runner in daemon.sampler.runners:  # each source's state is printed below: not also as a log warning
        runner.absent_level = logging.DEBUG
    console.print(f"[bold]jouled demo[/]: daemon logging to {store_url}, broker mqtt://127.0.0.1:{cfg.mqtt.embedded_port}")
    bg = BackgroundDaemon(daemon).start()
    try:
        time.sleep(0.5)  # a few samples before the run starts, so the first edge has neighbours
        for h in daemon.sampler.health():
            # escape: reasons name config sections ("[sources.rapl] enabled = false"), which rich would eat as markup
            console.print(f"  source {h['name']}: {h['state']} {' '.join(h['devices'])} {escape(h['reason'])}")
        torch.manual_seed(0)
        net = build_model(f"nb201:{arch}", data.num_classes, data.in_channels, data.image_size,
                          channels=8, cells_per_stage=1)
        # from_config: the demo's broker on its free port, with the daemon's credentials when embedded_auth is on
        client = MarkerClient.from_config(cfg, spool_path=tmp / "spool")
        console.print(f"training {arch} on {data.name} for {epochs} epochs …")
        with progress_bar("training (batches)", enabled=progress_enabled(no_progress)) as on_progress:
            result = train(net, data, epochs, "cpu", client, arch=arch, on_progress=on_progress, on_epoch=lambda m: console.print(
                f"  epoch {m.epoch}: loss {m.train_loss:.3f}, eval acc {m.eval_accuracy:.3f}"))
        if not client.close(timeout_s=10.0):
            raise UserError(f"demo: markers not delivered to the embedded broker — see the spool in {tmp / 'spool'}")
        expected = 2 + 6 * epochs  # run start/end, and per epoch: epoch + train + eval start/end
        deadline = time.monotonic() + 10
        while daemon.recorder.stats.stored < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # samples after the last edge
    finally:
        bg.stop()
    rows, problems = compute_rows(daemon.store, cfg, result.run_id, ("epoch", "phase"))
    for p in problems:
        console.print(f"[yellow]warning:[/] {p}")
    print_rows(rows, f"energy per epoch and phase — run {result.run_id}", wide=wide)
    console.print(f"\nThe log stays at {escape(store_url)}. Try:")
    # soft_wrap: one line however narrow the terminal, so the command pastes whole into a shell
    console.print(f"  jouled energy epochs --run {escape(result.run_id)} --store {escape(store_url)} --format json",
                  soft_wrap=True, highlight=False)
