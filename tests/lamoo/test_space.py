"""NB201 space: encodings of all 15,625 cells, the table join, and guards against the CE-NAS data bugs."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from jouled.errors import UserError
from jouled.scheduler.lamoo import LaMOO
from jouled.scheduler.space import (
    N_CELLS,
    OPS,
    Benchmark,
    arch_str_to_ops,
    code_to_ops,
    decode_one_hot,
    load_benchmark,
    one_hot,
    ops_to_arch_str,
    ops_to_code,
)
from tests.conftest import NAS_DATA, needs_nas_data


def test_ops_order_and_arch_str_by_hand() -> None:
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    s = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert arch_str_to_ops(s) == (4, 2, 1, 2, 1, 1)  # the file's op_codes 421211 for index 0
    assert ops_to_arch_str((4, 2, 1, 2, 1, 1)) == s
    assert int(ops_to_code((4, 2, 1, 2, 1, 1))) == 4 * 5**5 + 2 * 5**4 + 1 * 125 + 2 * 25 + 1 * 5 + 1


@pytest.mark.parametrize("bad", ["", "|none~0|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "|conv~0|+|x|"])
def test_bad_arch_str_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        arch_str_to_ops(bad)


def test_every_cell_round_trips_all_encodings(bench: Benchmark) -> None:
    all_ops = np.array(list(itertools.product(range(5), repeat=6)), dtype=np.int64)
    codes = ops_to_code(all_ops)
    assert sorted(codes.tolist()) == list(range(N_CELLS))
    assert np.array_equal(code_to_ops(codes), all_ops)
    feats = one_hot(all_ops)
    assert feats.shape == (N_CELLS, 30) and np.all(feats.sum(axis=1) == 6)
    assert len(np.unique(feats, axis=0)) == N_CELLS  # one-hot is injective
    assert np.array_equal(decode_one_hot(feats), all_ops)
    # every op vector maps to a distinct NB201 index: the encoding reaches the whole space
    idx = bench.index_by_code[codes]
    assert sorted(idx.tolist()) == list(range(N_CELLS))
    for i in range(N_CELLS):
        s = bench.arch_strs[i]
        assert ops_to_arch_str(arch_str_to_ops(s)) == s
        assert bench.index_of(s) == i
        assert bench.index_of(bench.ops[i]) == i


def test_benchmark_op_codes_match_the_files(bench: Benchmark) -> None:
    with (NAS_DATA / "nb201_latency_cifar10.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            i = int(row["index"])
            assert "".join(str(o) for o in bench.ops[i]) == row["op_codes"].zfill(6)


def test_cenas_normalisation_bug_is_not_repeated(bench: Benchmark) -> None:
    """CE-NAS maps every integer code >= 1 to one op: only 2^6 = 64 cells are reachable that way."""
    rows = list(csv.DictReader((NAS_DATA / "cenas_init_samples.csv").open(newline="", encoding="utf-8")))
    for r in rows:  # the file shows the bug: effective_key = raw codes with every digit >= 1 turned into 4
        assert r["effective_key"].zfill(6) == "".join("4" if d != "0" else "0" for d in r["raw_codes"].zfill(6))
    cenas_like = {tuple(4 if o >= 1 else 0 for o in ops) for ops in itertools.product(range(5), repeat=6)}
    assert len(cenas_like) == 64
    ours = {bench.index_of(ops) for ops in itertools.product(range(5), repeat=6)}
    assert len(ours) == N_CELLS


def test_lamoo_reaches_every_cell(bench: Benchmark) -> None:
    """The optimiser's proposals cover the whole space (not 64 cells) when asked for all of it."""
    m = LaMOO(bench.features(), seed=3)
    got = m.ask(N_CELLS)
    assert len(got) == N_CELLS and len(set(got)) == N_CELLS
    assert m.ask(1) == []


def test_accuracies_are_true_not_scaled(bench: Benchmark) -> None:
    """CE-NAS's acc = true NB201 accuracy x 1, 2/3 or 1/3; ours is the true value, x 1 exactly."""
    sup = {int(r["index"]): r for r in csv.DictReader((NAS_DATA / "nb201_supernet_estimates_cifar10.csv").open())}
    for i in (0, 1, 1462, 15624):
        assert bench.test_acc_pct[i] == float(sup[i]["nb201_test_acc_200ep_pct"])
    rows = list(csv.DictReader((NAS_DATA / "cenas_init_samples.csv").open(newline="", encoding="utf-8")))
    ratios = []
    for r in rows:
        i = int(r["nb201_index_inferred"])
        assert bench.arch_strs[i] == r["arch_str_inferred"]
        ratio = float(r["cenas_acc"]) / bench.test_acc_pct[i]
        nearest = min((1.0, 2 / 3, 1 / 3), key=lambda q: abs(q - ratio))
        assert abs(ratio - nearest) < 1e-3  # CE-NAS stores float32 means of 2-decimal values
        ratios.append(nearest)
        # the training cost we charge is CE-NAS's training_time (2 x NATS train-all-time)
        assert bench.train_time_s[i] == pytest.approx(float(r["cenas_training_time_s"]), abs=1e-3)
    assert any(q < 1.0 for q in ratios), "the CE-NAS file should show scaled accuracies"
    assert bench.test_acc_pct.max() == pytest.approx(94.37)  # a scaled table could not reach NB201's best
    obj = bench.true_objectives([1462])
    assert obj[0, 0] == bench.test_acc_pct[1462] and obj[0, 1] == -bench.energy_mj[1462]


def test_ranges_of_the_joined_columns(bench: Benchmark) -> None:
    assert bench.energy_mj.min() == pytest.approx(7.93072) and bench.energy_mj.max() == pytest.approx(60.74992)
    assert 1084 < bench.train_time_s.min() < bench.train_time_s.max() < 6923
    assert 0.69 < bench.sample_time_s.min() < bench.sample_time_s.max() < 2.15
    assert bench.one_shot_acc_pct.max() == pytest.approx(81.82)


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="JOULED_NAS_DATA") as e:
        load_benchmark(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in e.value.message


def test_env_var_selects_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULED_NAS_DATA", str(tmp_path))
    with pytest.raises(UserError, match=str(tmp_path)):
        load_benchmark()


@needs_nas_data
def test_truncated_table_is_a_user_error(tmp_path: Path) -> None:
    for name in ("nats_tss_cifar10_avg.csv", "nb201_supernet_estimates_cifar10.csv", "nb201_latency_cifar10.csv"):
        lines = (NAS_DATA / name).read_text(encoding="utf-8").splitlines()[:3]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="expected indices"):
        load_benchmark(tmp_path)


@needs_nas_data
def test_tables_that_do_not_join_are_rejected(tmp_path: Path) -> None:
    for name in ("nats_tss_cifar10_avg.csv", "nb201_supernet_estimates_cifar10.csv"):
        shutil.copy(NAS_DATA / name, tmp_path / name)  # a temporary copy for the test only
    text = (NAS_DATA / "nb201_latency_cifar10.csv").read_text(encoding="utf-8").splitlines()
    head, row = text[0], text[6].split(",")
    row[1] = row[1].replace("~0|+", "~0|+", 1).replace("nor_conv_3x3", "avg_pool_3x3", 1).replace(
        "skip_connect", "none", 1
    )
    assert row[1] != text[6].split(",")[1]
    text[6] = ",".join(row)
    (tmp_path / "nb201_latency_cifar10.csv").write_text("\n".join([head, *text[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="do not join"):
        load_benchmark(tmp_path)
