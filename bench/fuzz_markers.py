"""Benchmark: fuzz the marker parser, the recorder → store path and the CSV / line-protocol importers.

Each target runs N hypothesis-generated cases (generation only, no shrinking) through the real code:
``parse_marker`` on arbitrary bytes and hostile JSON (huge integers, lone surrogates, deep nesting, NaN,
over-long strings); ``MarkerRecorder.handle`` → a real SqliteStore, then a valid marker and a sample batch
that must still be stored (a failure there is a *wedge*); ``parse_samples`` / ``parse_markers`` whose
rows must then store. A *crash* is any exception other than the component's own rejection. Writes
bench/results/fuzz_markers.json with cases, crashes, wedges, rejections by kind and seconds per target.

    .venv/bin/python bench/fuzz_markers.py [--cases 10000] [--targets parser,recorder,import_samples,import_markers]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from jouled.store.sqlite import SqliteStore  # noqa: E402
from tests.reliability.fuzzing import (  # noqa: E402
    RecorderRig,
    check_import,
    check_parse,
    marker_texts,
    payloads,
    sample_texts,
)


def run_target(name: str, strategy: st.SearchStrategy[Any], case: Callable[[Any], str], n: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failures: list[str] = []
    stats = {"cases": 0, "crashes": 0, "wedges": 0}

    @settings(max_examples=n, deadline=None, phases=[Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def go(x: Any) -> None:
        stats["cases"] += 1
        try:
            counts[case(x)] += 1
        except AssertionError as e:  # the component survived, but the store no longer takes writes
            stats["wedges"] += 1
            if len(failures) < 5:
                failures.append(f"wedge: {str(e)[:300]}")
        except Exception as e:
            stats["crashes"] += 1
            if len(failures) < 5:
                failures.append(f"crash: {type(e).__name__}: {str(e)[:200]} | input {repr(x)[:200]}\n"
                                + "".join(traceback.format_exc(limit=3))[-600:])

    t0 = time.perf_counter()
    go()
    seconds = time.perf_counter() - t0
    out = {"target": name, **stats, "seconds": round(seconds, 1), "outcomes": dict(counts.most_common())}
    if failures:
        out["first_failures"] = failures
    print(f"{name}: {stats['cases']} cases, {stats['crashes']} crashes, {stats['wedges']} wedges, {seconds:.0f} s",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--targets", default="parser,recorder,import_samples,import_markers")
    ap.add_argument("--out", default=str(REPO / "bench/results/fuzz_markers.json"))
    args = ap.parse_args()
    targets = args.targets.split(",")
    results = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        if "parser" in targets:
            results.append(run_target("parse_marker", payloads, check_parse, args.cases))
        if "recorder" in targets:
            rig = RecorderRig(folder)

            def recorder_case(payload: bytes) -> str:
                before = dict(rig.rec.stats.rejected)
                rig.check(payload)
                after = rig.rec.stats.rejected
                kinds = [k for k in after if after[k] != before.get(k, 0)]
                return kinds[0] if kinds else "stored_or_duplicate"

            results.append(run_target("recorder_to_store", payloads, recorder_case, args.cases))
            stored = len(rig.store.read_markers("control"))
            results[-1]["control_markers_stored"] = stored
            rig.close()
        store = SqliteStore(folder / "imports.db")

        def importer(kind: str) -> Callable[[str], str]:
            def case(text: str) -> str:
                return "rows_with_errors" if check_import(text, kind, store) else "clean"
            return case

        if "import_samples" in targets:
            results.append(run_target("import_samples", sample_texts(), importer("samples"), args.cases))
        if "import_markers" in targets:
            results.append(run_target("import_markers", marker_texts(), importer("markers"), args.cases))
        store.close()
    report = {
        "benchmark": "fuzz_markers",
        "goals": {"crashes": 0, "wedges": 0, "cases_per_target": 10_000},
        "machine": {"python": platform.python_version(), "cpu": platform.machine(), "note": "2 cores shared with other jobs"},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
