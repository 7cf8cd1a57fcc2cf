"""``jouled markers send``: delivery with PUBACK, spooling when the broker is down, persisted seqs, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.markers import parse_marker
from jouled.model import Marker
from jouled.trainer.markers_cli import markers_app
from tests.brokers import BrokerHandle, Subscriber, free_port

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JOULED_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def received(sub: Subscriber, n: int) -> list[Marker]:
    now = time.time_ns()
    return [parse_marker(p, topic_host=None, now_ns=now, max_skew_s=60) for p in sub.wait_for(n)]


def send(*args: str, url: str, spool: Path) -> tuple[int, str, str]:
    r = runner.invoke(markers_app, ["send", *args, "--url", url, "--spool-dir", str(spool), "--host", "h1"])
    return r.exit_code, r.stdout, r.stderr


def test_send_delivers_and_counts_seq_per_run(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.port)
    try:
        code, out, _ = send("--run", "r1", "--scope", "run", "--event", "start", "--arch", "vit", "--gpus",
                            "gpu0,gpu1", "--attrs", '{"lr": 0.1}', url=mosquitto.url, spool=tmp_path)
        assert code == 0 and out.startswith("sent r1 run start seq=0"), out
        code, out, _ = send("--run", "r1", "--scope", "phase", "--event", "start", "--epoch", "3", "--phase",
                            "calibrate:idle", "--time", "2024-05-29T16:26:40.5Z", url=mosquitto.url, spool=tmp_path)
        assert code == 0 and "seq=1" in out
        code, out, _ = send("--run", "r2", "--scope", "epoch", "--event", "start", "--epoch", "0",
                            url=mosquitto.url, spool=tmp_path)
        assert code == 0 and "seq=0" in out
        got = received(sub, 3)
    finally:
        sub.close()
    assert [(m.run, m.seq) for m in got] == [("r1", 0), ("r1", 1), ("r2", 0)]
    assert got[0].gpus == ("gpu0", "gpu1") and got[0].arch == "vit" and got[0].attrs == {"lr": 0.1}
    assert got[1].time_ns == 1_717_000_000_500_000_000 and got[1].phase == "calibrate:idle" and got[1].epoch == 3
    assert all(m.host == "h1" for m in got)


def test_send_with_broker_down_spools_then_next_send_delivers_both(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    code, out, err = send("--run", "r1", "--scope", "epoch", "--event", "start", "--epoch", "0", "--timeout", "0.5",
                          url=dead, spool=tmp_path)
    assert code == 0 and out == ""
    assert err.startswith("spooled r1 epoch 0 start seq=0") and err.count("\n") == 1, err
    code, _, _ = send("--run", "r1", "--scope", "epoch", "--event", "end", "--epoch", "0", "--timeout", "0.5",
                      "--require-delivery", url=dead, spool=tmp_path)
    assert code == 1
    sub = Subscriber(mosquitto.port)
    try:
        code, out, _ = send("--run", "r1", "--scope", "run", "--event", "end", url=mosquitto.url, spool=tmp_path)
        assert code == 0 and "and 2 spooled earlier" in out, out
        got = received(sub, 3)
    finally:
        sub.close()
    assert [(m.scope, m.event, m.seq) for m in got] == [("epoch", "start", 0), ("epoch", "end", 1), ("run", "end", 2)]
    assert not list(tmp_path.glob("*.jsonl"))


def test_explicit_seq_moves_the_counter_on(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.port)
    try:
        assert send("--run", "r", "--scope", "run", "--event", "start", "--seq", "41",
                    url=mosquitto.url, spool=tmp_path)[0] == 0
        assert send("--run", "r", "--scope", "run", "--event", "end", url=mosquitto.url, spool=tmp_path)[0] == 0
        got = received(sub, 2)
    finally:
        sub.close()
    assert [m.seq for m in got] == [41, 42]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scope", "batch", "--event", "start"], "--scope: 'batch' is not one of run, epoch, phase"),
        (["--scope", "epoch", "--event", "stop", "--epoch", "1"], "--event: 'stop' is not one of start, end"),
        (["--scope", "epoch", "--event", "start"], "--epoch: required"),
        (["--scope", "phase", "--event", "start", "--epoch", "1"], "--phase: required"),
        (["--scope", "run", "--event", "start", "--time", "noon"], "--time 'noon'"),
        (["--scope", "run", "--event", "start", "--attrs", "{x"], "--attrs: not valid JSON"),
        (["--scope", "run", "--event", "start", "--attrs", "[1]"], "--attrs: expected an object"),
        (["--scope", "run", "--event", "start", "--seq", "-2"], "--seq: must be ≥ 0"),
        (["--scope", "run", "--event", "start", "--timeout", "0"], "--timeout 0.0: must be > 0"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], needle: str, tmp_path: Path) -> None:
    r = runner.invoke(markers_app, ["send", "--run", "r1", *args, "--url", "mqtt://127.0.0.1:1", "--spool-dir",
                                    str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "seq").exists() or not any((tmp_path / "seq").iterdir()), "a bad marker takes no seq"


def test_bad_url_is_a_one_line_error(tmp_path: Path) -> None:
    r = runner.invoke(markers_app, ["send", "--run", "r1", "--scope", "run", "--event", "start", "--url",
                                    "http://broker", "--spool-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown scheme 'http'" in r.stderr


def test_send_as_a_subprocess(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.port)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jouled.trainer.markers_cli", "send", "--run", "sh-1", "--scope", "epoch",
             "--event", "start", "--epoch", "7", "--url", mosquitto.url, "--spool-dir", str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JOULED_DAEMON_HOST": "envhost"},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("sent sh-1 epoch 7 start seq=0")
        got = received(sub, 1)
    finally:
        sub.close()
    assert (got[0].host, got[0].epoch) == ("envhost", 7)  # [daemon] host from the environment
