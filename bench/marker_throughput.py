"""Benchmark: marker throughput through Mosquitto and amqtt, and the cost a training loop pays per marker.

For each broker: N markers (``with r.phase(...)`` pairs inside one run) published by MarkerClient as fast
as a loop can, received by a paho subscriber; markers/s from the first mark to the last receipt, and the
number lost. Caller cost: the enter+exit time of ``with r.phase(...)`` (two markers), p50/p99/max, once in
that tight loop (the background thread competes for the GIL) and once paced at one phase per millisecond
(closer to a training loop). Writes bench/results/marker_throughput.json.

    .venv/bin/python bench/marker_throughput.py [--n 20000] [--brokers mosquitto,amqtt]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jouled.markers import MarkerTracker, parse_marker  # noqa: E402
from jouled.trainer.markers import MarkerClient  # noqa: E402
from tests.brokers import Subscriber, start_amqtt, start_mosquitto  # noqa: E402


def pct(sorted_ns: list[int], q: float) -> float:
    i = min(len(sorted_ns) - 1, round(q * (len(sorted_ns) - 1)))
    return sorted_ns[i] / 1000.0


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    return {"p50_us": round(pct(s, 0.5), 2), "p99_us": round(pct(s, 0.99), 2), "max_us": round(s[-1] / 1000.0, 1),
            "n": len(s)}


def run_broker(name: str, n: int) -> dict[str, Any]:
    broker = start_mosquitto() if name == "mosquitto" else start_amqtt()
    sub = Subscriber(broker.port)
    spool = Path(tempfile.mkdtemp(prefix="jouled-bench-spool-"))
    try:
        client = MarkerClient(broker.url, host="bench", spool_path=spool)
        pairs = n // 2
        cost_ns: list[int] = []
        pc = time.perf_counter_ns
        r = client.run("bench-tight")
        t0 = time.perf_counter()
        for i in range(pairs):
            a = pc()
            with r.phase("train", epoch=i):
                pass
            cost_ns.append(pc() - a)
        t_enqueued = time.perf_counter() - t0
        delivered = client.flush(300)
        t_acked = time.perf_counter() - t0
        payloads = sub.wait_for(pairs * 2, timeout_s=120)
        t_received = time.perf_counter() - t0
        tracker = MarkerTracker()
        now = time.time_ns()
        unique = sum(
            tracker.accept(parse_marker(p, topic_host=None, now_ns=now, max_skew_s=600)).status == "accepted"
            for p in payloads
        )
        # paced: one phase (two markers) per millisecond, the broker idle otherwise
        paced_ns: list[int] = []
        rp = client.run("bench-paced")
        for i in range(2000):
            a = pc()
            with rp.phase("train", epoch=i):
                pass
            paced_ns.append(pc() - a)
            while pc() - a < 1_000_000:
                pass
        client.close(60)
        return {
            "broker": name,
            "markers": pairs * 2,
            "received_messages": len(payloads),
            "unique_received": unique,
            "lost": pairs * 2 - min(unique, pairs * 2),
            "all_acked": delivered,
            "enqueue_s": round(t_enqueued, 3),
            "all_acked_s": round(t_acked, 3),
            "all_received_s": round(t_received, 3),
            "markers_per_s": round(pairs * 2 / t_received, 1),
            "phase_enter_exit_tight": summary_us(cost_ns),
            "phase_enter_exit_paced_1ms": summary_us(paced_ns),
        }
    finally:
        sub.close()
        broker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--brokers", default="mosquitto,amqtt")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "marker_throughput.json")
    args = ap.parse_args()
    results = []
    for name in args.brokers.split(","):
        res = run_broker(name.strip(), args.n)
        print(json.dumps(res))
        results.append(res)
    doc = {
        "benchmark": "marker_throughput",
        "goals": {"markers_per_s": 2000, "lost": 0, "phase_enter_exit_p99_us": 100},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "note": "2 cores shared with other jobs"},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
