"""`jouled nas search` (search_command): one-line errors for bad input, and a short real run with the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app  # the real `jouled` command: `nas search` is mounted there
from jouled.store.sqlite import SqliteStore
from tests.conftest import needs_nas_data
from tests.live.conftest import SEARCH_G_PER_KWH

runner = CliRunner()


@pytest.mark.parametrize(("args", "needle"), [
    (["--provider", "nope"], "--provider 'nope'"),
    (["--provider", "trace"], "--trace FILE"),
    (["--gpus", "gpu7"], "--gpus 'gpu7'"),
    (["--gpus", "0,1"], "--devices 0,1"),  # --gpus is a count; the slots go to --devices
    (["--devices", "gpu7"], "--devices 'gpu7'"),
    (["--devices", "cpu:0"], "cpu:N needs N"),
    (["--gpus", "2", "--devices", "cpu:2"], "pass one"),
    (["--zone", "FR"], "pass --zone DE"),
    (["--hours", "0"], "--hours 0.0"),
    (["--format", "xml"], "--format 'xml'"),
    (["--executor", "slurm"], "--executor 'slurm'"),
    (["--policy", "magic"], "magic"),
    (["--method", "cenas:3"], "--method 'cenas:3'"),
    (["--start", "99999"], "outside the trace"),
    pytest.param(["--no-daemon"], "--no-daemon", marks=needs_nas_data),  # checked after the tables load
])
def test_bad_input_is_one_line(tmp_path: Path, trace_file: Path, args: list[str], needle: str) -> None:
    base = ["nas", "search", "--provider", "trace", "--trace", str(trace_file), "--zone", "DE",
            "--store", f"sqlite:///{tmp_path}/s.db"]
    # later options win: each case overrides one of the good ones
    if args == ["--provider", "trace"]:
        base = ["nas", "search", "--store", f"sqlite:///{tmp_path}/s.db"]
    res = runner.invoke(app, base + args, env={"JOULED_CONFIG": "", "JOULED_MQTT_URL": ""})
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_search_command_runs_with_its_own_daemon(tmp_path: Path, trace_file: Path, nas_data: Path) -> None:
    pytest.importorskip("torch")
    db = tmp_path / "search.db"
    res = runner.invoke(app, [
        "nas", "search", "--provider", "trace", "--trace", str(trace_file), "--zone", "DE", "--devices", "cpu:2",
        "--hours", "1", "--speedup", "150", "--epochs", "2", "--max-batches", "2", "--channels", "4", "--cells", "1",
        "--max-evaluations", "1", "--data", str(nas_data), "--work-dir", str(tmp_path / "work"),
        "--store", f"sqlite:///{db}", "--format", "json",
    ], env={"JOULED_CONFIG": "", "XDG_DATA_HOME": str(tmp_path)})
    assert res.exit_code == 0, res.output[-3000:]
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["decisions"][0]["intensity_g_per_kwh"] == SEARCH_G_PER_KWH[0]
    # the clean hour (the default method, cenas): every slot works, one scores cells for the prior
    assert (doc["decisions"][0]["gpus_sampling"], doc["decisions"][0]["gpus_evaluation"]) == (1, 1)
    assert doc["evaluations"] >= 1
    store = SqliteStore(db)
    assert store.read_allocations(doc["search"])[0].gpus_evaluation == 1
    # the real daemon (estimate source on this machine) measured the finished evaluation
    assert any(r["energy_j"] is not None and r["energy_j"] > 0 for r in doc["evaluated"] if r["finished"]), doc


def test_search_uses_the_daemon_already_logging_to_the_store(tmp_path: Path, trace_file: Path, nas_data: Path) -> None:
    """A daemon (`jouled run`, its own process) holds the store: the search attaches to it (its broker, from the same
    config) instead of starting a second one, and leaves it running; the daemon records the evaluation's markers."""
    pytest.importorskip("torch")
    import os
    import subprocess
    import sys

    from jouled.daemonproc import lock_holder
    from tests.brokers import free_port

    db = tmp_path / "shared.db"
    conf = tmp_path / "jouled.toml"
    conf.write_text(f'[mqtt]\nembedded_port = {free_port()}\n[store]\npath = "{db}"\n')
    env = {**os.environ, "JOULED_CONFIG": str(conf), "XDG_DATA_HOME": str(tmp_path), "JOULED_STORE": ""}
    env.pop("JOULED_MQTT_URL", None)
    status = tmp_path / "daemon.status.json"
    daemon = subprocess.Popen([sys.executable, "-m", "jouled", "run", "--config", str(conf)],
                              env={**env, "JOULED_DAEMON_STATUS_PATH": str(status)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import time

        deadline = time.monotonic() + 60
        while not (status.exists() and json.loads(status.read_text() or "{}").get("markers", {}).get("connected")):
            assert daemon.poll() is None, daemon.stderr.read().decode() if daemon.stderr else ""
            assert time.monotonic() < deadline, "daemon did not come up"
            time.sleep(0.1)
        assert lock_holder(db) == daemon.pid
        res = runner.invoke(app, [
            "nas", "search", "--config", str(conf), "--provider", "trace", "--trace", str(trace_file), "--zone",
            "DE", "--devices", "cpu:2", "--hours", "1", "--speedup", "150", "--epochs", "1", "--max-batches", "2",
            "--channels", "4", "--cells", "1", "--max-evaluations", "1", "--data", str(nas_data),
            "--work-dir", str(tmp_path / "work"), "--format", "json",
        ], env={"JOULED_CONFIG": str(conf), "XDG_DATA_HOME": str(tmp_path), "JOULED_STORE": ""})
        assert res.exit_code == 0, res.output[-3000:]
        assert f"daemon pid {daemon.pid} (running)" in res.stderr
        assert daemon.poll() is None  # an attached daemon is not ours to stop
        doc = json.loads(res.stdout[res.stdout.index("{"):])
        assert doc["evaluations"] >= 1
        assert SqliteStore(db).read_markers(), "the running daemon recorded no marker"
    finally:
        daemon.terminate()
        daemon.wait(30)
