"""Benchmark: a 30 s disk-full window under a running daemon (issue 9) — markers and samples lost, catch-up time.

    python bench/disk_full.py [--full-s 30]     # needs root (mounts a small tmpfs); results in bench/results/disk_full.json

A real daemon (8 scripted devices at 100 Hz, embedded broker, real recorder and store) logs onto a real 16 MB
tmpfs. The filesystem is filled to ENOSPC, a marker pair per second is published for --full-s seconds (plus QoS-1
redeliveries of the first few), then the space is freed. Counted: markers stored of those sent (goal: all),
samples stored vs samples the sources delivered (goal: all — they wait in memory), the store errors seen during
the window and the first real error text, and seconds from "space freed" to "everything stored".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.brokers import free_port  # bench reuses the test harness: same real parts
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.reliability.helpers import fill, marker, publish, tiny_tmpfs, wait_for

RESULTS = Path(__file__).parent / "results" / "disk_full.json"


def run(full_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, tiny_tmpfs(Path(tmp) / "fs", "16m") as fs:
        port = free_port()
        cfg = make_config(fs, "", embedded_port=port)
        cfg.daemon.status_path = str(Path(tmp) / "status.json")  # the runtime dir, not the full filesystem
        src = ScriptedSource(devices=8)
        d = start_daemon(cfg, [src], rate_hz=100)
        try:
            rec = d.daemon.recorder
            wait_for(lambda: d.daemon.store_health.written > 0)
            filler = fill(fs)
            t_full = time.monotonic()
            sent_payloads: list[dict[str, Any]] = []
            epoch = 0
            while time.monotonic() - t_full < full_s:
                pair = [marker(2 * epoch, "start", epoch=epoch), marker(2 * epoch + 1, "end", epoch=epoch)]
                publish(port, list(pair))
                sent_payloads += pair
                epoch += 1
                time.sleep(max(0.0, t_full + epoch - time.monotonic()))
            sent = len(sent_payloads)
            publish(port, list(sent_payloads[:4]))  # QoS-1 redeliveries (the same payloads) of markers still pending
            during = {"store": dict(d.daemon.status()["store"]), "markers": rec.stats.as_dict()}
            filler.unlink()
            t_free = time.monotonic()
            wait_for(lambda: rec.stats.stored >= sent and rec.stats.pending == 0 and not d.daemon._pending,
                     timeout_s=120, what="catch-up after the disk-full window")
            catch_up_s = time.monotonic() - t_free
        finally:
            final = d.stop()
        stored = d.daemon.store.read_markers("r1")
        samples_stored = d.daemon.store.count_samples()
        # every read and every marker-triggered counter read gives one reading per device
        delivered = (src.reads + src.counter_reads) * len(src.devices)
        _ = final
    return {
        "full_window_s": full_s,
        "markers_sent": sent,
        "markers_stored": len(stored),
        "markers_lost": sent - len({m.seq for m in stored}),
        "redeliveries_recognised": rec.stats.duplicates,
        "samples_stored": samples_stored,
        "samples_delivered_by_sources": delivered,
        "store_write_errors_during": during["store"].get("write_errors"),
        "first_error_during": during["store"].get("last_error"),
        "markers_pending_during": during["markers"].get("pending"),
        "markers_dropped": rec.stats.dropped,
        "catch_up_s": round(catch_up_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-s", type=float, default=30.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/disk_full.py mounts a tmpfs: run it as root")
    load = os.getloadavg()[0]
    res = run(a.full_s)
    res["loadavg_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
