"""Marker pairing, per-device rows (the `energy epochs` JSON contract) and run totals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jouled.carbon.series import IntensitySeries
from jouled.energy import J_PER_KWH, SeriesArrays
from jouled.model import Marker
from jouled.rows import energy_rows, normalise_gpu, run_totals
from jouled.timefmt import format_time_ns
from jouled.windows import Window, windows_from_markers

S = 1_000_000_000


def mk(t_s: float, run: str, scope: str, event: str, seq: int, epoch: int | None = None, phase: str | None = None,
       gpus: tuple[str, ...] = (), arch: str | None = None) -> Marker:
    return Marker(int(t_s * S), "h1", run, scope, event, seq, epoch, phase, arch, gpus)


def test_pairs_in_seq_order_and_inherits_run_gpus() -> None:
    markers = [
        mk(0, "r1", "run", "start", 0, gpus=("gpu1",), arch="cell-7"),
        mk(1, "r1", "epoch", "start", 1, epoch=0),
        mk(1, "r1", "phase", "start", 2, epoch=0, phase="train"),
        mk(4, "r1", "phase", "end", 3, epoch=0, phase="train"),
        mk(4, "r1", "phase", "start", 4, epoch=0, phase="eval"),
        mk(5, "r1", "phase", "end", 5, epoch=0, phase="eval"),
        mk(5, "r1", "epoch", "end", 6, epoch=0),
        mk(5, "r1", "epoch", "start", 7, epoch=1, gpus=("gpu2",)),
        mk(9, "r1", "epoch", "end", 8, epoch=1),
        mk(9, "r1", "run", "end", 9),
    ]
    rng = np.random.default_rng(0)
    shuffled = [markers[i] for i in rng.permutation(len(markers))]
    windows, problems = windows_from_markers(shuffled + markers[:3])  # redelivered duplicates count once
    assert problems == []
    assert [(w.scope, w.epoch, w.phase) for w in windows] == [
        ("run", None, None),
        ("epoch", 0, None),
        ("phase", 0, "train"),
        ("phase", 0, "eval"),
        ("epoch", 1, None),
    ]
    by = {(w.scope, w.epoch, w.phase): w for w in windows}
    assert by[("epoch", 0, None)].gpus == ("gpu1",)  # inherited from the run
    assert by[("epoch", 0, None)].arch == "cell-7"
    assert by[("epoch", 1, None)].gpus == ("gpu2",)  # its own
    assert by[("phase", 0, "train")].start_ns == 1 * S and by[("phase", 0, "train")].end_ns == 4 * S


def test_unpaired_markers_are_reported_not_raised() -> None:
    markers = [
        mk(0, "r2", "epoch", "end", 0, epoch=0),  # end without start
        mk(1, "r2", "epoch", "start", 1, epoch=1),  # superseded by the next start
        mk(2, "r2", "epoch", "start", 2, epoch=1),
        mk(3, "r2", "epoch", "end", 3, epoch=1),
        mk(4, "r2", "epoch", "start", 4, epoch=2),  # never ends
        mk(9, "r2", "epoch", "start", 5, epoch=3),
        mk(8, "r2", "epoch", "end", 6, epoch=3),  # ends before it starts
        mk(9, "r2", "epoch", "pause", 7, epoch=3),
    ]
    windows, problems = windows_from_markers(markers)
    assert [(w.epoch, w.start_ns, w.end_ns) for w in windows] == [(1, 2 * S, 3 * S)]
    kinds = sorted((p.kind, p.marker.seq) for p in problems)
    assert kinds == [
        ("bad_event", 7),
        ("end_before_start", 6),
        ("end_without_start", 0),
        ("start_while_open", 2),  # seq 1 abandoned: one vocabulary with the daemon's live check (MarkerTracker)
        ("start_without_end", 4),
    ]
    (again,) = [p for p in problems if p.kind == "start_while_open"]
    assert "seq 1 was open" in again.message
    assert all("run r2" in p.message for p in problems)


def _series() -> dict[tuple[str, str], SeriesArrays]:
    t = np.arange(0, 101, dtype=np.int64) * S // 10  # 0 … 10 s at 10 Hz
    nan = np.full(t.size, np.nan)
    secs = t / S

    def gpu(watts: float) -> tuple[np.ndarray, np.ndarray]:
        return np.full(t.size, watts), watts * secs

    out = {}
    for i, w in enumerate((100.0, 200.0)):
        p, e = gpu(w)
        out[("nvml", f"gpu{i}")] = SeriesArrays(t, p, e, "nvml", f"gpu{i}", 0.1)
    out[("smi", "gpu1")] = SeriesArrays(t, np.full(t.size, 190.0), nan, "smi", "gpu1", 0.1)
    out[("rapl", "package-0")] = SeriesArrays(t, nan, 50.0 * secs, "rapl", "package-0", 0.1)
    out[("rapl", "core-0")] = SeriesArrays(t, nan, 30.0 * secs, "rapl", "core-0", 0.1)
    out[("visa", "wall")] = SeriesArrays(t, np.full(t.size, 500.0), nan, "visa", "wall", 0.1)
    return out


W_RUN = Window("r", "run", None, None, None, ("cuda:1",), 0, 10 * S)
W_EP0 = Window("r", "epoch", 0, None, None, ("cuda:1",), 1 * S, 3 * S)
W_EP1 = Window("r", "epoch", 1, None, None, ("cuda:1",), 3 * S, 9 * S)

REQUIRED = {"run", "scope", "epoch", "phase", "device", "start", "end", "duration_s", "energy_j", "method",
            "samples", "max_gap_s", "flags", "source"}


def test_rows_attribute_gpus_and_include_host_sources() -> None:
    rows = energy_rows([W_EP0], _series())
    assert {(r["source"], r["device"]) for r in rows} == {
        ("nvml", "gpu1"), ("smi", "gpu1"), ("rapl", "package-0"), ("rapl", "core-0"), ("visa", "wall")
    }
    for r in rows:
        assert REQUIRED <= r.keys()
        assert "carbon_g" not in r
        assert r["duration_s"] == pytest.approx(2.0)
        assert r["samples"] == 21 and r["flags"] == ()
    by = {(r["source"], r["device"]): r for r in rows}
    assert by[("nvml", "gpu1")]["energy_j"] == pytest.approx(400.0)
    assert by[("nvml", "gpu1")]["method"] == "counter"
    assert by[("smi", "gpu1")]["method"] == "integral"
    assert by[("visa", "wall")]["energy_j"] == pytest.approx(1000.0)
    assert rows[0]["start"] == format_time_ns(S)
    json.dumps(rows)  # the CLI's JSON output


def test_rows_without_gpus_take_every_gpu_and_carbon_when_known() -> None:
    w = Window("r", "epoch", 0, None, None, (), 0, 10 * S)
    rows = energy_rows([w], _series(), carbon=IntensitySeries.constant(200.0))
    devices = {(r["source"], r["device"]) for r in rows}
    assert ("nvml", "gpu0") in devices and ("nvml", "gpu1") in devices
    for r in rows:
        assert r["carbon_g"] == pytest.approx(r["energy_j"] * 200.0 / J_PER_KWH)


def test_host_devices_policies() -> None:
    series = _series()
    excluded = energy_rows([W_EP0], series, host_devices="exclude")
    assert {r["source"] for r in excluded} == {"nvml", "smi"}
    shared = energy_rows([W_EP0], series, host_devices="share", carbon=IntensitySeries.constant(100.0))
    wall = next(r for r in shared if r["device"] == "wall")
    assert wall["share"] == pytest.approx(0.5)  # one of the host's two GPUs
    assert wall["energy_j"] == pytest.approx(500.0)
    assert wall["carbon_g"] == pytest.approx(500.0 * 100.0 / J_PER_KWH)


def test_rows_come_in_window_order() -> None:
    rows = energy_rows([W_EP1, W_EP0], _series())
    epochs = [r["epoch"] for r in rows]
    assert epochs == sorted(epochs, reverse=True)  # as given: window 1 rows, then window 0 rows


def test_run_totals_prefer_the_run_window() -> None:
    rows = energy_rows([W_RUN, W_EP0, W_EP1], _series(), carbon=IntensitySeries.constant(100.0))
    (tot,) = run_totals(rows)
    assert tot["basis"] == "run"
    assert tot["duration_s"] == pytest.approx(10.0)
    assert tot["energy_j_by_device"]["nvml:gpu1"] == pytest.approx(2000.0)
    # total = nvml gpu1 (smi duplicate dropped) + rapl package (core lies inside it); wall beside it
    assert tot["total_devices"] == ["nvml:gpu1", "rapl:package-0"]
    assert tot["energy_j"] == pytest.approx(2000.0 + 500.0)
    assert tot["wall_j"] == pytest.approx(5000.0)
    assert tot["carbon_g"] == pytest.approx(2500.0 * 100.0 / J_PER_KWH)
    json.dumps(tot)


def test_run_totals_sum_epochs_without_a_run_window() -> None:
    rows = energy_rows([W_EP0, W_EP1], _series(), host_devices="exclude")
    (tot,) = run_totals(rows)
    assert tot["basis"] == "epoch"
    assert tot["start_ns"] == S and tot["end_ns"] == 9 * S
    assert tot["energy_j"] == pytest.approx(200.0 * 8)
    assert tot["carbon_g"] is None and tot["wall_j"] is None


def test_normalise_gpu() -> None:
    assert [normalise_gpu(g) for g in ("0", "cuda:3", "GPU2", "gpu10")] == ["gpu0", "gpu3", "gpu2", "gpu10"]


def test_format_time_ns_is_exact() -> None:
    assert format_time_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
