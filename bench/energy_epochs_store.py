"""Benchmark `jouled energy epochs` end to end: a 24 h × 10 devices × 10 Hz log with 10,000 epochs in SQLite.

The log is read through a read-only store, as the command and the Python API open it. Times the three stages the
command runs (read the series from the store, window energy, row building) one at a time on one thread, and the
whole `compute_rows` call (which reads and computes the series on READ_THREADS threads), best of 3.

Also the command as a user runs it (`--format json`, `csv`, the table: a new process each) and the Python API
(`jouled.query.open(...).epochs(run)`, `.to_pandas()`).

`--before PATH` (a git worktree of older code) runs this script against that code (its `jouled` first on the path)
in a child process, alternating with this code's, `--rounds` times; each figure is the best over the rounds, so
drift of the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jouled.config import Config
from jouled.energy import prepare, window_energy_many
from jouled.model import Marker
from jouled.query import READ_THREADS, compute_rows, load_series
from jouled.rows import energy_rows
from jouled.store.sqlite import NS_PER_S, ChunkBatch, SeriesKey, SqliteStore
from jouled.windows import windows_from_markers

RESULTS = Path(__file__).parent / "results" / "energy_epochs_store.json"
T0 = 1_700_000_000 * NS_PER_S


def fill(store: SqliteStore, hours: float, devices: int, rate_hz: int) -> int:
    per_chunk = 8192
    n_total = int(hours * 3600 * rate_hz)
    step = NS_PER_S // rate_hz
    n = 0
    for c0 in range(0, n_total, per_chunk):
        idx = np.arange(c0, min(c0 + per_chunk, n_total), dtype=np.int64)
        batches = []
        for d in range(devices):
            src, dev = ("nvml", f"gpu{d}") if d < 8 else ("rapl", f"package-{d - 8}")
            p = 200.0 + 50.0 * np.sin(idx / 600.0 + d)
            e = 200.0 * idx / rate_hz  # a counter (approximate: the bench times, it does not check values)
            batches.append(ChunkBatch(SeriesKey("bench", src, dev), T0 + idx * step, p, e))
            n += idx.size
        store.write_batches(batches)
    return n


def markers(hours: float, epochs: int) -> list[Marker]:
    """The run's markers as the daemon stores them: each mapped onto its clock, with the sender's own wall time in
    attrs (`client_time_ns`, here 5 µs earlier)."""
    span = int(hours * 3600 * NS_PER_S)
    edges = T0 + np.linspace(0, span - NS_PER_S, epochs + 1).astype(np.int64)

    def mk(t: int, scope: str, event: str, seq: int, epoch: int | None = None) -> Marker:
        return Marker(t, "bench", "r", scope, event, seq, epoch=epoch, attrs={"client_time_ns": t - 5000})

    out = [mk(int(edges[0]), "run", "start", 0)]
    seq = 1
    for i in range(epochs):
        out.append(mk(int(edges[i]) + 1, "epoch", "start", seq, i))
        out.append(mk(int(edges[i + 1]), "epoch", "end", seq + 1, i))
        seq += 2
    out.append(mk(int(edges[-1]) + 1, "run", "end", seq))
    return out


def best(fn: Callable[[], Any], n: int = 3) -> float:
    """The fastest of n timed calls, in seconds."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure() -> dict[str, Any]:
    hours, devices, rate, epochs = 24.0, 10, 10, 10_000
    with tempfile.TemporaryDirectory() as d:
        st = SqliteStore(Path(d) / "b.db")
        n = fill(st, hours, devices, rate)
        st.write_markers(markers(hours, epochs))
        st.close()
        st = SqliteStore(Path(d) / "b.db", readonly=True)  # as `jouled energy` and the Python API open it
        cfg = Config()
        ms = st.read_markers("r")
        wins, _ = windows_from_markers(ms)
        wins = [w for w in wins if w.scope == "epoch"]
        lo, hi = wins[0].start_ns, wins[-1].end_ns
        t_read = best(lambda: load_series(st, "bench", lo, hi, cfg))
        series = load_series(st, "bench", lo, hi, cfg)
        starts = np.array([w.start_ns for w in wins])
        ends = np.array([w.end_ns for w in wins])
        t_energy = best(lambda: [window_energy_many(prepare(s), starts, ends) for s in series.values()])
        t_rows = best(lambda: energy_rows(wins, series))
        t_total = best(lambda: compute_rows(st, cfg, "r", ("epoch",)))
        rows, _ = compute_rows(st, cfg, "r", ("epoch",))
        api = api_s(Path(d) / "b.db", cfg)
        cli = {"json": cli_s(Path(d) / "b.db", "--format", "json"), "csv": cli_s(Path(d) / "b.db", "--format", "csv"),
               "table": cli_s(Path(d) / "b.db")}
    return {
        "log": {"hours": hours, "devices": devices, "rate_hz": rate, "samples": n, "epochs": epochs},
        "rows": len(rows),
        "seconds": {"read_series": round(t_read, 3), "window_energy_all_devices": round(t_energy, 3),
                    "energy_rows_incl_energy": round(t_rows, 3), "compute_rows_total": round(t_total, 3)},
        "cli_seconds": cli,
        "api_seconds": api,
    }


