"""`jouled train` as a typer command: metrics out, one-line errors with exit code 2, markers to a real broker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from jouled.cli_common import make_app
from jouled.trainer.nb201 import EXAMPLE_ARCH_STR
from jouled.trainer.train_cli import train_command

MOSQUITTO = "/usr/sbin/mosquitto"
FAST = ["--channels", "4", "--cells", "1", "--max-batches", "2", "--batch-size", "32"]


def _app() -> typer.Typer:
    app = make_app()  # jouled's group: a UserError is one line and exit 2, as when mounted in jouled
    app.command("train")(train_command)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `train` a subcommand, as when mounted in jouled
        return None

    return app


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULED_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("JOULED_CONFIG", raising=False)
    monkeypatch.delenv("JOULED_MQTT_URL", raising=False)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(_app(), ["train", *args], env={"COLUMNS": "200"})


def test_json_metrics_and_resume(tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    r = _invoke("--epochs", "2", "--no-markers", "--format", "json", "--checkpoint", str(ckpt), "--run-id", "cli-1", *FAST)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["run_id"] == "cli-1" and out["arch"] == EXAMPLE_ARCH_STR and out["dataset"] == "digits"
    assert [e["epoch"] for e in out["epochs"]] == [0, 1]
    assert all(e["train_samples"] == 64 for e in out["epochs"])  # 2 batches of 32
    assert ckpt.exists()
    # Same checkpoint, more epochs is a different run: refused with the fix.
    r = _invoke("--epochs", "3", "--no-markers", "--checkpoint", str(ckpt), *FAST)
    assert r.exit_code == 2
    assert "pass --epochs 2" in r.output


def test_table_output() -> None:
    r = _invoke("--epochs", "1", "--no-markers", "--dataset", "synthetic", "--image-size", "8", *FAST)
    assert r.exit_code == 0, r.output
    assert "train loss" in r.stdout and "samples/s" in r.stdout
    assert "run train-" in r.stdout  # a fresh run id when none is given
    rows = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("│") and "0.1000" in ln]
    assert len(rows) == 1  # epoch 0 at the initial learning rate


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arch", "|nor_conv_3x3~0|"], "arch_str"),
        (["--model", "nb201:|x~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "unknown op 'x'"),
        (["--model", "regnet:depth=2"], "missing"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--dataset", "cifar10"], "CIFAR-10 not found"),
        (["--device", "tpu"], "unknown device"),
        (["--format", "xml"], "--format"),
    ],
)
def test_bad_input_is_a_one_line_user_error(args: list[str], fragment: str) -> None:
    r = _invoke("--no-markers", *args)
    assert r.exit_code == 2, r.output
    assert fragment in r.output
    assert "Traceback" not in r.output


def test_cuda_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = _invoke("--no-markers", "--device", "cuda")
    assert r.exit_code == 2
    assert "CUDA not available — use --device cpu" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    if not Path(MOSQUITTO).exists() and shutil.which("mosquitto") is None:
        pytest.skip("mosquitto not installed")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = MOSQUITTO if Path(MOSQUITTO).exists() else str(shutil.which("mosquitto"))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mosquitto did not start")
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_markers_reach_a_real_broker(mosquitto: int) -> None:
    pytest.importorskip("jouled.trainer.markers")
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}")
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("jouled/v1/+/markers", qos=1)
    sub.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    sub.on_message = lambda c, u, msg: got.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", mosquitto)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        r = _invoke("--epochs", "2", "--run-id", "mq-1", "--mqtt-url", f"mqtt://127.0.0.1:{mosquitto}", *FAST)
        assert r.exit_code == 0, r.output
        deadline = time.monotonic() + 10
        while len(got) < 14 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    mine = sorted((m for m in got if m["run"] == "mq-1"), key=lambda m: m["seq"])
    seen = [(m["scope"], m["event"], m.get("epoch"), m.get("phase")) for m in mine]
    expected: list[tuple[Any, ...]] = [("run", "start", None, None)]
    for ep in (0, 1):
        expected += [
            ("epoch", "start", ep, None),
            ("phase", "start", ep, "train"),
            ("phase", "end", ep, "train"),
            ("phase", "start", ep, "eval"),
            ("phase", "end", ep, "eval"),
            ("epoch", "end", ep, None),
        ]
    expected.append(("run", "end", None, None))
    assert seen == expected
    assert all(m["arch"] == EXAMPLE_ARCH_STR for m in mine)
    times = [m["time"] for m in mine]
    assert times == sorted(times)


def test_no_broker_spools_the_markers(tmp_path: Path) -> None:
    """Without a broker the training still runs; its markers wait in the spool for the next client."""
    pytest.importorskip("jouled.trainer.markers")
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    r = _invoke("--epochs", "1", "--run-id", "nb-1", "--mqtt-url", f"mqtt://127.0.0.1:{port}", *FAST)
    assert r.exit_code == 0, r.output
    assert time.monotonic() - t0 < 30
    assert "spooled" in r.output
    lines = [json.loads(ln) for f in (tmp_path / "spool").glob("*.jsonl") for ln in f.read_text().splitlines() if ln]
    assert sum(1 for m in lines if m["run"] == "nb-1") == 8  # run, epoch and 2 phases: start + end each


def test_train_samples_sizes_the_synthetic_set_and_caps_digits() -> None:
    fast = ["--channels", "4", "--cells", "1", "--batch-size", "32", "--no-markers", "--format", "json", "--epochs", "1"]
    r = _invoke("--dataset", "synthetic", "--train-samples", "96", "--image-size", "8", *fast)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epochs"][0]["train_samples"] == 96  # 3 batches of 32: the set is 96, not 1024
    r = _invoke("--dataset", "digits", "--train-samples", "40", *fast)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["epochs"][0]["train_samples"] == 40
    r = _invoke("--dataset", "synthetic", "--train-samples", "0", *fast)
    assert r.exit_code == 2 and "--train-samples" in r.output
