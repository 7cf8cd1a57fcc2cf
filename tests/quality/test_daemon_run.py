"""`assess` and `compare` over what jouled's real daemon logged (tests/faults/shim_daemon.py: build_daemon and
run_daemon over the pynvml shim — only the GPU is fake): the GPUs' declared power limits, NVML's averaged power
extra, the counter and the instant power all reach the analysis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.model import Marker
from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.faults.procs import REPO, env_for

runner = CliRunner()
S = 1_000_000_000


def test_assess_and_compare_on_a_daemon_log(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    argv = [sys.executable, "-m", "tests.faults.shim_daemon", "--store", str(db), "--devices", "1", "--rate", "20",
            "--duration", "5"]
    res = subprocess.run(argv, cwd=REPO, env=env_for(tmp_path), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stdout.decode()[-2000:]
    st = SqliteStore(db)
    t0, t1 = st.time_range() or (0, 0)
    assert t1 - t0 > 3 * S
    # markers as a training would publish them: a run inside the sampled span (the 2 Hz counter's reads on both
    # sides of every edge), epochs of 0.5 s, 1 s and the rest
    a, b = t0 + S // 2, t1 - S
    cuts = [a, a + S // 2, a + 3 * S // 2, b]
    ms = [Marker(a, "faults", "d1", "run", "start", 0, gpus=("gpu0",))]
    for i in range(3):
        ms += [Marker(cuts[i], "faults", "d1", "epoch", "start", 1 + 2 * i, epoch=i, gpus=("gpu0",)),
               Marker(cuts[i + 1], "faults", "d1", "epoch", "end", 2 + 2 * i, epoch=i, gpus=("gpu0",))]
    ms.append(Marker(b, "faults", "d1", "run", "end", 7, gpus=("gpu0",)))
    st.write_markers(ms)
    st.close()
    url = sqlite_url(db)

    out = json.loads(runner.invoke(app, ["assess", "--run", "d1", "--store", url, "--format", "json"]).stdout)
    assert "declaration" in out["gpu_limits_from"]
    (rng,) = [f for f in out["findings"] if f["check"] == "gpu-power-range"]
    # the shim's GPU: 300 W constant, limits 200–700 W (tests/sources/nvml_shim.py)
    assert rng["numbers"]["limit_min_w"] == 200.0 and rng["numbers"]["limit_max_w"] == 700.0
    assert rng["numbers"]["p95_w"] == pytest.approx(300.0) and rng["verdict"] == "warn"
    (cov,) = [f for f in out["findings"] if f["check"] == "coverage" and f["subject"] == "nvml:gpu0"]
    assert cov["verdict"] == "ok" and cov["numbers"]["period_s"] == pytest.approx(0.05)

    cmp = json.loads(runner.invoke(app, ["compare", "--run", "d1", "--store", url, "--format", "json"]).stdout)
    assert cmp["truth"] == {"gpu": "nvml-counter"}
    durations = [(cuts[i + 1] - cuts[i]) / S for i in range(3)]
    for ep, d in zip(cmp["epochs"], durations, strict=True):
        for tool in ("nvml-counter", "nvml-power", "nvml-avg"):  # 300 W throughout, by every NVML reading
            assert ep["energy_j"][tool] == pytest.approx(300.0 * d, rel=0.02), (tool, ep)
