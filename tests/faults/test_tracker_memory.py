"""Accepted-marker memory is bounded in bytes: the tracker keeps what pairing needs (never attrs) under a budget."""

from __future__ import annotations

import gc
import json
import tracemalloc

from jouled.markers import MAX_ATTRS_BYTES, MarkerTracker, parse_marker


def _payload(run: str, seq: int, pad: int) -> bytes:
    return json.dumps({"time": 10**18 + seq, "host": "h", "run": run, "scope": "phase",
                       "event": "start" if seq % 2 == 0 else "end", "seq": seq, "epoch": seq // 4,
                       "phase": "train", "attrs": {"pad": "x" * pad}}).encode()


def _grow(t: MarkerTracker, runs: int, per_run: int, pad: int) -> int:
    """Bytes the tracker holds after accepting runs × per_run markers (tracemalloc, the markers themselves freed)."""
    gc.collect()
    tracemalloc.start()
    try:
        b0 = tracemalloc.get_traced_memory()[0]
        for r in range(runs):
            for s in range(per_run):
                m = parse_marker(_payload(f"run-{r:04d}", s, pad), topic_host=None, now_ns=10**18, max_skew_s=1e9)
                t.accept(m)
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - b0)
    finally:
        tracemalloc.stop()


def test_attrs_are_not_kept() -> None:
    t = MarkerTracker()
    held = _grow(t, runs=1, per_run=150, pad=MAX_ATTRS_BYTES - 100)  # the 150 big markers (now ≤ 16 KiB)
    assert held < 150 * 1000, held  # ~250 B each, not 16 KiB each
    # dedup still compares the whole marker: same (run, seq) with other attrs is a clash, not a redelivery
    same = parse_marker(_payload("run-0000", 3, MAX_ATTRS_BYTES - 100), topic_host=None, now_ns=10**18, max_skew_s=1e9)
    other = parse_marker(_payload("run-0000", 3, 10), topic_host=None, now_ns=10**18, max_skew_s=1e9)
    assert t.check(same).status == "redelivery" and t.check(other).status == "rejected"


def test_byte_budget_evicts_whole_runs_least_recent_first() -> None:
    budget = 1_000_000
    t = MarkerTracker(budget_bytes=budget, max_runs=10**6)
    held = _grow(t, runs=40, per_run=400, pad=100)  # 16,000 markers: ~4 MB unbounded
    assert t.bytes <= budget and t.evicted_runs > 0
    assert held <= 1.5 * budget, held  # the estimate tracks real memory
    assert "run-0000" not in t._seen and "run-0039" in t._seen  # whole runs, the oldest first
    assert all(len(st.seqs) == 400 for st in t._seen.values())  # never half a run
