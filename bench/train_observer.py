"""Benchmark: training throughput with the daemon sampling at 100 Hz (and receiving markers) vs off, interleaved.

Alternates off/on rounds so drift in the machine's load hits both sides alike; each round runs
bench/train_throughput.py in a fresh process. The daemon is the real `jouled run` (estimate + the simulated
WT310 meter through pyvisa-sim: the sources this machine has) at --rate 100 with its embedded broker, and the
training publishes an epoch/phase marker pair every 10 steps to it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "train_observer.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_round(label: str, steps: int, mqtt_url: str | None, out: Path, threads: int) -> float:
    cmd = [sys.executable, str(REPO / "bench" / "train_throughput.py"), "--steps", str(steps), "--repeats", "1",
           "--label", label, "--output", str(out), "--threads", str(threads)]
    if mqtt_url:
        cmd += ["--mqtt-url", mqtt_url, "--marker-every", "10"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    data = json.loads(out.read_text())
    return float(data[label]["samples_per_s_median"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, every core)")
    ap.add_argument("--label", default="", help="key of this configuration in the results file")
    args = ap.parse_args()
    off: list[float] = []
    on: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        env = dict(os.environ, JOULED_MQTT_EMBEDDED_PORT=str(port), XDG_DATA_HOME=str(tmp))
        status = {}
        for i in range(args.rounds):
            off.append(one_round("off", args.steps, None, tmp / f"off{i}.json", args.threads))
            daemon = subprocess.Popen(
                [sys.executable, "-m", "jouled.cli", "run", "--config", str(REPO / "systemd" / "jouled-wt310-sim.toml"),
                 "--rate", str(args.rate), "--store", f"sqlite://{tmp}/obs.db"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(3)  # broker up, sources open
            try:
                on.append(one_round("on", args.steps, f"mqtt://127.0.0.1:{port}", tmp / f"on{i}.json", args.threads))
            finally:
                daemon.terminate()
                daemon.wait(30)
            status = json.loads((tmp / "obs.status.json").read_text())
            print(f"round {i}: off {off[-1]:.1f} samples/s, on {on[-1]:.1f} samples/s", flush=True)
    ratio = statistics.median(on) / statistics.median(off)
    res = {
        "what": "NB201 cell (C=16, N=1) training throughput on CPU, daemon off vs on",
        "daemon": f"jouled run --rate {args.rate} (estimate + simulated WT310 via pyvisa-sim, embedded amqtt broker)",
        "markers": "an epoch/phase marker pair every 10 steps while on",
        "rounds": args.rounds, "steps_per_round": args.steps,
        "torch_threads": args.threads or f"default ({os.cpu_count()} cores)",
        "off_samples_per_s": off, "on_samples_per_s": on,
        "on_over_off_median": round(ratio, 4), "goal": ">= 0.995",
        "daemon_markers_stored": status.get("markers", {}).get("stored"),
        "daemon_sources": {s["name"]: s["state"] for s in status.get("sources", [])},
    }
    print(json.dumps(res, indent=2))
    label = args.label or f"threads-{args.threads or 'default'}"
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "on_over_off_median" in out:  # an older single-configuration file
        out = {}
    out[label] = res
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
