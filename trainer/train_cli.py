"""`jouled train`: train an NB201 cell or a RegNet/torchvision model with run/epoch/phase markers, print per-epoch metrics."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from jouled.cli_common import ConfigOpt, FormatOpt, UnusedStoreOpt, context, ignore_store
from jouled.errors import UserError
from jouled.progress import NoProgressOpt, progress_bar, progress_enabled
from jouled.tables import Column, WideOpt, print_table
from jouled.trainer.nb201_arch import EXAMPLE_ARCH_STR

if TYPE_CHECKING:
    from jouled.trainer.markers import MarkerClient

DEFAULT_ARCH = EXAMPLE_ARCH_STR


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.{digits}f}"


METRIC_COLUMNS = (
    Column("epoch", 0, "right"), Column("lr", 3, "right"), Column("train loss", 0, "right"),
    Column("train acc", 2, "right"), Column("eval loss", 1, "right"), Column("eval acc", 0, "right"),
    Column("train s", 4, "right"), Column("samples/s", 2, "right"), Column("eval s", 5, "right"),
)


def print_metrics(rows: list[dict[str, Any]], title: str, *, wide: bool = False) -> None:
    cells = [
        [
            str(m["epoch"]), _fmt(m["lr"]), _fmt(m["train_loss"]), _fmt(m["train_accuracy"]), _fmt(m["eval_loss"]),
            _fmt(m["eval_accuracy"]), _fmt(m["train_duration_s"], 2), _fmt(m["train_samples_per_s"], 1),
            _fmt(m["eval_duration_s"], 2),
        ]
        for m in rows
    ]
    print_table(title, METRIC_COLUMNS, cells, wide=wide)


def _marker_client(cfg: Any, mqtt_url: str | None) -> MarkerClient | None:
    """The MQTT marker client when jouled.trainer.markers imports, else None (markers go nowhere)."""
    try:
        from jouled.trainer.markers import MarkerClient
    except ImportError:
        return None
    from jouled.secrets import redact_text
    try:
        if mqtt_url:
            return MarkerClient(mqtt_url, host=cfg.daemon.host)
        return MarkerClient.from_config(cfg)  # [mqtt] url; empty → the embedded broker on 127.0.0.1:embedded_port
    except ValueError as e:
        raise UserError(redact_text(f"--mqtt-url / [mqtt] url: {e}")) from None


def train_command(
    arch: Annotated[
        str, typer.Option("--arch", metavar="ARCH", help="NB201 cell as arch_str (used when --model is empty)")
    ] = DEFAULT_ARCH,
    model: Annotated[
        str,
        typer.Option("--model", metavar="MODEL", show_default=False,
                     help="nb201:ARCH_STR | regnet_x_400mf | regnet:depth=D,w0=W,wa=A,wm=M,gw=G | torchvision name "
                     "(default: the NB201 cell of --arch)"),
    ] = "",
    epochs: Annotated[int, typer.Option("--epochs", min=1, metavar="N", help="epochs to train")] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="samples per batch")] = 64,
    device: Annotated[str, typer.Option("--device", metavar="DEVICE", help="cpu | cuda | cuda:N")] = "cpu",
    dataset: Annotated[str, typer.Option("--dataset", metavar="NAME", help="auto | cifar10 | digits | synthetic")] = "auto",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", metavar="DIR", help="folder holding cifar-10-batches-py/ (never downloaded; default: none)"),
    ] = None,
    lr: Annotated[float, typer.Option("--lr", min=0.0, metavar="RATE", help="initial learning rate (cosine to 0)")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", metavar="N")] = 0,
    run_id: Annotated[
        str | None, typer.Option("--run-id", metavar="RUN", help="marker run id (default: from the checkpoint, else new)")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", metavar="FILE", help="saved after every epoch; resumed from when it exists (default: none)"),
    ] = None,
    channels: Annotated[int, typer.Option("--channels", min=1, metavar="N", help="NB201 C (stem width)")] = 16,
    cells: Annotated[int, typer.Option("--cells", min=1, metavar="N", help="NB201 N (cells per stage)")] = 5,
    image_size: Annotated[
        int | None, typer.Option("--image-size", metavar="PIXELS", help="resize inputs (default: as loaded; digits are 8×8)")
    ] = None,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", min=1, metavar="N", help="cap batches per phase (default: all)")
    ] = None,
    train_samples: Annotated[
        int | None,
        typer.Option("--train-samples", min=1, metavar="N",
                     help="training samples: the synthetic set's size (default 1024), a cap on cifar10/digits (default: all)"),
    ] = None,
    markers: Annotated[bool, typer.Option("--markers/--no-markers", help="publish markers over MQTT")] = True,
    fmt: FormatOpt = "table",
    wide: WideOpt = False,
    no_progress: NoProgressOpt = False,
    config: ConfigOpt = None,
    store: UnusedStoreOpt = None,
    mqtt_url: Annotated[
        str | None, typer.Option("--mqtt-url", metavar="URL", help="broker (default: [mqtt] url, else embedded)")
    ] = None,
) -> None:
    """Train one model with run/epoch/phase markers, so the daemon can report energy per epoch."""
    from jouled.extras import require

    require("jouled train", "trainer", "torch")
    if dataset == "digits":
        require("jouled train --dataset digits", "trainer", "sklearn")
    import torch

    from jouled.trainer.data import load_data
    from jouled.trainer.models import build_model
    from jouled.trainer.train import CheckpointError, Markers, NullMarkers, resolve_device, train

    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt!r} is not supported — use table or json")
    ignore_store(store, "jouled train")
    ctx = context(config, None)
    spec = model.strip() or f"nb201:{arch.strip()}"
    try:
        dev = resolve_device(device)
        data = load_data(dataset, data_dir, batch_size, image_size=image_size, seed=seed, max_train=train_samples)
        torch.manual_seed(seed)
        net = build_model(
            spec, data.num_classes, data.in_channels, data.image_size, channels=channels, cells_per_stage=cells
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    label = getattr(net, "arch_str", None) or spec  # canonical arch_str for NB201 cells
    client = _marker_client(ctx.config, mqtt_url) if markers else None
    hooks: Markers = client if client is not None else NullMarkers()
    err = Console(stderr=True)
    if fmt == "table":
        err.print(
            f"training [bold]{label}[/] on {data.name} ({data.train_size} train / {data.eval_size} eval, "
            f"{data.in_channels}×{data.image_size}×{data.image_size}) on {dev}"
        )
    try:
        with progress_bar("training (batches)", enabled=progress_enabled(no_progress)) as on_progress:
            result = train(
                net,
                data,
                epochs,
                dev,
                hooks,
                run_id=run_id,
                arch=label,
                lr=lr,
                seed=seed,
                checkpoint=checkpoint,
                max_batches=max_batches,
                on_progress=on_progress,
                on_epoch=(lambda m: err.print(f"epoch {m.epoch}: train loss {m.train_loss:.4f}")) if fmt == "table" else None,
            )
    except CheckpointError as e:
        raise UserError(str(e)) from None
    finally:
        if client is not None:
            delivered = client.close(timeout_s=3.0)
            if not delivered:
                from jouled.daemon.spool import SCAN_PERIOD_S

                err.print(
                    f"[yellow]markers not yet delivered to {client.shown_url}; they stay spooled in {client.spool_dir}: "
                    f"a `jouled run` daemon of this user records them within {SCAN_PERIOD_S:g} s (at its start, then "
                    f"every {SCAN_PERIOD_S:g} s), and the next marker client on this host sends them[/]"
                )
    rows = [_nan_to_none(asdict(m)) for m in result.epochs]
    if fmt == "json":
        out = {
            "run_id": result.run_id,
            "arch": label,
            "dataset": data.name,
            "device": str(dev),
            "start_epoch": result.start_epoch,
            "epochs": rows,
        }
        typer.echo(json.dumps(out, allow_nan=False))
    else:
        resumed = f", resumed after epoch {result.start_epoch - 1}" if result.start_epoch else ""
        print_metrics(rows, f"run {result.run_id}{resumed}", wide=wide)


def _nan_to_none(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: an empty phase's figures become null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
