"""Simulator, issue 13: every GPU-second charged, truth reaches the search, no future in `forecast`,
to_target math by hand, supernet/checkpoint/released accounting, clean hours across zones."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from jouled.carbon.trace import Trace, load_trace
from jouled.scheduler.simulator import (
    ALL_METHODS,
    GPU_S_KINDS,
    RunResult,
    SimConfig,
    hv_loss_pct,
    report,
    simulate,
    space_hv_max,
    start_time_s,
    to_target,
)
from jouled.scheduler.space import Benchmark
from tests.simulator.test_simulator import T0, _cfg, _tiny_bench, _trace


def test_every_gpu_second_is_charged_once(bench: Benchmark, de_trace_path: Path) -> None:
    """For every method: sampling + evaluation + idle + released GPU-seconds = G x hours, and the energy is
    exactly Σ power x GPU-seconds of each kind (checkpoints are evaluation time)."""
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=4, hours=20)
    for method in ALL_METHODS:
        r = simulate(method, tr, bench, 2, cfg)
        g = r.gpu_s
        assert set(g) == set(GPU_S_KINDS)
        total = g["sampling"] + g["evaluation"] + g["idle"] + g["released"]
        assert total == pytest.approx(4 * 20 * 3600.0), method
        assert g["checkpoint"] <= g["evaluation"] + 1e-9
        e_j = (
            cfg.sampling_power_w * g["sampling"] + cfg.evaluation_power_w * g["evaluation"]
            + cfg.idle_power_w * g["idle"] + cfg.released_power_w * g["released"]
        )
        assert r.energy_kwh == pytest.approx(e_j / 3.6e6), method
        # the carbon is that energy at intensities the trace actually had in those hours
        i0 = int(np.searchsorted(tr.time_s, r.start_s))
        ci = tr.g_per_kwh[i0 : i0 + 20]
        assert r.energy_kwh * ci.min() - 1e-6 <= r.carbon_kg * 1000 <= r.energy_kwh * ci.max() + 1e-6, method
    # vanilla never samples nor idles; cenas releases GPUs in dirty hours instead of idling them
    v = simulate("vanilla", tr, bench, 2, cfg)
    assert v.gpu_s["sampling"] == 0 and v.gpu_s["released"] == 0 and v.samples == 0


def test_supernet_is_trained_before_any_sample() -> None:
    """2 sampling GPUs, 7200 GPU-s an hour; supernet = 250 epochs of the slowest cell (5400 s / 200 epochs)
    = 6750 GPU-s, so hour 1 scores nothing; 1000 GPU-s per sample: 7 after hour 2, 14 after hour 3."""
    cfg = _cfg(gpus=2, hours=3, supernet_epochs=250.0)
    r = simulate("oneshot", _trace([100, 200, 400]), _tiny_bench(60, 5400.0, 1000.0), 0, cfg)
    assert cfg.supernet_s(_tiny_bench(60, 5400.0, 1000.0)) == pytest.approx(6750.0)
    assert r.samples_series.tolist() == [0, 7, 14]
    assert r.gpu_s["sampling"] == pytest.approx(3 * 7200.0)  # supernet time is sampling-power time
    assert r.energy_kwh == pytest.approx(1.5)


def test_checkpoint_is_charged_when_a_paused_training_resumes() -> None:
    """The clean-hour policy over [100, 900, 100] g/kWh, known at once (a trace as long as the run starts at T0).

    1 GPU, 2-hour trainings, no supernet, 1 cell per 10 s to score. Hour 1 (100 <= p50 of {100}) works: it
    scores the 20 cells (200 s) and idles the rest; hour 2 (900 > p50 of {100, 900} = 500) is released; hour 3
    (100) trains. No training was running at the release, so nothing pauses."""
    bench = _tiny_bench(20, 7200.0, 10.0)
    cfg = _cfg(gpus=1, hours=3, checkpoint_s=120.0)
    r = simulate("cenas", _trace([100, 900, 100]), bench, 0, cfg)
    assert r.gpus_released_series.tolist() == [0, 1, 0]
    assert r.gpus_sampling_series.tolist() == [1, 0, 0]
    assert r.gpus_evaluation_series.tolist() == [0, 0, 1]
    g = r.gpu_s
    assert g["released"] == 3600.0 and g["sampling"] == pytest.approx(200.0) and g["idle"] == pytest.approx(3400.0)
    assert r.carbon_kg * 1000 == pytest.approx((250 * 200 * 100 + 50 * 3400 * 100 + 300 * 3600 * 100) / 3.6e6)
    # now a training IS running when a dirty hour comes: it pauses and pays the checkpoint on resume
    r2 = simulate("cenas", _trace([100, 100, 900, 100]), bench, 0, _cfg(gpus=1, hours=4, checkpoint_s=120.0))
    assert r2.gpus_released_series.tolist() == [0, 0, 1, 0]
    assert r2.pauses >= 1 and r2.gpu_s["checkpoint"] == pytest.approx(120.0)
    # hour 2 trains 3600 s of a 7200-s job; hour 4 resumes it: 3600 s + 120 s of checkpoint → not finished yet
    assert r2.evaluations == 0
    assert r2.gpu_s["evaluation"] == pytest.approx(2 * 3600.0)


def test_truth_reaches_the_search(bench: Benchmark, de_trace_path: Path) -> None:
    """With one-shot estimates that rank cells BACKWARDS, a search that hears true results still finds a good
    front (the estimates only order its first trainings); the seed's design, which trains what the estimates
    rank best and never hears the truth, cannot. Fails with the old one-shot-only evaluation."""
    liar = dataclasses.replace(bench, one_shot_acc_pct=100.0 - bench.test_acc_pct, source_dir="liar")
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=8, hours=24)
    hv_max = space_hv_max(bench)
    truth = simulate("static", tr, liar, 0, cfg)
    seed = simulate("cenas-seed", tr, liar, 0, cfg)
    assert hv_loss_pct(truth.hv, hv_max) < 1.0
    assert hv_loss_pct(seed.hv, hv_max) > 3.0
    # and the same estimates with the same trainings give the same result: the truth is what changed the outcome
    assert simulate("static", tr, liar, 0, cfg).hv == truth.hv


@pytest.mark.parametrize("method", ["forecast", "cenas", "cenas-seed", "static", "random"])
def test_no_future_in_decisions(bench: Benchmark, de_trace_path: Path, method: str) -> None:
    """Perturbing the trace from `cut` on changes no decision taken before the cut's value could be known
    (the hour's intensity is known one hour late), nor the carbon charged before the cut."""
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=8, hours=16)
    start = start_time_s(tr, 5, cfg)
    cut = start + 8 * 3600.0
    v = tr.g_per_kwh.copy()
    fut = tr.time_s >= cut
    v[fut] = np.where(np.arange(fut.sum()) % 2 == 0, 5000.0, 1.0)
    changed = Trace(time_ns=tr.time_ns, g_per_kwh=v, path=tr.path, column=tr.column)
    a, b = simulate(method, tr, bench, 5, cfg), simulate(method, changed, bench, 5, cfg)
    known = 9  # decisions at start + 0..8 h see values up to start + 7 h
    for field in ("gpus_sampling_series", "gpus_evaluation_series", "gpus_released_series", "intensity_series"):
        assert getattr(a, field)[:known].tolist() == getattr(b, field)[:known].tolist(), (method, field)
    assert np.array_equal(a.carbon_kg_series[:8], b.carbon_kg_series[:8])
    assert not np.array_equal(a.carbon_kg_series[8:], b.carbon_kg_series[8:])


