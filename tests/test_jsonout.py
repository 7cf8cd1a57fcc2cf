"""jouled.jsonout writes the very text of json.dumps(indent=2): the CLI's JSON stays byte for byte what it was."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.jsonout import dumps_indent2

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),  # unicode, quotes, backslashes, control characters, newlines
)
_keys = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.none(), st.floats(allow_nan=False))
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(max_examples=400)
@given(_json)
def test_same_text_as_json_dumps_indent_2(obj: Any) -> None:
    assert dumps_indent2(obj) == json.dumps(obj, indent=2)


@given(st.lists(st.dictionaries(st.text(max_size=6), _scalars | st.just([]), max_size=6), max_size=5))
def test_flat_rows_take_the_c_path_and_match(rows: list[dict[str, Any]]) -> None:
    assert dumps_indent2(rows) == json.dumps(rows, indent=2)


def test_energy_rows_and_the_default_hook() -> None:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(type(o))

    rows = [
        {"run": "r", "epoch": 0, "phase": None, "energy_j": 1727.9799998, "flags": [], "carbon_g": math.nan},
        {"run": "x'; DROP --", "epoch": np.int64(3), "energy_j": np.float64(1.5), "flags": ["gap", "edge"],
         "by_device": {"gpu0": 1.0, "package-0": [np.float32(2.5)]}, "arch": "|nor_conv_3x3~0|+|skip_connect~0|"},
        {},
    ]
    assert dumps_indent2(rows, default=default) == json.dumps(rows, indent=2, default=default)
    with pytest.raises(TypeError):
        dumps_indent2([{"t": object()}])
    with pytest.raises(TypeError):
        dumps_indent2({(1, 2): 3})