def api_s(db: Path, cfg: Config) -> dict[str, float | None]:
    """The Python API as a notebook calls it: `jouled.query.open(...).epochs(run)` (typed rows) and `.to_pandas()`
    (None without pandas), best of 2."""
    import jouled.query

    q = jouled.query.open(f"sqlite:///{db}", cfg)
    out: dict[str, float | None] = {"epochs": round(best(lambda: q.epochs("r"), 2), 3)}
    try:
        import pandas  # noqa: F401
    except ImportError:
        out["to_pandas"] = None
    else:
        rows = q.epochs("r")
        out["to_pandas"] = round(best(rows.to_pandas, 2), 3)
    return out


CLI_TIMEOUT_S = 60.0


def cli_s(db: Path, *args: str) -> float | None:
    """`jouled energy epochs --run r` as a user runs it (a new process: imports, query, output to a pipe), at 80
    columns, best of 2; None when it ran past CLI_TIMEOUT_S (the table of 100,000 rows once took minutes)."""
    times = []
    for _ in range(2):
        t = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-m", "jouled", "energy", "epochs", "--store", str(db), "--run", "r",
                            "--no-progress", *args], stdout=subprocess.DEVNULL, check=True,
                           env=_cli_env(), timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None
        times.append(time.perf_counter() - t)
    return round(min(times), 2)


def _cli_env() -> dict[str, str]:
    """80 columns, and .pyc files written (PYTHONDONTWRITEBYTECODE is set on this project's VM): the first of the
    two runs compiles what changed, the best of two then imports as an installed wheel does."""
    env = dict(os.environ, COLUMNS="80")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _best_of(runs: list[dict[str, Any]], what: str = "seconds") -> dict[str, float | None]:
    """Per figure, the best over the runs (None: every run timed out; absent in an older bench's runs: None)."""
    keys = {k for r in runs for k in r.get(what, {})}
    out: dict[str, float | None] = {}
    for k in sorted(keys):
        vals = [r[what][k] for r in runs if r.get(what, {}).get(k) is not None]
        out[k] = min(vals) if vals else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="a git worktree of older code, measured in the same run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)  # the --before child
    a = ap.parse_args()
    if a.json_only:
        print(json.dumps(measure()))
        return
    after: list[dict[str, Any]] = []
    before: list[dict[str, Any]] = []
    for _ in range(max(1, a.rounds) if a.before else 1):
        if a.before:
            # this very script against the older code (its jouled first on the path): the same measurement of both
            env = dict(os.environ, PYTHONPATH=str(a.before))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--json-only"],
                                 cwd=a.before, env=env, capture_output=True, text=True, check=True).stdout
            before.append(json.loads(out.strip().splitlines()[-1]))
        after.append(measure())
    res = dict(after[-1])
    res["seconds"] = _best_of(after)
    res["cli_seconds"] = _best_of(after, "cli_seconds")
    res["api_seconds"] = _best_of(after, "api_seconds")
    res["cli_timeout_s"] = CLI_TIMEOUT_S
    res.update({
        "goal_s": 0.5,
        "read_threads": READ_THREADS,
        "machine": f"{os.cpu_count()} cores",
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    })
    if a.before:
        res["before_same_run"] = {
            "code": subprocess.run(["git", "-C", str(a.before), "log", "-1", "--format=%h %s"], capture_output=True,
                                   text=True).stdout.strip()[:80] or str(a.before),
            "rounds": len(before), "how": "best of each round's best of 3, rounds alternating",
            "seconds": _best_of(before),
            "cli_seconds": _best_of(before, "cli_seconds"),
            "api_seconds": _best_of(before, "api_seconds"),
        }
        res["after_rounds"] = [r["seconds"] for r in after]
        res["before_rounds"] = [r["seconds"] for r in before]
    print(json.dumps(res, indent=2))
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
