"""What a search worker runs: sampling jobs (one-shot supernet scores) and evaluation jobs (full training, resumable).

This module is imported by freshly spawned worker processes and by Ray actors *before* torch:
it must not import torch at module level, so that the slot's CUDA_VISIBLE_DEVICES (set in the
worker's environment) is what torch sees when a job first imports it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WorkerSettings:
    """How every job of one search trains: data, model size, and where markers go (empty url: no markers)."""

    dataset: str = "digits"
    batch_size: int = 64
    channels: int = 4
    cells_per_stage: int = 1
    max_batches: int | None = 4
    seed: int = 0
    broker_url: str = ""
    host: str = ""
    spool_dir: str = ""


@dataclass(frozen=True)
class NoopJob:
    """Does nothing: measures the executor's own dispatch overhead (bench/executor_dispatch.py)."""

    job_id: str = field(default_factory=lambda: f"noop-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class SampleJob:
    """Refresh the shared supernet for `train_epochs` short epochs, then score `archs` with one-shot weights."""

    archs: tuple[str, ...]
    supernet_path: str
    settings: WorkerSettings
    train_epochs: int = 1
    run_id: str = field(default_factory=lambda: f"sample-{uuid.uuid4().hex[:10]}")
    job_id: str = field(default_factory=lambda: f"sample-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class EvalJob:
    """Train one cell for `epochs` epochs with markers, checkpointing every epoch (resumable on any slot)."""

    arch_str: str
    epochs: int
    checkpoint_path: str
    run_id: str
    settings: WorkerSettings
    job_id: str = field(default_factory=lambda: f"eval-{uuid.uuid4().hex[:8]}")
    # test hook: sleep this long after each epoch (inside the job, so a cancel can land between epochs)
    epoch_pause_s: float = 0.0


Job = NoopJob | SampleJob | EvalJob


@dataclass
class JobResult:
    """What a job hands back. `finished` is False when it stopped at an epoch boundary on request."""

    job_id: str
    kind: str  # noop | sample | eval
    slot: str
    started_at_s: float  # worker's time.time() when the job began (dispatch latency)
    ended_at_s: float
    finished: bool = True
    scores: dict[str, float] = field(default_factory=dict)  # sample: arch_str -> estimated accuracy %
    arch_str: str = ""
    run_id: str = ""
    epochs_done: int = 0
    epochs_this_call: int = 0  # epochs trained by this call (the rest came from the checkpoint)
    accuracy_pct: float | None = None  # eval: accuracy on the eval split after the last finished epoch
    gpus: list[str] = field(default_factory=list)
    markers_delivered: bool = True
    cuda_visible_devices: str | None = field(default_factory=lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StopAtBoundary(Exception):
    """Raised from the trainer's per-epoch callback: the epoch's checkpoint is already written."""


class _State:
    """Per-process caches: the data set and the marker client outlive a single job."""

    data: Any = None
    data_key: tuple[Any, ...] = ()
    client: Any = None
    client_url: str = ""


def _data(s: WorkerSettings) -> Any:
    from jouled.trainer.data import load_data

    key = (s.dataset, s.batch_size, s.seed)
    if _State.data is None or _State.data_key != key:
        _State.data = load_data(s.dataset, None, s.batch_size, seed=s.seed)
        _State.data_key = key
    return _State.data


def _markers(s: WorkerSettings) -> Any:
    """The process's MarkerClient for the search's broker (one per worker process, reused across jobs)."""
    if not s.broker_url:
        from jouled.trainer.train import NullMarkers

        return NullMarkers()
    if _State.client is None or _State.client_url != s.broker_url:
        from jouled.trainer.markers import MarkerClient

        _State.client = MarkerClient(
            s.broker_url, host=s.host or None, spool_path=Path(s.spool_dir) if s.spool_dir else None
        )
        _State.client_url = s.broker_url
    return _State.client


def _flush_markers(s: WorkerSettings) -> bool:
    """Wait until this job's markers reached the broker, so the search can read the run's energy next."""
    if _State.client is None or not s.broker_url:
        return True
    return bool(_State.client.flush(timeout_s=10.0))


def close_worker() -> None:
    """Flush and stop the process's marker client (worker shutdown)."""
    if _State.client is not None:
        _State.client.close(timeout_s=5.0)
        _State.client = None


def _device() -> Any:
    import torch

    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def run_sample(job: SampleJob, slot: str) -> JobResult:
    import torch

    from jouled.trainer.supernet import OneShot

    t0 = time.time()
    s = job.settings
    data = _data(s)
    dev = _device()
    shot = OneShot(data, str(dev), channels=s.channels, cells_per_stage=s.cells_per_stage, seed=s.seed,
                   max_batches=s.max_batches, markers=_markers(s))
    path = Path(job.supernet_path)
    if path.exists():
        # weights shared by every sampling job of the search: each refresh continues the last one
        shot.net.load_state_dict(torch.load(path, map_location=dev, weights_only=True))
    if job.train_epochs > 0:
        shot.train(job.train_epochs, run_id=f"{job.run_id}-train")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(shot.net.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: two sampling slots may refresh at once
    scores = shot.score_many(list(job.archs), run_id=job.run_id)
    delivered = _flush_markers(s)
    # evaluate() gives a fraction; objectives are in percent like the NB201 tables
    return JobResult(job.job_id, "sample", slot, t0, time.time(), scores={a: 100.0 * v for a, v in scores.items()},
                     run_id=job.run_id, markers_delivered=delivered)


def run_eval(job: EvalJob, slot: str, should_stop: Callable[[], bool]) -> JobResult:
    import torch

    from jouled.trainer.models import build_model
    from jouled.trainer.train import EpochMetrics, gpu_names, train

    t0 = time.time()
    s = job.settings
    data = _data(s)
    dev = _device()
    torch.manual_seed(s.seed)
    net = build_model(f"nb201:{job.arch_str}", data.num_classes, data.in_channels, data.image_size,
                      channels=s.channels, cells_per_stage=s.cells_per_stage)
    trained: list[int] = []

    def on_epoch(m: EpochMetrics) -> None:
        trained.append(m.epoch)
        if job.epoch_pause_s > 0:
            time.sleep(job.epoch_pause_s)
        # train() has saved this epoch's checkpoint before calling us: stopping here loses nothing
        if m.epoch + 1 < job.epochs and should_stop():
            raise StopAtBoundary

    ckpt = Path(job.checkpoint_path)
    finished = True
    try:
        result = train(net, data, job.epochs, dev, _markers(s), run_id=job.run_id, arch=job.arch_str,
                       seed=s.seed, checkpoint=ckpt, resume=True, max_batches=s.max_batches,
                       gpus=gpu_names(dev), on_epoch=on_epoch)
        history = result.epochs
    except StopAtBoundary:
        finished = False
        from jouled.trainer.train import load_checkpoint

        history = [EpochMetrics(**m) for m in load_checkpoint(ckpt)["history"]]
    delivered = _flush_markers(s)
    acc = 100.0 * history[-1].eval_accuracy if history else None
    return JobResult(job.job_id, "eval", slot, t0, time.time(), finished=finished, arch_str=job.arch_str,
                     run_id=job.run_id, epochs_done=len(history), epochs_this_call=len(trained),
                     accuracy_pct=acc, gpus=gpu_names(dev), markers_delivered=delivered)


def run_job(job: Job, slot: str, should_stop: Callable[[], bool]) -> JobResult:
    """Run one job in this process; the executors call this inside their workers."""
    if isinstance(job, NoopJob):
        t = time.time()
        return JobResult(job.job_id, "noop", slot, t, t)
    if isinstance(job, SampleJob):
        return run_sample(job, slot)
    if isinstance(job, EvalJob):
        return run_eval(job, slot, should_stop)
    raise TypeError(f"unknown job type {type(job).__name__}")
