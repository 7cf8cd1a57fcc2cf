"""Benchmark `jouled assess` and `jouled report` on a 24 h run at 10 Hz × 10 devices (8.64 M samples, 10,000 epochs).

The log is filled as bench/energy_epochs_store.py fills it (8 GPUs with power and a counter, 2 RAPL packages). Times
what each command does after parsing its options, on one process: `assess` = read the run through the query core
(energy rows of every epoch and the run, the samples, the NVML extras) + the checks; `report` = the same read +
assess + compare + the HTML page. Best of 2; the page's size is reported too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # the fill of energy_epochs_store.py

from energy_epochs_store import fill, markers  # type: ignore[import-not-found]

from jouled.config import Config
from jouled.quality.load import assess_run, compare_run, load_run
from jouled.quality.report import render_report
from jouled.store.sqlite import SqliteStore

RESULTS = Path(__file__).parent / "results" / "assess_report.json"


def best(fn: Callable[[], Any], n: int = 2) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    hours, devices, rate, epochs = 24.0, 10, 10, 10_000
    cfg = Config()
    with tempfile.TemporaryDirectory() as d:
        st = SqliteStore(Path(d) / "b.db")
        t = time.perf_counter()
        n = fill(st, hours, devices, rate)
        st.write_markers(markers(hours, epochs))
        t_fill = time.perf_counter() - t

        t_load, data = best(lambda: load_run(st, cfg, "r", "100:300"))
        t_assess, findings = best(lambda: assess_run(load_run(st, cfg, "r", "100:300")))
        t_checks, _ = best(lambda: assess_run(data))
        t_report, html = best(lambda: _report(st, cfg))
        t_compare, _ = best(lambda: compare_run(data))
        st.close()
    res = {
        "log": {"hours": hours, "devices": devices, "rate_hz": rate, "samples": n, "epochs": epochs},
        "findings": len(findings),
        "seconds": {"assess": round(t_assess, 2), "report": round(t_report, 2), "read_run": round(t_load, 2),
                    "assess_checks_only": round(t_checks, 2), "compare_only": round(t_compare, 2)},
        "report_kib": len(html) // 1024,
        "fill_s": round(t_fill, 1),
        "machine": f"{os.cpu_count()} cores (shared with other work while it ran)",
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(res, indent=2))
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


def _report(st: SqliteStore, cfg: Config) -> str:
    data = load_run(st, cfg, "r", "100:300")
    return render_report(data, assess_run(data), compare_run(data))


if __name__ == "__main__":
    main()
