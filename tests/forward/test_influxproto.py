"""Pure tests of jouled.influxproto: escaping, field typing, NaN handling, the vectorised sample encoder."""

from __future__ import annotations

import numpy as np
import pytest

from jouled import influxproto as lp
from jouled.model import Allocation, CarbonPoint, Marker
from jouled.series import SeriesMeta


def test_tag_escaping() -> None:
    assert lp.escape_tag("a b,c=d") == r"a\ b\,c\=d"
    assert lp.escape_tag(r"C:\gpu0") == r"C:\gpu0"  # a backslash before an ordinary character is literal
    assert lp.escape_tag("ü日本") == "ü日本"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "trailing\\", "a\\ b", "a\\,b", "a\\=b", "\ud800"])
def test_unrepresentable_tags_are_refused(bad: str) -> None:
    with pytest.raises(lp.LineProtocolError):
        lp.escape_tag(bad)


def test_string_field_escaping() -> None:
    assert lp.escape_string_field('say "hi" \\ there\n') == '"say \\"hi\\" \\\\ there\n"'


def test_field_types_and_nan() -> None:
    assert lp.format_field(3) == "3i"
    assert lp.format_field(np.int64(3)) == "3i"
    assert lp.format_field(3.0) == "3.0"
    assert lp.format_field(True) == "true"
    assert lp.format_field(float("nan")) is None
    assert lp.format_field(float("inf")) is None
    assert lp.encode_point("m", {"a": "x"}, {"f": float("nan")}, 1) is None  # no field left: skipped


def test_empty_tags_left_out_and_sorted() -> None:
    assert lp.tag_set({"z": "1", "a": "2", "e": "", "n": None}) == ",a=2,z=1"


def test_encode_samples_shapes() -> None:
    t = np.array([1, 2, 3, 4], dtype=np.int64)
    p = np.array([1.5, np.nan, 3.0, np.nan])
    e = np.array([10.0, 20.0, np.nan, np.nan])
    lines = lp.encode_series("h", "nvml", "gpu0", None, t, p, e)
    assert lines == [
        "power,device=gpu0,host=h,kind=measured,role=gpu,scope=device,source=nvml power_w=1.5,energy_j=10.0 1",
        "power,device=gpu0,host=h,kind=measured,role=gpu,scope=device,source=nvml energy_j=20.0 2",
        "power,device=gpu0,host=h,kind=measured,role=gpu,scope=device,source=nvml power_w=3.0 3",
    ]
    both = lp.encode_samples("p ", t, np.ones(4), np.full(4, 2.0))
    assert both[0] == "p power_w=1.0,energy_j=2.0 1" and len(both) == 4
    only_p = lp.encode_samples("p ", t, np.ones(4), np.full(4, np.nan))
    assert only_p[-1] == "p power_w=1.0 4"
    only_e = lp.encode_samples("p ", t, np.full(4, np.nan), np.full(4, 2.0))
    assert only_e[0] == "p energy_j=2.0 1"
    assert lp.encode_samples("p ", t, np.full(4, np.inf), np.full(4, np.nan)) == []


def test_float_repr_round_trips() -> None:
    vals = np.array([0.1, 1e-300, 1.7976931348623157e308, 123456.789012345678])
    lines = lp.encode_samples("p ", np.arange(4), vals, np.full(4, np.nan))
    back = [float(ln.split("power_w=")[1].split(" ")[0]) for ln in lines]
    assert back == vals.tolist()


def test_host_wide_scope_and_estimated_kind() -> None:
    tags = lp.sample_tags("h", "estimate", "cpu", None)
    assert tags["scope"] == "host" and tags["kind"] == "estimated" and tags["role"] == "cpu-estimate"
    tags = lp.sample_tags("h", "x", "d", SeriesMeta(role="wall"))
    assert tags["role"] == "wall" and tags["scope"] == "device"


def test_marker_carbon_allocation_health() -> None:
    m = Marker(5, "h", "run 1", "epoch", "start", 7, epoch=2, phase=None, arch="a", gpus=("g0", "g1"), attrs={"k": 1})
    assert lp.encode_marker(m) == (
        r'marker,event=start,host=h,run=run\ 1,scope=epoch,seq=7 epoch=2i,arch="a",gpus="g0 g1",attrs="{\"k\":1}" 5'
    )
    assert lp.encode_carbon(CarbonPoint(9, "DE", "em", 300.5, True)) == (
        "carbon,forecast=true,provider=em,zone=DE intensity_g_per_kwh=300.5 9"
    )
    assert lp.encode_allocation(Allocation(9, "s", 3, 1, 0.5, 200.0)) == (
        "allocation,search=s gpus_sampling=3i,gpus_evaluation=1i,lambda_s=0.5,intensity_g_per_kwh=200.0 9"
    )
    line = lp.encode_health("h", "forwarder", {"lag_s": 1, "backlog_points": 4.0, "x": None}, 3)
    assert line == "jouled_health,host=h,source=forwarder lag_s=1.0,backlog_points=4i 3"
    assert lp.join_lines(["a", "b"]) == b"a\nb"
