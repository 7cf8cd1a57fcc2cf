"""Live search, issue 13: after the one-shot prior's first trainings, the LaMOO told TRUE results picks what to train."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jouled.carbon.base import VirtualClock
from jouled.carbon.series import IntensitySeries
from jouled.carbon.trace import TraceProvider
from jouled.scheduler.live import Evaluation, LiveConfig, LiveSearch
from jouled.scheduler.policies import make_policy
from jouled.scheduler.space import load_benchmark
from tests.live.conftest import T0_S


class _Slots:
    """The executor's slot list is all LiveSearch reads before it dispatches."""

    def __init__(self) -> None:
        self.slots = ["cpu0"]


def _search(tmp_path: Path, trace_file: Path, nas_data: Path, prior_evals: int) -> LiveSearch:
    clock = VirtualClock(T0_S + 24 * 3600, 1.0)
    cfg = LiveConfig(hours=1.0, zone="DE", work_dir=tmp_path / "work", prior_evals=prior_evals, seed=3)
    return LiveSearch(cfg, TraceProvider(trace_file, clock), clock, make_policy("cenas"), _Slots(),  # type: ignore[arg-type]
                      load_benchmark(nas_data))


def _train(search: LiveSearch, cells: list[int]) -> None:
    """Finish trainings of these cells with their NB201 accuracy (table energy: no daemon here)."""
    for c in cells:
        ev = Evaluation(c, search.bench.arch_strs[c], f"r{c}", "", accuracy_pct=float(search.bench.test_acc_pct[c]))
        search.claimed[c] = True
        search.evals[ev.run_id] = ev
        search._tell_true(ev)


def test_truth_not_the_estimate_picks_trainings_after_the_prior(tmp_path: Path, trace_file: Path, nas_data: Path) -> None:
    rng = np.random.default_rng(0)
    trained = rng.choice(15625, 30, replace=False).tolist()
    bait = int(np.setdiff1d(np.arange(15625), trained)[0])
    for prior, expect_bait in ((10, False), (100, True)):
        s = _search(tmp_path, trace_file, nas_data, prior)
        _train(s, trained)
        s.est_acc[bait] = 99.9  # the one-shot estimate's best cell: the seed's design trains it next
        ev = s._next_eval()
        assert ev is not None
        assert (ev.cell == bait) is expect_bait, (prior, ev.cell)
        if not expect_bait:  # truth-fed: the cell came from the LaMOO told the 30 true results
            assert s.true_lamoo is not None and s.true_lamoo.n_told == 30
            assert ev.cell not in trained


def test_a_dirty_hour_releases_slots(tmp_path: Path, trace_file: Path, nas_data: Path) -> None:
    """The clean-hour policy's dirty-hour split (0 sampling, 0 evaluation) releases every slot: none gets a job;
    the next clean hour puts them back to work. Splits that use every slot release none."""
    s = _search(tmp_path, trace_file, nas_data, 20)
    s.ex.slots = ["cpu0", "cpu1"]  # type: ignore[misc]
    s.roles = {"cpu0": "sampling", "cpu1": "evaluation"}
    s._assign_roles(0, 0)
    assert s.roles == {"cpu0": "released", "cpu1": "released"}
    s._assign_roles(0, 2)
    assert s.roles == {"cpu0": "evaluation", "cpu1": "evaluation"}
    s._assign_roles(1, 1)
    assert sorted(s.roles.values()) == ["evaluation", "sampling"]
    hist = IntensitySeries.from_seconds([T0_S, T0_S + 1800.0], [100.0, 300.0])
    dirty = make_policy("clean:50").decide(T0_S + 3600.0, 900.0, hist, None, 2)
    assert (dirty.gpus_sampling, dirty.gpus_evaluation) == (0, 0)
