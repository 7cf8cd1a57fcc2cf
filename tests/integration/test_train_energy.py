"""End to end: a real torch training on CPU publishes markers to the daemon; `jouled energy epochs` reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.query import wait_complete
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon

torch = pytest.importorskip("torch")


def test_training_markers_give_energy_per_epoch(tmp_path: Path) -> None:
    from jouled.trainer.data import load_data
    from jouled.trainer.markers import MarkerClient
    from jouled.trainer.models import build_model
    from jouled.trainer.nb201_arch import EXAMPLE_ARCH_STR
    from jouled.trainer.train import train

    port = free_port()
    cfg = make_config(tmp_path, "", embedded_port=port)
    gpu = ScriptedSource("nvml", devices=1)  # a GPU's NVML readings at 100 W (no GPU here)
    gpu.devices = ["gpu0"]
    bg = start_daemon(cfg, [gpu])
    try:
        data = load_data("digits", None, 64, seed=0)
        net = build_model(f"nb201:{EXAMPLE_ARCH_STR}", data.num_classes, data.in_channels, data.image_size,
                          channels=4, cells_per_stage=1)
        client = MarkerClient(f"mqtt://127.0.0.1:{port}", host="testhost", spool_path=tmp_path / "spool")
        result = train(net, data, 2, "cpu", client, arch=EXAMPLE_ARCH_STR, gpus=["gpu0"], max_batches=8)
        assert client.close(timeout_s=10.0)
        rec = bg.daemon.recorder
        import time

        deadline = time.monotonic() + 10
        while rec.stats.stored < 14 and time.monotonic() < deadline:  # run 2 + 2 epochs × (epoch 2 + 2 phases × 2)
            time.sleep(0.05)
        last_ns = max(m.time_ns for m in bg.daemon.store.read_markers(result.run_id))
        wait_complete(bg.daemon.store, last_ns, 10, host="testhost")  # the samples after the last edge are logged
    finally:
        bg.stop()
    assert rec.stats.stored == 14 and not rec.stats.rejected
    res = CliRunner().invoke(app, ["energy", "epochs", "--run", result.run_id, "--format", "json",
                                   "--store", f"sqlite:///{cfg.store.path}", "--scope", "all"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    epochs = [r for r in rows if r["scope"] == "epoch" and r["device"] == "gpu0"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    for r in epochs:
        assert r["method"] == "counter"
        # the fake GPU draws 100 W: the epoch's energy is 100 W × its duration
        assert r["energy_j"] == pytest.approx(100.0 * r["duration_s"], rel=0.02)
    phases = [r for r in rows if r["scope"] == "phase" and r["device"] == "gpu0"]
    assert {r["phase"] for r in phases} == {"train", "eval"}
    run_row = next(r for r in rows if r["scope"] == "run")
    assert run_row["energy_j"] == pytest.approx(sum(r["energy_j"] for r in epochs), rel=0.05)
    runs = CliRunner().invoke(app, ["energy", "runs", "--format", "json", "--store", f"sqlite:///{cfg.store.path}"])
    assert runs.exit_code == 0, runs.output
    assert json.loads(runs.output)[0]["run"] == result.run_id


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "jouled.cli", "demo", "--epochs", "2", "--store",
                        f"sqlite:///{tmp_path}/demo.db"], capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "energy per epoch" in p.stdout
    res = CliRunner().invoke(app, ["energy", "runs", "--format", "json", "--store", f"sqlite:///{tmp_path}/demo.db"])
    assert res.exit_code == 0
    run = json.loads(res.output)[0]
    assert run["energy_j"] > 0
    lines = p.stderr.splitlines()
    # the closing hint is one line at any width (rich wrapped it mid-command at 80 columns), so it pastes whole
    assert f"  jouled energy epochs --run {run['run']} --store sqlite:///{tmp_path}/demo.db --format json" in lines
    # each source's state once, as the demo's own "  source …" line, not also as the sampler's log warning
    assert not [ln for ln in lines if ln.startswith("source ") and " unavailable: " in ln]
    # the estimate source runs beside whatever this machine measures (here: nothing else)
    assert any(k.startswith("estimate:") for k in run["energy_j_by_device"])
    ep = CliRunner().invoke(app, ["energy", "epochs", "--run", run["run"], "--format", "json",
                                  "--store", f"sqlite:///{tmp_path}/demo.db"])
    rows = json.loads(ep.output)
    assert sorted({r["epoch"] for r in rows}) == [0, 1]
    assert all("sparse" not in r["flags"] for r in rows if r["source"] == "estimate")
