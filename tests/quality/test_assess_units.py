"""The pure parts of jouled.quality, on hand-computed inputs: Pearson, coverage, sparse epochs, GPU range, totals,
tool energies by bucket and CodeCarbon's emissions.csv."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest

from jouled.energy import SeriesArrays
from jouled.errors import UserError
from jouled.quality.assess import (
    coverage,
    gpu_range_findings,
    pearson,
    samples_findings,
    totals_findings,
    worst,
)
from jouled.quality.codecarbon import J_PER_KWH, parse_emissions
from jouled.quality.compare import EpochWindow, Interval, bucket_of, compare, interval_energy
from jouled.quality.svg import nice_ticks
from jouled.series import SeriesMeta

S = 1_000_000_000


def test_pearson_by_hand() -> None:
    # x = 1,2,3; y = 2,4,7: dx = -1,0,1; dy = -7/3,-1/3,8/3; sum dx*dy = 5; sum dx^2 = 2; sum dy^2 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert pearson([1, 2], [1, 2]) is None  # fewer than 3 pairs
    assert pearson([1, 2, 3], [5, 5, 5]) is None  # constant side
    assert pearson([1, 2, 3, float("nan")], [1, 2, 3, 9]) == pytest.approx(1.0)  # the NaN pair is left out


def test_coverage_counts_holes_longer_than_five_periods() -> None:
    t = np.array([1, 2, 3, 10, 11], dtype=np.int64) * S  # run [0, 12] s, period 1 s → holes > 5 s count
    cov, largest, holes = coverage(t, 0, 12 * S, 1.0)
    assert (cov, largest, holes) == (pytest.approx(1 - 7 / 12), pytest.approx(7.0), 1)
    assert coverage(np.array([], dtype=np.int64), 0, 10 * S, 1.0) == (0.0, 10.0, 1)
    # a hole at the run's edge counts too
    cov, largest, holes = coverage(np.array([8 * S], dtype=np.int64), 0, 10 * S, 1.0)
    assert (cov, largest, holes) == (pytest.approx(0.2), pytest.approx(8.0), 1)


def _row(dev: str, samples: int, method: str = "integral", src: str = "smi") -> dict[str, object]:
    return {"source": src, "device": dev, "samples": samples, "method": method, "flags": [], "epoch": 0, "phase": None,
            "start_ns": 0, "end_ns": 1, "energy_j": 1.0}


def test_sparse_epochs_verdicts() -> None:
    rows = [_row("a", n) for n in (12, 9, 30, 10)] + [_row("b", n, "counter", "nvml") for n in (3, 20)]
    rows += [_row("c", n) for n in [10] * 19 + [4]] + [_row("d", 10), _row("d", 11)]
    lost = _row("e", 2, "counter", "nvml")
    lost["flags"] = ["sparse"]  # the energy core: fewer counter reads than the counter's period promises
    rows += [lost, _row("e", 12, "counter", "nvml")]
    f = {x.subject: x for x in samples_findings(rows)}
    assert f["smi:a"].verdict == "fail" and f["smi:a"].numbers == {
        "epochs": 4, "samples_min": 9, "samples_median": 11.0, "samples_max": 30, "sparse_epochs": 1,
        "sparse_share": 0.25, "sparse_integrated_epochs": 1, "counter_epochs_missing_reads": 0, "coarse_epochs": 0}
    # 3 counter reads in an epoch, at the counter's own rate: exact, and said so
    assert f["nvml:b"].verdict == "ok" and "exact" in f["nvml:b"].why and f["nvml:b"].numbers["sparse_epochs"] == 1
    assert f["nvml:e"].verdict == "warn" and f["nvml:e"].numbers["counter_epochs_missing_reads"] == 1
    assert f["smi:c"].verdict == "warn" and f["smi:c"].numbers["sparse_share"] == 0.05  # 1 of 20 ≤ 10 %
    assert f["smi:d"].verdict == "ok"


def test_integrals_of_repeated_values_are_sparse() -> None:
    """50 reads at 100 Hz of a power the device updates every 100 ms: the core flags the integral sparse."""
    rows = [_row("gpu0", 50, "integral", "nvml") for _ in range(4)]
    rows[0]["flags"] = ["sparse"]
    (f,) = samples_findings(rows)
    assert f.verdict == "fail" and f.numbers["sparse_integrated_epochs"] == 1 and f.numbers["samples_min"] == 50


def test_coarse_counter_epochs_warn_then_fail() -> None:
    """Epochs shorter than 20 of the counter's own updates (the H200's 100 ms: under 2 s) are not exact."""
    def rows(coarse: int, total: int) -> list[dict[str, object]]:
        out = [_row("gpu0", 12, "counter", "nvml") for _ in range(total)]
        for r in out[:coarse]:
            r["flags"] = ["coarse"]
        return out

    (few,) = samples_findings(rows(1, 20))
    assert few.verdict == "warn" and few.numbers["coarse_epochs"] == 1 and "longer epochs" in few.why
    (many,) = samples_findings(rows(30, 30))
    assert many.verdict == "fail" and "30 of 30 epochs shorter than 20 updates" in many.why
    (none,) = samples_findings(rows(0, 5))
    assert none.verdict == "ok"


def _gpu(power: list[float], src: str = "nvml", comparison: bool = False) -> SeriesArrays:
    t = np.arange(len(power), dtype=np.int64) * S
    return SeriesArrays(t, np.array(power, dtype=float), np.full(len(power), np.nan), src, "gpu0", 1.0,
                        meta=SeriesMeta(role="gpu", device="gpu0", comparison=comparison))


def test_gpu_range_against_limits() -> None:
    s = _gpu([100.0 + i for i in range(101)])  # 100..200 W: p5 = 105, p95 = 195 (linear percentiles)
    smi = _gpu([400.0] * 101, "smi", comparison=True)  # the comparison series is not the one judged
    (f,) = gpu_range_findings({("nvml", "gpu0"): s, ("smi", "gpu0"): smi}, 0, 100 * S, {"*": (100.0, 300.0)})
    assert f.subject == "nvml:gpu0" and f.verdict == "warn"
    assert f.numbers == {"min_w": 100.0, "p5_w": 105.0, "p95_w": 195.0, "max_w": 200.0, "readings": 101,
                         "limit_min_w": 100.0, "limit_max_w": 300.0, "span_share": 0.45, "p95_of_max": 0.65}
    (f,) = gpu_range_findings({("nvml", "gpu0"): s}, 0, 100 * S, {"gpu0": (100.0, 260.0)})
    assert f.verdict == "ok" and f.numbers["span_share"] == pytest.approx(90 / 160, abs=1e-4)
    (f,) = gpu_range_findings({("nvml", "gpu0"): s}, 0, 100 * S, {})
    assert f.verdict == "warn" and "--gpu-limits" in f.why and "limit_min_w" not in f.numbers


def test_totals_name_estimates_and_host_wide() -> None:
    metas = {("estimate", "cpu"): SeriesMeta(role="cpu-estimate", kind="estimated", host_wide=True)}
    (f,) = totals_findings(["nvml:gpu0", "estimate:cpu"], metas)
    assert f.verdict == "warn" and f.numbers == {"total": ["nvml:gpu0", "estimate:cpu"], "estimated": ["estimate:cpu"],
                                                 "host_wide": ["estimate:cpu"]}
    assert totals_findings([], {})[0].verdict == "fail"
    assert worst([f]) == "warn"


def test_buckets_and_interval_spreading() -> None:
    assert [bucket_of(d) for d in (0.2, 0.5, 0.99, 1, 4.9, 5, 29, 30, 600)] == [
        "< 0.5 s", "0.5–1 s", "0.5–1 s", "1–5 s", "1–5 s", "5–30 s", "5–30 s", "30 s+", "30 s+"]
    ws = [EpochWindow(0, None, 0, 2 * S), EpochWindow(1, None, 2 * S, 3 * S), EpochWindow(2, None, 20 * S, 21 * S)]
    # 100 J over [0, 4] s: 50 J in the first window, 25 J in the second; nothing overlaps the third
    e = interval_energy([Interval(0, 4 * S, 100.0)], ws)
    assert e[:2] == [50.0, 25.0] and math.isnan(e[2])


def test_compare_truths_and_errors() -> None:
    # nvml: 100 W and a counter at 10 Hz; smi: 120 W; 2 windows of 1 s and 10 s
    t = np.arange(0, 111, dtype=np.int64) * (S // 10)
    nv = SeriesArrays(t, np.full(t.size, 100.0), 100.0 * t / S, "nvml", "gpu0", 0.1,
                      meta=SeriesMeta(role="gpu", device="gpu0"))
    smi = SeriesArrays(t, np.full(t.size, 120.0), np.full(t.size, np.nan), "smi", "gpu0", 0.1,
                       meta=SeriesMeta(role="gpu", device="gpu0", comparison=True))
    ws = [EpochWindow(0, None, 0, S), EpochWindow(1, None, S, 11 * S)]
    c = compare(ws, {("nvml", "gpu0"): nv, ("smi", "gpu0"): smi})
    assert c.truth == {"gpu": "nvml-counter"}  # no wall meter: the host group has no truth, the jouled total no error
    assert c.energy_j["nvml-counter"] == pytest.approx([100.0, 1000.0])
    assert c.error_pct("smi") == pytest.approx([20.0, 20.0])
    b = {(x["bucket"], x["tool"]): x for x in c.buckets}
    assert b[("1–5 s", "smi")]["max_abs_error_pct"] == pytest.approx(20.0)
    assert b[("5–30 s", "nvml-power")]["max_abs_error_pct"] == pytest.approx(0.0)
    assert all(math.isnan(x) for x in c.error_pct("jouled"))


def test_compare_says_where_its_truth_is_coarse() -> None:
    """An NVML counter the driver updates every 100 ms is coarse in epochs under 2 s: the buckets count them."""
    t = np.arange(0, 111, dtype=np.int64) * (S // 10)
    nv = SeriesArrays(t, np.full(t.size, 100.0), 100.0 * t / S, "nvml", "gpu0", 0.1,
                      meta=SeriesMeta(role="gpu", device="gpu0", counter_update_s=0.1))
    smi = SeriesArrays(t, np.full(t.size, 120.0), np.full(t.size, np.nan), "smi", "gpu0", 0.1,
                       meta=SeriesMeta(role="gpu", device="gpu0", comparison=True))
    ws = [EpochWindow(0, None, 0, S), EpochWindow(1, None, S, 11 * S)]
    c = compare(ws, {("nvml", "gpu0"): nv, ("smi", "gpu0"): smi})
    assert c.coarse_below_s == {"nvml-counter": pytest.approx(2.0)}
    b = {(x["bucket"], x["tool"]): x for x in c.buckets}
    assert b[("1–5 s", "smi")]["truth_coarse_epochs"] == 1 and b[("5–30 s", "smi")]["truth_coarse_epochs"] == 0
    nv_unknown = SeriesArrays(t, nv.power_w, nv.energy_j, "nvml", "gpu0", 0.1, meta=SeriesMeta(role="gpu", device="gpu0"))
    assert compare(ws, {("nvml", "gpu0"): nv_unknown}).coarse_below_s == {}


def _local(ts: str) -> int:
    return int(datetime.fromisoformat(ts).astimezone().timestamp()) * S


def test_codecarbon_cumulative_rows_become_intervals() -> None:
    kwh = 1 / J_PER_KWH
    text = ("timestamp,project_name,run_id,duration,emissions,energy_consumed,cpu_energy,gpu_energy,ram_energy\n"
            f"2024-05-01T12:00:02,p,x,2,0,{800 * kwh},{100 * kwh},{600 * kwh},{100 * kwh}\n"
            f"2024-05-01T12:00:10,p,x,10,0,{4000 * kwh},{500 * kwh},{3000 * kwh},{500 * kwh}\n")
    iv = parse_emissions(text)
    t0 = _local("2024-05-01T12:00:00")
    assert [(i.start_ns - t0, i.end_ns - t0) for i in iv["total"]] == [(0, 2 * S), (2 * S, 10 * S)]
    assert [i.energy_j for i in iv["total"]] == pytest.approx([800.0, 3200.0])
    assert [i.energy_j for i in iv["gpu"]] == pytest.approx([600.0, 2400.0])
    assert [i.energy_j for i in iv["cpu"]] == pytest.approx([200.0, 800.0])  # cpu + ram


def test_codecarbon_bad_files_are_one_line() -> None:
    with pytest.raises(UserError, match=r"energy_consumed.*missing"):
        parse_emissions("timestamp,duration\n2024-05-01T00:00:00,1\n")
    with pytest.raises(UserError, match="line 2"):
        parse_emissions("timestamp,duration,energy_consumed\nyesterday,1,0.1\n")
    with pytest.raises(UserError, match="no rows"):
        parse_emissions("timestamp,duration,energy_consumed\n")


def test_nice_ticks() -> None:
    assert nice_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(95, 205, 6) == [100, 120, 140, 160, 180, 200]


def test_analysis_modules_do_no_io() -> None:
    """assess, compare, svg, report and data take numbers and give findings/text: no store, file or network
    module is imported by them, directly or through another jouled module they import (load.py is the reader)."""
    from tests.test_import_rules import io_reached

    assert io_reached({"jouled.quality.assess", "jouled.quality.compare", "jouled.quality.svg",
                       "jouled.quality.report", "jouled.quality.data"}) == []
