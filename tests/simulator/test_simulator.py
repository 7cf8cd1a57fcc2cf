"""Simulator: carbon/energy accounting on hand-made traces, checkpointed trainings, determinism, no future leak."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from jouled.carbon.trace import Trace, load_trace
from jouled.errors import UserError
from jouled.scheduler.hypervolume import hypervolume_2d, pareto_mask
from jouled.scheduler.simulator import (
    SimConfig,
    report,
    run_many,
    simulate,
    start_time_s,
)
from jouled.scheduler.space import Benchmark

T0 = 1_700_000_000.0  # any UTC instant; whole hours apart below


def _cfg(**kw: object) -> SimConfig:
    """Settings for the by-hand cases: no supernet, intensity known at once, free checkpoints (tested apart)."""
    base: dict[str, object] = {"supernet_epochs": 0.0, "intensity_latency_s": 0.0, "checkpoint_s": 0.0}
    return SimConfig(**{**base, **kw})  # type: ignore[arg-type]


def _tiny_bench(n: int, train_s: float, sample_s: float) -> Benchmark:
    """n synthetic cells with constant costs, so every GPU-second can be counted by hand."""
    rng = np.random.default_rng(0)
    ops = np.array([np.unravel_index(i, (5,) * 6) for i in range(n)], dtype=np.int64)
    acc = rng.uniform(50, 95, n)
    return Benchmark(
        arch_strs=tuple(str(i) for i in range(n)),
        ops=ops,
        index_by_code=np.arange(n, dtype=np.int64),
        test_acc_pct=acc,
        one_shot_acc_pct=acc * 0.8,
        few_shot_acc_pct=acc * 0.8,
        energy_mj=rng.uniform(10, 45, n),
        train_time_s=np.full(n, train_s),
        sample_time_s=np.full(n, sample_s),
        source_dir="synthetic",
    )


def _trace(values: list[float], step_s: float = 3600.0) -> Trace:
    t = T0 + step_s * np.arange(len(values), dtype=np.float64)
    return Trace.from_seconds(t, np.asarray(values, dtype=np.float64), path="hand-made")


def _write_csv(path: Path, values: list[float], step_s: float = 3600.0) -> Path:
    rows = ["time_s,intensity_g_per_kwh"] + [f"{T0 + i * step_s:.0f},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_vanilla_three_hours_by_hand(tmp_path: Path) -> None:
    """2 GPUs train 1.5-hour jobs for 3 h at 100, 200, 400 g/kWh, 300 W each.

    Energy 2 x 300 W x 3 h = 1.8 kWh; carbon 0.6 kWh x (100 + 200 + 400) g/kWh = 420 g.
    Each GPU finishes a job at 1.5 h and 3.0 h (the first one paused across the hour boundary).
    """
    tr = load_trace(_write_csv(tmp_path / "t.csv", [100, 200, 400]))
    cfg = _cfg(gpus=2, hours=3)
    r = simulate("vanilla", tr, _tiny_bench(60, 5400.0, 1000.0), 0, cfg)
    assert r.start_s == T0
    assert r.energy_kwh == pytest.approx(1.8)
    assert r.carbon_kg == pytest.approx(0.420)
    assert r.evaluations == 4 and r.samples == 0
    assert r.evaluations_series.tolist() == [0, 2, 4]
    assert r.carbon_kg_series.tolist() == pytest.approx([0.06, 0.18, 0.42])


def test_oneshot_sampling_by_hand() -> None:
    """2 GPUs sample at 250 W, 1000 GPU-s per sample: 7200 GPU-s per hour → 21 samples in 3 h.

    Energy 2 x 250 W x 3 h = 1.5 kWh; carbon 0.5 kWh x 700 g/kWh = 350 g.
    """
    r = simulate("oneshot", _trace([100, 200, 400]), _tiny_bench(60, 5400.0, 1000.0), 0, _cfg(gpus=2, hours=3))
    assert r.samples == 21 and r.evaluations == 0
    assert r.samples_series.tolist() == [7, 14, 21]  # the 0.2-sample remainder carries over
    assert r.energy_kwh == pytest.approx(1.5)
    assert r.carbon_kg == pytest.approx(0.350)


def test_idle_power_and_sub_hourly_intensity_by_hand() -> None:
    """10 cells x 1000 GPU-s on 2 sampling GPUs: hour 1 busy, hour 2 busy 1400 s per GPU then idle, hour 3 idle.

    30-minute trace [100, 100, 200, 600, 400, 400]: hour 2's busy time falls in its 200 g/kWh half.
    Carbon (W · s · g/kWh / 3.6e6):
      hour 1: 2 x 250 x 3600 x 100 = 50 g
      hour 2: 2 x (250 x 1400 x 200 + 50 x (400 x 200 + 1800 x 600)) = 71.111 g
      hour 3: 2 x 50 x 3600 x 400 = 40 g
    Energy: 0.5 + 2 x (250 x 1400 + 50 x 2200) / 3.6e6 + 0.1 kWh.
    """
    tr = _trace([100, 100, 200, 600, 400, 400], step_s=1800.0)
    r = simulate("oneshot", tr, _tiny_bench(10, 5400.0, 1000.0), 0, _cfg(gpus=2, hours=3))
    assert r.samples == 10
    expected_g = 50.0 + 2 * (250 * 1400 * 200 + 50 * (400 * 200 + 1800 * 600)) / 3.6e6 + 40.0
    assert r.carbon_kg == pytest.approx(expected_g / 1000.0)
    assert r.energy_kwh == pytest.approx(0.5 + 2 * (250 * 1400 + 50 * 2200) / 3.6e6 + 0.1)


def test_static_split_pauses_and_resumes_trainings() -> None:
    """static:0.5 on 2 GPUs: one trains, one samples. A 1.5 h job finishes in hour 2, the next at 3.0 h."""
    bench = _tiny_bench(60, 5400.0, 1000.0)
    r = simulate("static:0.5", _trace([100, 100, 100, 100]), bench, 0, _cfg(gpus=2, hours=3))
    assert r.gpus_sampling_series.tolist() == [1, 1, 1]
    assert r.evaluations == 2
    assert r.samples == 10  # 3 x 3600 / 1000 = 10.8
    assert r.energy_kwh == pytest.approx((300 + 250) * 3 / 1000)
    assert r.carbon_kg == pytest.approx((300 + 250) * 3 * 100 / 1e6)


def test_carbon_integral_is_exact_for_steps() -> None:
    tr = _trace([100, 300], step_s=1800.0)
    assert tr.integral_s(T0, T0 + 3600) == pytest.approx(100 * 1800 + 300 * 1800)
    assert tr.integral_s(T0 + 900, T0 + 2700) == pytest.approx(100 * 900 + 300 * 900)


def test_every_gpu_second_is_charged(bench: Benchmark, de_trace_path: Path) -> None:
    """Whatever the split, energy lies between all-idle and all-at-the-highest power, for G x hours."""
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=4, hours=12)
    for method in ("cenas-seed", "random", "oneshot", "vanilla"):  # cenas releases GPUs: test_honest
        r = simulate(method, tr, bench, 1, cfg)
        lo, hi = 4 * 12 * 50 / 1000, 4 * 12 * 300 / 1000
        assert lo <= r.energy_kwh <= hi + 1e-9
        ci = tr.intensity_g_per_kwh
        i0 = int(np.searchsorted(tr.time_s, r.start_s))
        assert r.carbon_kg * 1000 <= r.energy_kwh * ci[i0 : i0 + 12].max() + 1e-6
        assert r.carbon_kg * 1000 >= r.energy_kwh * ci[i0 : i0 + 12].min() - 1e-6


def test_deterministic_per_seed_and_seeds_start_apart(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=4, hours=24)
    a, b = simulate("cenas", tr, bench, 3, cfg), simulate("cenas", tr, bench, 3, cfg)
    assert a.start_s == b.start_s and a.hv == b.hv and a.carbon_kg == b.carbon_kg
    assert np.array_equal(a.hv_series, b.hv_series) and a.front_cells == b.front_cells
    starts = {start_time_s(tr, s, cfg) for s in range(10)}
    assert len(starts) == 10
    assert all(tr.start_s <= s <= tr.end_s - cfg.horizon_s for s in starts)
    # every method of one seed starts at the same point (paired comparison)
    assert simulate("vanilla", tr, bench, 3, cfg).start_s == a.start_s


def test_cenas_does_not_see_the_future_but_the_oracle_does(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=8, hours=16)
    start = start_time_s(tr, 5, cfg)
    cut = start + 8 * 3600.0
    v = tr.intensity_g_per_kwh.copy()
    future = tr.time_s >= cut
    v[future] = np.where(np.arange(future.sum()) % 2 == 0, 5000.0, 1.0)  # a wild future
    changed = Trace(time_ns=tr.time_ns, g_per_kwh=v, path=tr.path, column=tr.column)
    for method in ("cenas", "random", "static:0.3", "threshold:30"):
        a, b = simulate(method, tr, bench, 5, cfg), simulate(method, changed, bench, 5, cfg)
        assert a.gpus_sampling_series[:8].tolist() == b.gpus_sampling_series[:8].tolist(), method
        assert np.array_equal(a.carbon_kg_series[:8], b.carbon_kg_series[:8]), method
        assert np.array_equal(a.hv_series[:8], b.hv_series[:8]), method
        assert not np.array_equal(a.carbon_kg_series[8:], b.carbon_kg_series[8:]), method  # the future did change
    o1, o2 = simulate("oracle", tr, bench, 5, cfg), simulate("oracle", changed, bench, 5, cfg)
    assert o1.gpus_sampling_series[:8].tolist() != o2.gpus_sampling_series[:8].tolist()


def test_hv_counts_truly_evaluated_cells(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=8, hours=12)
    r = simulate("cenas", tr, bench, 0, cfg)
    assert r.hv == pytest.approx(hypervolume_2d(bench.true_objectives(r.front_cells)))
    assert r.evaluations > 0 and r.samples > 0
    assert all(b >= a for a, b in zip(r.hv_series, r.hv_series[1:], strict=False))
    o = simulate("oneshot", tr, bench, 0, cfg)
    # one-shot: the cells it picks are the estimated front; it is judged by their TRUE objectives
    est = bench.estimated_objectives(o.front_cells)
    assert pareto_mask(est).all()
    assert o.hv == pytest.approx(hypervolume_2d(bench.true_objectives(o.front_cells)))
    assert o.evaluations == 0 and o.samples > 0


def test_short_trace_is_a_user_error() -> None:
    with pytest.raises(UserError, match="fewer than --hours"):
        simulate("cenas", _trace([100, 200]), _tiny_bench(20, 100.0, 1.0), 0, SimConfig(gpus=1, hours=5))


def test_report_keys_and_paired_metrics(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=4, hours=8)
    runs = run_many(["vanilla", "cenas"], tr, bench, [0, 1], cfg)
    doc = report(runs, tr, cfg)
    assert [d["method"] for d in doc] == ["vanilla", "cenas"]
    for d in doc:
        assert d["seeds"] == 2 and d["gpus"] == 4 and d["trace"] == str(de_trace_path)
        for k in ("hv", "carbon_kg", "energy_kwh", "evaluations", "samples"):
            assert set(d[k]) == {"mean", "std"}
        assert d["hv_ref_point"] == [0.0, -50.0]
        assert "hwnas_fpga_energy_mj_derived" in d["objectives"][1] and "stand-in" in d["objectives"][1]
    van = runs["vanilla"]
    assert doc[0]["hv"]["mean"] == pytest.approx(np.mean([r.hv for r in van]))
    assert doc[0]["hv"]["std"] == pytest.approx(np.std([r.hv for r in van], ddof=1))
    # vanilla reaches 99 % of its own final HV, so its carbon to get there is finite and <= its total
    assert doc[0]["reached_99pct_vanilla_hv"] == 2
    assert doc[0]["carbon_kg_to_99pct_vanilla_hv"]["mean"] <= doc[0]["carbon_kg"]["mean"] + 1e-9
    # at CE-NAS's carbon budget, CE-NAS's HV is its final HV
    assert doc[1]["hv_at_equal_carbon"]["mean"] == pytest.approx(doc[1]["hv"]["mean"])


@pytest.mark.slow
def test_worker_processes_give_identical_results(bench: Benchmark, de_trace_path: Path) -> None:
    tr = load_trace(de_trace_path)
    cfg = SimConfig(gpus=4, hours=6)
    one = run_many(["cenas", "oneshot"], tr, bench, [0, 1], cfg, jobs=1)
    two = run_many(["cenas", "oneshot"], tr, bench, [0, 1], cfg, jobs=2)
    for m in one:
        assert [r.hv for r in one[m]] == [r.hv for r in two[m]]
        assert [r.carbon_kg for r in one[m]] == [r.carbon_kg for r in two[m]]
        assert not math.isnan(one[m][0].carbon_kg)


def test_two_zones_place_evaluation_in_the_cleaner_zone_by_hand() -> None:
    """Zones A, B with 1 GPU each; static:0.5 → one training GPU, placed in the cleaner zone each hour.

    A = [100, 400, 100], B = [300, 200, 300] g/kWh. Hours 1 and 3: train in A (300 W x 100), sample in B
    (250 W x 300) = 105 g each; hour 2: train in B (300 x 200) + sample in A (250 x 400) = 160 g. Total 370 g.
    """
    a = Trace.from_seconds(T0 + 3600.0 * np.arange(3), np.array([100.0, 400.0, 100.0]), path="A", zone="A")
    b = Trace.from_seconds(T0 + 3600.0 * np.arange(3), np.array([300.0, 200.0, 300.0]), path="B", zone="B")
    r = simulate("static:0.5", [a, b], _tiny_bench(60, 5400.0, 1000.0), 0, _cfg(gpus=1, hours=3))
    assert r.carbon_kg == pytest.approx(0.370)
    assert r.energy_kwh == pytest.approx((300 + 250) * 3 / 1000)
    assert r.evaluations == 2 and r.samples == 10
    # the decision saw the best intensity available at each hour
    assert r.intensity_series.tolist() == [100.0, 200.0, 100.0]


def test_zones_must_share_timestamps() -> None:
    a = _trace([100, 200, 300])
    b = Trace.from_seconds(a.time_s + 1800.0, a.g_per_kwh, path="shifted")
    with pytest.raises(UserError, match="timestamps differ"):
        simulate("cenas", [a, b], _tiny_bench(20, 100.0, 1.0), 0, SimConfig(gpus=1, hours=2))
