"""NAS-Bench-201 cell genotypes as text: parse and write `arch_str`, torch-free (re-exported by jouled.trainer.nb201).

A cell has 4 nodes and 6 edges, in the order the NB201 `arch_str` lists them:
0→1, 0→2, 1→2, 0→3, 1→3, 2→3, i.e. `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

# NB201's own operation order: op index i here is op code i in the benchmark tables.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# (source node, target node) of each edge, in arch_str order.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))

NUM_EDGES = len(EDGES)
NUM_NODES = 4

EXAMPLE_ARCH_STR = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def parse_arch_str(s: str) -> tuple[str, ...]:
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` → the 6 op names in edge order; ValueError names what is wrong."""
    text = s.strip()
    if not text:
        raise ValueError(f"arch_str is empty — expected e.g. {EXAMPLE_ARCH_STR}")
    nodes = text.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(
            f"arch_str {s!r} has {len(nodes)} node groups, expected 3 separated by '+' — e.g. {EXAMPLE_ARCH_STR}"
        )
    ops: list[str] = []
    for target, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")) or len(group) < 2:
            raise ValueError(
                f"arch_str {s!r}: node group {group!r} must start and end with '|' — e.g. {EXAMPLE_ARCH_STR}"
            )
        items = group[1:-1].split("|")
        if len(items) != target:
            raise ValueError(
                f"arch_str {s!r}: node {target} needs {target} inputs (op~0 … op~{target - 1}), got {len(items)}"
            )
        for expected_src, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep or not src.isdigit():
                raise ValueError(f"arch_str {s!r}: edge {item!r} must look like 'op~{expected_src}'")
            if int(src) != expected_src:
                raise ValueError(
                    f"arch_str {s!r}: edge {item!r} into node {target} should come from node {expected_src}"
                )
            if op not in OPS:
                raise ValueError(f"arch_str {s!r}: unknown op {op!r} — use one of {', '.join(OPS)}")
            ops.append(op)
    return tuple(ops)


def to_arch_str(ops: Sequence[str]) -> str:
    """The 6 op names in edge order → NB201 `arch_str`."""
    if len(ops) != NUM_EDGES:
        raise ValueError(f"a cell needs {NUM_EDGES} ops (one per edge), got {len(ops)}")
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r} — use one of {', '.join(OPS)}")
    groups: list[str] = []
    k = 0
    for target in range(1, NUM_NODES):
        groups.append("|" + "|".join(f"{ops[k + src]}~{src}" for src in range(target)) + "|")
        k += target
    return "+".join(groups)


def ops_to_indices(ops: Sequence[str]) -> tuple[int, ...]:
    """Op names → NB201 op codes (0 none … 4 avg_pool_3x3)."""
    return tuple(OPS.index(op) for op in ops)


def indices_to_ops(indices: Sequence[int]) -> tuple[str, ...]:
    """NB201 op codes → op names; ValueError on a code outside 0…4."""
    out: list[str] = []
    for i in indices:
        if not 0 <= i < len(OPS):
            raise ValueError(f"op code {i} out of range — use 0…{len(OPS) - 1} ({', '.join(OPS)})")
        out.append(OPS[i])
    return tuple(out)


def all_arch_strs() -> Iterator[str]:
    """Every cell of the space (5^6 = 15,625), in op-code odometer order (last edge fastest)."""
    for combo in itertools.product(OPS, repeat=NUM_EDGES):
        yield to_arch_str(combo)
