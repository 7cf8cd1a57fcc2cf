"""The NAS-Bench-201 cell search space (15,625 cells) and its benchmark tables, joined by NB201 index."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from jouled.errors import UserError

# One NB201 encoding for the whole project (torch-free): OPS order = op index, EDGES in arch_str order
# |e01|+|e02|e12|+|e03|e13|e23|.
from jouled.trainer.nb201_arch import EDGES, OPS, indices_to_ops, ops_to_indices, parse_arch_str, to_arch_str

N_OPS = len(OPS)
N_EDGES = len(EDGES)
N_CELLS = N_OPS**N_EDGES  # 15,625
ONE_HOT_DIMS = N_OPS * N_EDGES  # 30

# Column of the latency table used as the energy objective. HW-NAS-Bench's edge-GPU energy (the
# CE-NAS objective) is not available here; FPGA energy (7 W x FPGA latency) is the stand-in.
ENERGY_COLUMN = "hwnas_fpga_energy_mj_derived"
ENERGY_NAME = "hwnas_fpga_energy_mj_derived (HW-NAS-Bench FPGA energy, stand-in for CE-NAS's edge-GPU energy)"
ACCURACY_NAME = "nb201_test_acc_200ep_pct (NB201 CIFAR-10 test accuracy, 200 epochs, true value)"

NATS_FILE = "nats_tss_cifar10_avg.csv"
SUPERNET_FILE = "nb201_supernet_estimates_cifar10.csv"
LATENCY_FILE = "nb201_latency_cifar10.csv"
DATA_ENV = "JOULED_NAS_DATA"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def arch_str_to_ops(arch_str: str) -> tuple[int, ...]:
    """Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` into 6 op indices (edge order of EDGES)."""
    return ops_to_indices(parse_arch_str(arch_str))


def ops_to_arch_str(ops: Sequence[int]) -> str:
    """Inverse of arch_str_to_ops."""
    if len(ops) != N_EDGES:
        raise ValueError(f"need {N_EDGES} op indices in 0..{N_OPS - 1}, got {list(ops)}")
    return to_arch_str(indices_to_ops([int(o) for o in ops]))


def ops_to_code(ops: npt.ArrayLike) -> IntArray:
    """Base-5 code of op indices (first edge most significant); rows of an (n, 6) array or one 6-vector."""
    arr = np.asarray(ops, dtype=np.int64)
    weights = N_OPS ** np.arange(N_EDGES - 1, -1, -1, dtype=np.int64)
    return np.asarray(arr @ weights, dtype=np.int64)


def code_to_ops(code: npt.ArrayLike) -> IntArray:
    """Inverse of ops_to_code: (n,) codes -> (n, 6) op indices."""
    c = np.atleast_1d(np.asarray(code, dtype=np.int64))
    weights = N_OPS ** np.arange(N_EDGES - 1, -1, -1, dtype=np.int64)
    return np.asarray((c[:, None] // weights[None, :]) % N_OPS, dtype=np.int64)


def one_hot(ops: npt.ArrayLike) -> FloatArray:
    """(n, 6) op indices -> (n, 30) one-hot features, edge-major (edge e, op k at column 5e + k)."""
    arr = np.atleast_2d(np.asarray(ops, dtype=np.int64))
    out = np.zeros((arr.shape[0], ONE_HOT_DIMS), dtype=np.float64)
    cols = arr + N_OPS * np.arange(N_EDGES, dtype=np.int64)[None, :]
    np.put_along_axis(out, cols, 1.0, axis=1)
    return out


def decode_one_hot(features: npt.ArrayLike) -> IntArray:
    """(n, 30) one-hot (or scores) -> (n, 6) op indices by argmax per edge."""
    arr = np.atleast_2d(np.asarray(features, dtype=np.float64))
    return np.asarray(arr.reshape(arr.shape[0], N_EDGES, N_OPS).argmax(axis=2), dtype=np.int64)


@dataclass(frozen=True)
class Benchmark:
    """Per-cell tables for CIFAR-10, every array indexed by the NB201 index 0..15624."""

    arch_strs: tuple[str, ...]
    ops: IntArray  # (N, 6) op indices
    index_by_code: IntArray  # base-5 op code -> NB201 index
    test_acc_pct: FloatArray  # true NB201 200-epoch test accuracy (50k-image training)
    one_shot_acc_pct: FloatArray  # one-shot supernet estimate
    few_shot_acc_pct: FloatArray  # few-shot supernet estimate
    energy_mj: FloatArray  # ENERGY_COLUMN: the stand-in for CE-NAS's edge-GPU energy
    train_time_s: FloatArray  # full training: 2 x NATS train-all-time (CE-NAS's training_time)
    sample_time_s: FloatArray  # one-shot scoring: NATS test-per-time (one evaluation pass)
    source_dir: str

    @property
    def n(self) -> int:
        return len(self.arch_strs)

    def index_of(self, arch: str | Sequence[int]) -> int:
        """NB201 index of an arch_str or of 6 op indices."""
        ops = arch_str_to_ops(arch) if isinstance(arch, str) else tuple(int(o) for o in arch)
        return int(self.index_by_code[int(ops_to_code(ops))])

    def features(self) -> FloatArray:
        """One-hot features of every cell, row = NB201 index."""
        return one_hot(self.ops)

    def true_objectives(self, idx: npt.ArrayLike | None = None) -> FloatArray:
        """(n, 2) objectives to maximise: (true accuracy %, -energy mJ)."""
        sel = slice(None) if idx is None else np.asarray(idx, dtype=np.int64)
        return np.stack([self.test_acc_pct[sel], -self.energy_mj[sel]], axis=1)

    def estimated_objectives(self, idx: npt.ArrayLike | None = None, estimate: str = "one_shot") -> FloatArray:
        """(n, 2) objectives as sampling sees them: (supernet estimate %, -energy mJ)."""
        sel = slice(None) if idx is None else np.asarray(idx, dtype=np.int64)
        if estimate not in ("one_shot", "few_shot"):
            raise ValueError(f"estimate must be one_shot or few_shot, got {estimate!r}")
        acc = self.one_shot_acc_pct if estimate == "one_shot" else self.few_shot_acc_pct
        return np.stack([acc[sel], -self.energy_mj[sel]], axis=1)


def default_data_dir() -> Path:
    """$JOULED_NAS_DATA, else <repo>/../shared/data/nas (the data must not be copied into the repo)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "data" / "nas"


def _read_rows(path: Path, columns: Iterable[str]) -> dict[int, dict[str, str]]:
    cols = list(columns)
    if not path.is_file():
        raise UserError(
            f"NAS benchmark table {path} not found — set {DATA_ENV} or --data to the folder holding {path.name}"
        )
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ["index", *cols] if c not in (reader.fieldnames or [])]
            if missing:
                raise _bad_table(path, f"missing column(s) {missing}")
            return {int(r["index"]): {c: r[c] for c in cols} for r in reader}
    except (OSError, ValueError) as e:
        raise _bad_table(path, f"cannot read ({e})") from None


def _column(rows: dict[int, dict[str, str]], name: str, n: int) -> FloatArray:
    return np.array([float(rows[i][name]) for i in range(n)], dtype=np.float64)


def _bad_table(path: Path, what: str) -> UserError:
    return UserError(f"NAS benchmark table {path}: {what} — use the file from shared/data/nas")


@lru_cache(maxsize=4)
def _load(data_dir: str) -> Benchmark:
    d = Path(data_dir)
    nats = _read_rows(d / NATS_FILE, ["arch_str", "train-all-time", "test-per-time"])
    sup = _read_rows(
        d / SUPERNET_FILE,
        ["arch_str", "nb201_test_acc_200ep_pct", "one_shot_supernet_acc_pct", "few_shot_supernet_acc_pct"],
    )
    lat = _read_rows(d / LATENCY_FILE, ["arch_str", ENERGY_COLUMN])
    for name, rows in ((NATS_FILE, nats), (SUPERNET_FILE, sup), (LATENCY_FILE, lat)):
        if sorted(rows) != list(range(N_CELLS)):
            raise _bad_table(d / name, f"expected indices 0..{N_CELLS - 1}")
    arch_strs = tuple(nats[i]["arch_str"] for i in range(N_CELLS))
    for name, rows in ((SUPERNET_FILE, sup), (LATENCY_FILE, lat)):
        bad = next((i for i in range(N_CELLS) if rows[i]["arch_str"] != arch_strs[i]), None)
        if bad is not None:
            raise _bad_table(d / name, f"arch_str of index {bad} differs from {NATS_FILE}, the tables do not join")
    ops = np.array([arch_str_to_ops(s) for s in arch_strs], dtype=np.int64)
    index_by_code = np.full(N_CELLS, -1, dtype=np.int64)
    index_by_code[ops_to_code(ops)] = np.arange(N_CELLS, dtype=np.int64)
    if (index_by_code < 0).any():
        raise _bad_table(d / NATS_FILE, "some cells are missing or duplicated")
    return Benchmark(
        arch_strs=arch_strs,
        ops=ops,
        index_by_code=index_by_code,
        test_acc_pct=_column(sup, "nb201_test_acc_200ep_pct", N_CELLS),
        one_shot_acc_pct=_column(sup, "one_shot_supernet_acc_pct", N_CELLS),
        few_shot_acc_pct=_column(sup, "few_shot_supernet_acc_pct", N_CELLS),
        energy_mj=_column(lat, ENERGY_COLUMN, N_CELLS),
        train_time_s=2.0 * _column(nats, "train-all-time", N_CELLS),
        sample_time_s=_column(nats, "test-per-time", N_CELLS),
        source_dir=str(d),
    )


def load_benchmark(data_dir: str | Path | None = None) -> Benchmark:
    """Join the three CIFAR-10 tables of shared/data/nas by NB201 index (cached per folder)."""
    d = Path(data_dir) if data_dir is not None else default_data_dir()
    return _load(str(d.resolve()))
