"""`jouled nas search` (search_command): one-line errors for bad input, and a short real run with the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app  # the real `jouled` command: `nas search` is mounted there
from jouled.store.sqlite import SqliteStore
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
    (["--start", "99999"], "outside the trace"),
    (["--no-daemon"], "--no-daemon"),
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
    assert doc["decisions"][0]["gpus_evaluation"] == 2  # the clean hour: every slot evaluates
    assert doc["evaluations"] >= 1
    store = SqliteStore(db)
    assert store.read_allocations(doc["search"])[0].gpus_evaluation == 2
    # the real daemon (estimate source on this machine) measured the finished evaluation
    assert any(r["energy_j"] is not None and r["energy_j"] > 0 for r in doc["evaluated"] if r["finished"]), doc
