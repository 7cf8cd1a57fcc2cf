"""Property test: what jouled.influxproto writes, a real InfluxDB 1.x reads back unchanged (tags, strings, floats).

Nasty values (spaces, commas, '=', quotes, backslashes, unicode, newlines, control characters) either round-trip
exactly or are refused by the encoder with LineProtocolError — never silently changed or mis-parsed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouled import influxproto as lp
from jouled.model import Marker
from tests.servers import ServerHandle, influxd_available, start_influxd

pytestmark = [
    pytest.mark.influx,
    pytest.mark.skipif(not influxd_available(), reason="influxd not installed (Debian package influxdb)"),
]
DB = "roundtrip"
_ts = itertools.count(1_700_000_000_000_000_000)

NASTY = st.text(
    alphabet=st.sampled_from(list(' ,="\\\n\r\t\'#ab0üλ日\U0001f600{}:;\x01')) | st.characters(blacklist_categories=["Cs"]),
    max_size=12,
)


@pytest.fixture(scope="module")
def influx() -> Iterator[ServerHandle]:
    srv = start_influxd()
    srv.create_database(DB)
    yield srv
    srv.stop()


def _write(srv: ServerHandle, line: str) -> None:
    r = httpx.post(f"{srv.url}/write", params={"db": DB, "precision": "ns"}, content=line.encode(), timeout=10)
    assert r.status_code == 204, r.text


MARKER_VALUES = st.tuples(NASTY, NASTY, NASTY, NASTY, NASTY)  # run, host, phase, arch, attr


# one write and one query per example, several markers each: a write to influxd costs ~0.1 s here
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(MARKER_VALUES, min_size=1, max_size=12))
def test_marker_round_trip(influx: ServerHandle, cases: list[tuple[str, str, str, str, str]]) -> None:
    lines, expect = [], {}
    for run, host, phase, arch, attr in cases:
        t = next(_ts)
        m = Marker(t, host, run, "phase", "start", 3, epoch=1, phase=phase, arch=arch, gpus=("g 0", "g,1"),
                   attrs={attr: attr})
        try:
            lines.append(lp.encode_marker(m))
        except lp.LineProtocolError:
            # refused: only for what InfluxDB 1.x tags cannot hold
            assert any(lp_refuses(v) for v in (host, run))
            continue
        expect[t] = (run, host, phase, arch, attr)
    if not lines:
        return
    _write(influx, "\n".join(lines))
    lo, hi = min(expect), max(expect)
    series = influx.influxql(f"SELECT * FROM marker WHERE time >= {lo} AND time <= {hi}", DB)
    rows = [dict(zip(series[0]["columns"], v, strict=True)) for v in series[0]["values"]]
    assert {r["time"] for r in rows} == set(expect)
    for row in rows:
        run, host, phase, arch, attr = expect[row["time"]]
        assert row.get("run") == (run or None)  # an empty tag is left out
        assert row.get("host") == (host or None)
        assert row["phase"] == phase
        assert row["arch"] == arch
        assert row["gpus"] == "g 0 g,1"
        assert json.loads(str(row["attrs"])) == {attr: attr}
        assert row["epoch"] == 1 and row["seq"] == "3"


def lp_refuses(s: str) -> bool:
    return "\n" in s or "\r" in s or s.endswith("\\") or any(f"\\{c}" in s for c in ",= ")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20))
def test_float_round_trip(influx: ServerHandle, values: list[float]) -> None:
    import numpy as np

    t0 = next(_ts)
    for _ in values:
        next(_ts)
    t = np.arange(t0, t0 + len(values), dtype=np.int64)
    lines = lp.encode_series("fh", "nvml", "gpu0", None, t, np.array(values), np.full(len(values), np.nan))
    _write(influx, "\n".join(lines))
    series = influx.influxql(f"SELECT power_w FROM power WHERE time >= {t0} AND time < {t0 + len(values)}", DB)
    # float(): InfluxDB's JSON writes an integral float64 without a decimal point
    got = [float(v[1]) for v in series[0]["values"]]
    assert got == values
