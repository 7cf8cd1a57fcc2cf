"""A tiny live CE-NAS search end to end: real worker processes, a real daemon and broker, a trace on a fast clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jouled.carbon.base import VirtualClock
from jouled.carbon.trace import TraceProvider
from jouled.scheduler.executors import LocalExecutor
from jouled.scheduler.live import LiveConfig, LiveSearch
from jouled.scheduler.policies import Policy, make_policy
from jouled.scheduler.space import load_benchmark
from jouled.scheduler.workers import WorkerSettings
from jouled.store.sqlite import SqliteStore
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.live.conftest import SEARCH_G_PER_KWH, T0_S

pytest.importorskip("torch")

SPEEDUP = 3600.0 / 6.0  # one trace hour every 6 s: 3 hours in 18 s


def run_live(tmp_path: Path, trace_file: Path, nas_data: Path, hours: float, policy: Policy
             ) -> tuple[dict[str, Any], LiveConfig, SqliteStore]:
    """A live search on two CPU slots over the fixture trace (a trace hour every 6 s), measured by a real daemon
    whose only fake is the device layer: 2 "GPUs" at 100 W each. Returns its summary, config and the daemon's log."""
    port = free_port()
    cfg = make_config(tmp_path, "", embedded_port=port)
    gpu = ScriptedSource("nvml", devices=2)
    gpu.devices = ["gpu0", "gpu1"]
    bg = start_daemon(cfg, [gpu], rate_hz=20.0)
    ex = LocalExecutor(["cpu0", "cpu1"])
    store = SqliteStore(cfg.store.path)
    try:
        settings = WorkerSettings(dataset="digits", channels=4, cells_per_stage=1, max_batches=3,
                                  broker_url=f"mqtt://127.0.0.1:{port}", host="testhost",
                                  spool_dir=str(tmp_path / "spool"))
        live = LiveConfig(hours=hours, zone="DE", epochs=2, sample_batch=4, settings=settings,
                          work_dir=tmp_path / "work", energy_wait_s=8.0)
        clock = VirtualClock(T0_S + 24 * 3600, SPEEDUP)
        search = LiveSearch(live, TraceProvider(trace_file, clock), clock, policy, ex, load_benchmark(nas_data),
                            store=store, config=cfg)
        doc = search.run()
    finally:
        ex.shutdown()
        bg.stop()
    return doc, live, store


def test_live_search_follows_the_grid_and_reads_measured_energy(tmp_path: Path, trace_file: Path,
                                                               nas_data: Path) -> None:
    doc, live, store = run_live(tmp_path, trace_file, nas_data, 3.0, make_policy("cenas"))

    # the seed's λs split (`cenas-seed`): one decision per trace hour, each following the intensity (2 slots: λs 0, 1,
    # 0.5)
    assert [d["intensity_g_per_kwh"] for d in doc["decisions"]] == SEARCH_G_PER_KWH
    assert [d["gpus_sampling"] for d in doc["decisions"]] == [0, 2, 1]
    allocs = store.read_allocations(live.search_id)
    assert [(a.gpus_sampling, a.gpus_evaluation) for a in allocs] == [(0, 2), (2, 0), (1, 1)]
    assert [a.intensity_g_per_kwh for a in allocs] == SEARCH_G_PER_KWH
    assert len(store.read_carbon("DE", None, None)) == 3
    assert doc["samples"] > 0 and doc["evaluations"] >= 1, doc["errors"]
    measured = [r for r in doc["evaluated"] if r["finished"] and r["energy_j"] is not None]
    assert measured, doc["evaluated"]
    for r in measured:
        # the run's markers name no GPU (CPU slots), so every fake GPU counts: 2 × 100 W over its epoch windows
        ms = [m for m in store.read_markers(r["run"]) if m.scope == "epoch"]
        starts = {m.epoch: m.time_ns for m in ms if m.event == "start"}
        dur_s = sum(m.time_ns - starts[m.epoch] for m in ms if m.event == "end") / 1e9
        assert dur_s > 0
        assert r["energy_j"] == pytest.approx(200.0 * dur_s, rel=0.05)
        assert set(r["energy_by_device_j"]) == {"nvml:gpu0", "nvml:gpu1"}
        assert r["carbon_g"] is not None and r["carbon_g"] > 0
        assert r["epochs_done"] == 2
    assert doc["energy_j_measured"] == pytest.approx(sum(r["energy_j"] for r in measured))
    # the sampling workers' measured energy (scoring windows and supernet trainings) joins the search's totals
    samp = doc["sampling"]
    assert samp["runs"] >= 1 and samp["measured_runs"] >= 1 and samp["energy_j"] > 0, samp
    assert doc["energy_j_total"] == pytest.approx(doc["energy_j_measured"] + samp["energy_j"])
    assert doc["carbon_g_total"] == pytest.approx(doc["carbon_g"] + samp["carbon_g"])
    assert doc["front"] and doc["hv_measured"]["hv"] > 0
    # the dirty hour moved both evaluation slots to sampling at an epoch boundary: nothing finished was lost
    for r in doc["evaluated"]:
        assert r["epochs_done"] <= 2
    assert not doc["errors"]


