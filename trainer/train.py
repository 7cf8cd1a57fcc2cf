"""Training loop with run/epoch/phase marker hooks, NB201's SGD + cosine schedule, and epoch-boundary checkpoints.

The loop only knows the small `Markers` protocol below: `NullMarkers` when nothing listens,
`jouled.trainer.markers.MarkerClient` when the daemon should cut energy windows. Phase
windows end only after the device has finished its queued work, so a window's energy
belongs to the work inside it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from jouled.trainer.data import DataBundle

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed here; the message names the file and the fix."""


class RunMarkers(Protocol):
    """What the loop needs from a run handle: epoch and phase windows, each publishing start/end."""

    def epoch(self, n: int) -> AbstractContextManager[Any]: ...

    def phase(self, name: str) -> AbstractContextManager[Any]: ...


class Markers(Protocol):
    """What the loop needs from a marker client (MarkerClient satisfies it)."""

    def run(self, run_id: str, *, arch: str, gpus: list[str]) -> AbstractContextManager[Any]: ...


class _NullRun:
    def epoch(self, n: int) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def phase(self, name: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


class NullMarkers:
    """Markers that go nowhere: training without a daemon."""

    @contextlib.contextmanager
    def run(self, run_id: str, *, arch: str = "", gpus: list[str] | None = None) -> Iterator[_NullRun]:
        yield _NullRun()

    def close(self) -> None:
        return None


@dataclass
class EpochMetrics:
    """One epoch's figures; durations are wall-clock seconds of each phase."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    train_samples: int
    train_duration_s: float
    train_samples_per_s: float
    eval_loss: float
    eval_accuracy: float
    eval_samples: int
    eval_duration_s: float
    eval_samples_per_s: float
    duration_s: float


@dataclass
class TrainResult:
    """Every epoch's metrics (those restored from a checkpoint first) and where the run stands."""

    run_id: str
    arch: str
    epochs: list[EpochMetrics] = field(default_factory=list)
    start_epoch: int = 0  # epochs already done when this call began (resume)
    checkpoint: Path | None = None


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N` → a torch device; ValueError when the device is not there."""
    text = name.strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError("CUDA not available — use --device cpu")
        dev = torch.device(text)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible — use cuda:0…")
        return dev
    raise ValueError(f"unknown device {name!r} — use cpu, cuda or cuda:N")


def gpu_names(device: torch.device, environ: dict[str, str] | None = None) -> list[str]:
    """The daemon's names (`gpu<N>`, N the physical NVML index) of the GPUs a device uses; [] on CPU.

    torch numbers GPUs within CUDA_VISIBLE_DEVICES, the daemon numbers them physically, so map through it.
    """
    if device.type != "cuda":
        return []
    env = dict(os.environ) if environ is None else environ
    local = device.index if device.index is not None else 0
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and local < len(visible) and visible[local].isdigit():
        return [f"gpu{visible[local]}"]
    return [f"gpu{local}"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(loader: DataLoader[Any], max_batches: int | None) -> Iterator[Any]:
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch


def _batch_count(loader: DataLoader[Any], max_batches: int | None) -> int:
    """Batches one pass yields (0 when the loader cannot tell: the bar then just counts)."""
    try:
        n = len(loader)
    except TypeError:
        return 0
    return min(n, max_batches) if max_batches is not None else n


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    max_batches: int | None = None,
    before_step: Callable[[], None] | None = None,
    after_batch: Callable[[], None] | None = None,
) -> tuple[float, float, int]:
    """One pass of SGD; (mean loss, accuracy, samples). before_step runs before each forward (path sampling),
    after_batch after each step (progress)."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in _batches(loader, max_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if before_step is not None:
            before_step()
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # NB201 clips at 5
        optimizer.step()
        n = int(y.shape[0])
        loss_sum += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += n
        if after_batch is not None:
            after_batch()
    if seen == 0:
        return math.nan, math.nan, 0
    return loss_sum / seen, correct / seen, seen


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader[Any], device: torch.device, max_batches: int | None = None,
    after_batch: Callable[[], None] | None = None,
) -> tuple[float, float, int]:
    """(mean loss, accuracy, samples) in eval mode; after_batch runs after each batch (progress)."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in _batches(loader, max_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += float(criterion(logits, y))
        correct += int((logits.argmax(1) == y).sum())
        seen += int(y.shape[0])
        if after_batch is not None:
            after_batch()
    if seen == 0:
        return math.nan, math.nan, 0
    return loss_sum / seen, correct / seen, seen


def make_optimizer(
    model: nn.Module, epochs: int, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = True
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """NB201's recipe: SGD (momentum 0.9, Nesterov, wd 5e-4), cosine annealing to 0 over the run, stepped per epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=0.0)
    return opt, sched


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a worker moved mid-write never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by `train` (tensors and plain data only: weights_only loading)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise CheckpointError(
            f"checkpoint {path}: cannot read it ({type(e).__name__}) — delete it or pass another --checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: not a jouled training checkpoint — delete it or pass another --checkpoint"
        )
    return state


def train(
    model: nn.Module,
    data: DataBundle,
    epochs: int,
    device: str | torch.device = "cpu",
    markers: Markers | None = None,
    *,
    run_id: str | None = None,
    arch: str = "",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    checkpoint: Path | None = None,
    resume: bool = True,
    max_batches: int | None = None,
    gpus: list[str] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train for `epochs` epochs, each a `train` then an `eval` phase inside run → epoch → phase markers.

    With `checkpoint`, the state is saved after every epoch; with `resume` and an existing
    checkpoint, training continues after its last finished epoch (same run id, same RNG state),
    so a worker can be moved at an epoch boundary without losing finished epochs.
    `on_progress(done, total)` counts batches (train and eval) over the epochs still to run.
    """
    if epochs < 1:
        raise ValueError(f"epochs {epochs} must be ≥ 1")
    dev = resolve_device(device) if isinstance(device, str) else device
    markers = markers or NullMarkers()
    model.to(dev)
    optimizer, scheduler = make_optimizer(model, epochs, lr, momentum, weight_decay)
    history: list[EpochMetrics] = []
    start = 0
    rid = run_id
    if checkpoint is not None and resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        if state["arch"] != arch:
            raise CheckpointError(
                f"checkpoint {checkpoint} is for arch {state['arch']!r}, not {arch!r} — "
                "pass the same arch or another --checkpoint"
            )
        if state["epochs"] != epochs:
            raise CheckpointError(
                f"checkpoint {checkpoint} was for {state['epochs']} epochs — "
                f"pass --epochs {state['epochs']} or another --checkpoint"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [EpochMetrics(**m) for m in state["history"]]
        start = int(state["epoch_done"])
        rid = rid or str(state["run_id"])
        torch.set_rng_state(state["rng"])
        gen = getattr(data.train, "generator", None)
        if gen is not None and state.get("loader_rng") is not None:
            gen.set_state(state["loader_rng"])
    else:
        torch.manual_seed(seed)
    rid = rid or f"train-{uuid.uuid4().hex[:12]}"
    result = TrainResult(run_id=rid, arch=arch, epochs=history, start_epoch=start, checkpoint=checkpoint)
    if start >= epochs:
        return result

    per_epoch = _batch_count(data.train, max_batches) + _batch_count(data.eval, max_batches)
    total_batches = per_epoch * (epochs - start)
    done_batches = 0

    def one_batch() -> None:
        nonlocal done_batches
        done_batches += 1
        if on_progress is not None:
            on_progress(done_batches, max(total_batches, done_batches))

    if on_progress is not None:
        on_progress(0, total_batches)
    with markers.run(rid, arch=arch, gpus=gpus if gpus is not None else gpu_names(dev)) as r:
        for ep in range(start, epochs):
            lr_now = float(optimizer.param_groups[0]["lr"])
            with r.epoch(ep):
                t0 = time.perf_counter()
                with r.phase("train"):
                    tr_loss, tr_acc, tr_n = train_one_epoch(
                        model, data.train, optimizer, dev, max_batches, after_batch=one_batch
                    )
                    _sync(dev)
                t1 = time.perf_counter()
                with r.phase("eval"):
                    ev_loss, ev_acc, ev_n = evaluate(model, data.eval, dev, max_batches, after_batch=one_batch)
                    _sync(dev)
                t2 = time.perf_counter()
            scheduler.step()
            m = EpochMetrics(
                epoch=ep,
                lr=lr_now,
                train_loss=tr_loss,
                train_accuracy=tr_acc,
                train_samples=tr_n,
                train_duration_s=t1 - t0,
                train_samples_per_s=tr_n / (t1 - t0) if t1 > t0 else math.nan,
                eval_loss=ev_loss,
                eval_accuracy=ev_acc,
                eval_samples=ev_n,
                eval_duration_s=t2 - t1,
                eval_samples_per_s=ev_n / (t2 - t1) if t2 > t1 else math.nan,
                duration_s=t2 - t0,
            )
            history.append(m)
            if checkpoint is not None:
                gen = getattr(data.train, "generator", None)
                save_checkpoint(
                    checkpoint,
                    {
                        "version": CHECKPOINT_VERSION,
                        "run_id": rid,
                        "arch": arch,
                        "epochs": epochs,
                        "epoch_done": ep + 1,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "history": [asdict(h) for h in history],
                        "rng": torch.get_rng_state(),
                        "loader_rng": gen.get_state() if gen is not None else None,
                    },
                )
            if on_epoch is not None:
                on_epoch(m)
    return result