def test_forecast_oracle_does_see_the_future(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=8, hours=16)
    start = start_time_s(tr, 5, cfg)
    v = tr.g_per_kwh.copy()
    fut = tr.time_s >= start + 3600.0
    v[fut] = np.where(np.arange(fut.sum()) % 2 == 0, 5000.0, 1.0)
    changed = Trace(time_ns=tr.time_ns, g_per_kwh=v, path=tr.path, column=tr.column)
    a, b = simulate("forecast-oracle", tr, bench, 5, cfg), simulate("forecast-oracle", changed, bench, 5, cfg)
    assert a.gpus_sampling_series[:2].tolist() != b.gpus_sampling_series[:2].tolist()


def _hand_run(events: list[tuple[float, float]], carbon_kg: list[float], hv_max: float, seed: int = 0) -> RunResult:
    n = len(carbon_kg)
    z = np.zeros(n)
    zi = np.zeros(n, dtype=np.int64)
    return RunResult(
        method="m", seed=seed, start_s=0.0, hv=events[-1][1] if events else 0.0, carbon_kg=carbon_kg[-1],
        energy_kwh=0.0, evaluations=0, samples=0, time_h=np.arange(1, n + 1, dtype=np.float64),
        hv_series=z, carbon_kg_series=np.asarray(carbon_kg), energy_kwh_series=z, evaluations_series=zi,
        samples_series=zi, gpus_sampling_series=zi, intensity_series=z, hv_events=events, front_cells=[],
        hv_max=hv_max,
    )