def test_live_cenas_samples_first_in_clean_hours_and_releases_the_slots_in_dirty_ones(
    tmp_path: Path, trace_file: Path, nas_data: Path,
) -> None:
    """`nas search --method cenas` (the simulator's cenas): the clean-hour policy over the truth-fed search. A clean
    hour works with every slot, half of them scoring cells for the trainer's prior; a dirty hour releases every slot
    (trainings stop at an epoch boundary, checkpoints kept) and runs nothing."""
    from jouled.scheduler.search_cli import live_policy

    doc, live, store = run_live(tmp_path, trace_file, nas_data, 2.0, live_policy("cenas", 0, 24.0))

    assert doc["policy"] == "clean:50"  # half the search's hours worked, paced
    # hour 1 (100 g/kWh, below the day's median): both slots work, one samples; hour 2 (500): both released
    assert [(d["gpus_sampling"], d["gpus_evaluation"]) for d in doc["decisions"]] == [(1, 1), (0, 0)]
    assert "sampling for the prior" in doc["decisions"][0]["note"] and "released" in doc["decisions"][1]["note"]
    allocs = store.read_allocations(live.search_id)
    assert [(a.gpus_sampling, a.gpus_evaluation) for a in allocs] == [(1, 1), (0, 0)]
    assert doc["samples"] > 0, doc["errors"]  # the clean hour scored cells (the old `clean` sampled nothing)
    assert doc["evaluations"] + doc["evaluations_partial"] >= 1, doc["errors"]
    assert doc["sampling"]["energy_j"] > 0
    assert not doc["errors"]


def test_clean_hour_split_by_search_phase() -> None:
    """Which working slots sample in a clean hour: half while the trainer's prior is being built (a single slot
    samples only while nothing scored is left to train), none once prior_evals trainings have started."""
    from types import SimpleNamespace

    import numpy as np

    from jouled.scheduler.policies import Split

    def split_for(n_work: int, n_evals: int, scored_unclaimed: bool) -> tuple[int, int]:
        est = np.full(10, np.nan)
        if scored_unclaimed:
            est[3] = 91.0
        fake = SimpleNamespace(evals=dict.fromkeys(range(n_evals)), cfg=SimpleNamespace(prior_evals=20),
                               est_acc=est, claimed=np.zeros(10, dtype=bool))
        got = LiveSearch._clean_split(fake, Split(0, n_work, 0.0, "clean"))  # type: ignore[arg-type]
        assert got.gpus_sampling + got.gpus_evaluation == n_work
        return got.gpus_sampling, got.gpus_evaluation

    assert split_for(8, 0, False) == (4, 4)
    assert split_for(3, 5, True) == (1, 2)
    assert split_for(1, 0, False) == (1, 0)  # one slot, nothing scored: it scores
    assert split_for(1, 0, True) == (0, 1)  # one slot, something scored to train: it trains
    assert split_for(8, 20, False) == (0, 8)  # the prior is built: truth-fed, every slot trains
