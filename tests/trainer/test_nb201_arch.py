"""arch_str parsing: torch-free, exact round trip over the whole NB201 space, agreement with the benchmark tables."""

from __future__ import annotations

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.trainer.nb201_arch import (
    EXAMPLE_ARCH_STR,
    OPS,
    all_arch_strs,
    indices_to_ops,
    ops_to_indices,
    parse_arch_str,
    to_arch_str,
)

REPO = Path(__file__).resolve().parents[2]
NATS_CSV = REPO.parent / "shared" / "data" / "nas" / "nats_tss_cifar10_avg.csv"


def test_round_trip_all_15625_cells() -> None:
    seen: set[str] = set()
    for ops in itertools.product(OPS, repeat=6):
        s = to_arch_str(ops)
        assert parse_arch_str(s) == ops
        assert indices_to_ops(ops_to_indices(ops)) == ops
        seen.add(s)
    assert len(seen) == 5**6
    assert set(all_arch_strs()) == seen


def test_example_edge_order() -> None:
    ops = parse_arch_str(EXAMPLE_ARCH_STR)
    # edges 0→1, 0→2, 1→2, 0→3, 1→3, 2→3
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert to_arch_str(ops) == EXAMPLE_ARCH_STR


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("", "empty"),
        ("|nor_conv_3x3~0|", "3 separated by '+'"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|", "node 3 needs 3 inputs"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "should come from node 0"),
        ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "must look like"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
    ],
)
def test_bad_arch_str_names_the_problem(bad: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_arch_str(bad)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_ops_and_codes() -> None:
    with pytest.raises(ValueError, match="needs 6 ops"):
        to_arch_str(("none",) * 5)
    with pytest.raises(ValueError, match="unknown op"):
        to_arch_str(("none",) * 5 + ("max_pool",))
    with pytest.raises(ValueError, match="out of range"):
        indices_to_ops((0, 1, 2, 3, 4, 5))


def test_parsing_does_not_import_torch() -> None:
    code = "import sys, jouled.trainer.nb201_arch as a; a.parse_arch_str(a.EXAMPLE_ARCH_STR); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not NATS_CSV.exists(), reason="shared/data/nas not present")
def test_agrees_with_the_benchmark_table() -> None:
    """Every arch_str in the NATS-Bench table parses, round-trips, and matches its `sol` op codes (+1)."""
    n = 0
    with NATS_CSV.open(newline="") as f:
        for row in csv.DictReader(f):
            ops = parse_arch_str(row["arch_str"])
            assert to_arch_str(ops) == row["arch_str"]
            assert "".join(str(i + 1) for i in ops_to_indices(ops)) == row["sol"].strip()
            n += 1
    assert n == 15625