def test_to_target_by_hand() -> None:
    """hv_max 1000: 0.1 % loss = HV 999, 0.05 % = 999.5. HV reaches 999.2 at 1.5 h, 999.6 at 3.25 h; carbon
    2, 4, 10, 12 kg at the hour ends → 3 kg at 1.5 h, 10.5 kg at 3.25 h (linear within the hour)."""
    r = _hand_run([(1800.0, 990.0), (5400.0, 999.2), (11700.0, 999.6)], [2.0, 4.0, 10.0, 12.0], 1000.0)
    assert to_target(r, 0.1) == (pytest.approx(3.0), pytest.approx(1.5))
    assert to_target(r, 0.05) == (pytest.approx(10.5), pytest.approx(3.25))
    assert to_target(r, 0.01) == (math.inf, math.inf)
    assert hv_loss_pct(999.6, 1000.0) == pytest.approx(0.04)


def test_to_target_in_the_report_counts_reached_seeds(tmp_path: Path) -> None:
    van = [_hand_run([(3600.0, 999.6)], [5.0, 10.0], 1000.0, s) for s in (0, 1)]
    m = [_hand_run([(1800.0, 999.6)], [1.0, 2.0], 1000.0, 0), _hand_run([(3600.0, 990.0)], [1.0, 2.0], 1000.0, 1)]
    for r in van:
        r.method = "vanilla"
    for r in m:
        r.method = "cenas"
    tr = _trace([100.0, 100.0])
    doc = {d["method"]: d for d in report({"vanilla": van, "cenas": m}, tr, _cfg(gpus=1, hours=2))}
    t = doc["cenas"]["to_target"][0]
    assert t["loss_pct"] == 0.1 and t["reached"] == 1
    assert t["carbon_kg"]["mean"] == pytest.approx(0.5) and t["hours"]["mean"] == pytest.approx(0.5)
    assert t["carbon_ratio_vanilla_over_method"]["mean"] == pytest.approx(5.0 / 0.5)  # seed 0 only: paired
    assert doc["vanilla"]["to_target"][1]["reached"] == 2
    assert doc["cenas"]["hv_max"] == 1000.0
    assert doc["cenas"]["hv_loss_pct"]["mean"] == pytest.approx((0.04 + 1.0) / 2)
    assert doc["cenas"]["equal_time"]["carbon_ratio_vanilla_over_method"]["mean"] == pytest.approx(5.0)


def test_two_zones_clean_hours_work_only_in_the_clean_zone() -> None:
    """Zone A at 100, zone B at 500 g/kWh, 1 GPU each, intensity known at once: the pooled p50 is 300, so A
    works (scores 20 cells x 100 s, idles the rest of hour 1, then trains) and B is released throughout."""
    a = Trace.from_seconds(T0 + 3600.0 * np.arange(4), np.full(4, 100.0), path="A", zone="A")
    b = Trace.from_seconds(T0 + 3600.0 * np.arange(4), np.full(4, 500.0), path="B", zone="B")
    r = simulate("cenas", [a, b], _tiny_bench(20, 5400.0, 100.0), 0, _cfg(gpus=1, hours=3))
    assert r.gpus_released_series.tolist() == [1, 1, 1]
    assert r.gpus_sampling_series.tolist() == [1, 0, 0] and r.gpus_evaluation_series.tolist() == [0, 1, 1]
    expected_g = (250 * 2000 + 50 * 1600) * 100 / 3.6e6 + 2 * 300 * 3600 * 100 / 3.6e6
    assert r.carbon_kg * 1000 == pytest.approx(expected_g)
    assert r.evaluations == 1  # a 5400-s training started in hour 2 ends in hour 3


def test_cenas_is_paced_to_half_the_hours_over_the_search(bench: Benchmark, de_trace_path: Path) -> None:
    """`cenas` works the cleanest hours by its trailing window, paced so that half of the search's hours have
    worked by its end whatever the weather of that week; unpaced, the worked share is whatever the window gives."""
    trace = load_trace(de_trace_path)
    cfg = dataclasses.replace(SimConfig(), hours=72.0)
    paced = simulate("cenas", trace, bench, 3, cfg)
    worked = int((paced.gpus_released_series == 0).sum())
    assert abs(worked - 36) <= 1, worked
    loose = simulate("cenas", trace, bench, 3, dataclasses.replace(cfg, pace=False))
    assert not np.array_equal(loose.gpus_released_series, paced.gpus_released_series)
