"""Executors with real worker processes: slot pinning, epoch-boundary cancel and resume on another slot, Ray smoke."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jouled.errors import UserError
from jouled.scheduler.executors import LocalExecutor, parse_slots, slot_env
from jouled.scheduler.workers import EvalJob, NoopJob, WorkerSettings

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SETTINGS = WorkerSettings(dataset="digits", channels=4, cells_per_stage=1, max_batches=2)


def test_parse_slots() -> None:
    assert parse_slots("0,1,3") == ["0", "1", "3"]
    assert parse_slots("cpu:2") == ["cpu0", "cpu1"]
    assert parse_slots("cpu0, cpu1") == ["cpu0", "cpu1"]
    for bad in ("", "cpu:0", "0,,1", "gpu0", "0,0", "cpu:x", "0,cpu1"):
        with pytest.raises(UserError):
            parse_slots(bad)
    assert slot_env("3")["CUDA_VISIBLE_DEVICES"] == "3"
    assert slot_env("cpu0")["CUDA_VISIBLE_DEVICES"] == ""


def test_cancel_at_epoch_boundary_then_resume_elsewhere_loses_no_epoch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from jouled.trainer.train import load_checkpoint

    ckpt = tmp_path / "eval.pt"
    with LocalExecutor(["cpu0", "cpu1"]) as ex:
        # pinning: each worker saw its slot's CUDA_VISIBLE_DEVICES (empty on a CPU slot) before importing torch
        for slot in ex.slots:
            ev = ex.wait(ex.submit(NoopJob(), slot))
            assert ev.kind == "done" and ev.result is not None and ev.result.cuda_visible_devices == ""
        job = EvalJob(ARCH, 4, str(ckpt), "run-move", SETTINGS, epoch_pause_s=0.4)
        h = ex.submit(job, "cpu0")
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline:  # first epoch done
            time.sleep(0.02)
        ex.cancel(h, at_epoch_boundary=True)
        first = ex.wait(h, 60)
        assert first.kind == "cancelled" and first.result is not None and not first.result.finished
        kept = first.result.epochs_done
        assert 1 <= kept < 4
        assert load_checkpoint(ckpt)["epoch_done"] == kept  # the checkpoint holds every finished epoch
        again = ex.wait(ex.submit(EvalJob(ARCH, 4, str(ckpt), "run-move", SETTINGS), "cpu1"), 60)
    assert again.kind == "done" and again.result is not None and again.result.finished
    assert again.result.epochs_done == 4
    assert again.result.epochs_this_call == 4 - kept  # resumed: only the missing epochs were trained
    state = load_checkpoint(ckpt)
    assert [m["epoch"] for m in state["history"]] == [0, 1, 2, 3]
    assert isinstance(state["model"], dict) and torch is not None


def test_hard_cancel_restarts_the_worker(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    with LocalExecutor(["cpu0"]) as ex:
        h = ex.submit(EvalJob(ARCH, 50, str(tmp_path / "c.pt"), "run-kill", SETTINGS, epoch_pause_s=0.5), "cpu0")
        time.sleep(0.5)
        ex.cancel(h, at_epoch_boundary=False)
        ev = ex.wait(h, 10)
        assert ev.kind == "cancelled" and ev.error == "killed"
        assert ex.idle_slots() == ["cpu0"]
        assert ex.wait(ex.submit(NoopJob(), "cpu0"), 60).kind == "done"  # a fresh worker serves the slot


def test_ray_executor_smoke(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    pytest.importorskip("torch")
    from jouled.scheduler.executors import RayExecutor

    ex = RayExecutor(["cpu0", "cpu1"], num_cpus=2)
    try:
        noop = ex.wait(ex.submit(NoopJob(), "cpu0"), 60)
        assert noop.kind == "done" and noop.result is not None and noop.result.slot == "cpu0"
        assert noop.result.cuda_visible_devices == ""
        ckpt = tmp_path / "r.pt"
        h = ex.submit(EvalJob(ARCH, 3, str(ckpt), "ray-run", SETTINGS, epoch_pause_s=0.4), "cpu1")
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ex.cancel(h, at_epoch_boundary=True)
        ev = ex.wait(h, 60)
        assert ev.kind == "cancelled" and ev.result is not None and 1 <= ev.result.epochs_done < 3
        done = ex.wait(ex.submit(EvalJob(ARCH, 3, str(ckpt), "ray-run", SETTINGS), "cpu0"), 60)
        assert done.kind == "done" and done.result is not None and done.result.epochs_done == 3
    finally:
        ex.shutdown()
