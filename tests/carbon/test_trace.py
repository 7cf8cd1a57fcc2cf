"""Trace files: the three formats, column choice, malformed rows, and replay on manual and virtual clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from jouled.carbon.base import ManualClock, ProviderError, VirtualClock, dt_to_ns
from jouled.carbon.trace import TraceProvider, load_trace
from jouled.errors import UserError

from .conftest import DATA, need


def test_electricitymaps_export_direct_and_lca_match_readme_stats() -> None:
    # figures from data/carbon/README.md (computed there with a separate stdlib script)
    p = need(DATA / "electricitymaps" / "DE_2022_hourly.csv")
    d = load_trace(p)
    lca = load_trace(p, "LCA")
    assert len(d) == 8760 and d.zone == "DE" and d.column == "direct" and lca.column == "lca"
    assert (round(d.intensity.min(), 2), round(d.intensity.mean(), 2), round(d.intensity.max(), 2)) == (118.72, 408.45, 671.36)
    assert (round(lca.intensity.min(), 2), round(lca.intensity.mean(), 2), round(lca.intensity.max(), 2)) == (
        167.03,
        476.22,
        758.98,
    )
    assert d.start_s == datetime(2022, 1, 1, tzinfo=UTC).timestamp() and d.step_s == 3600
    assert np.all(np.diff(d.time_s) == 3600)


def test_spreadsheet_edited_export_reads_the_same_values() -> None:
    a = load_trace(need(DATA / "electricitymaps" / "FR_2022_hourly.asfound.csv"), "lca")
    b = load_trace(need(DATA / "electricitymaps" / "FR_2022_hourly.csv"), "lca")
    np.testing.assert_array_equal(a.time_s, b.time_s)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    assert int(a.estimated.sum()) == 1227 == int(b.estimated.sum())  # README: 1227 rows flagged estimated


def test_lets_wait_awhile_file() -> None:
    t = load_trace(need(DATA / "lets_wait_awhile_2020" / "ger_ci.csv"))
    assert len(t) == 37147 and t.zone == "DE" and t.step_s == 900 and "Let's Wait Awhile" in t.column
    assert (round(t.intensity.min(), 2), round(t.intensity.max(), 2)) == (100.66, 593.31)


def test_plain_csv_rfc3339_ns_and_seconds(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text("time,intensity_g_per_kwh\r\n2024-01-01T00:00:00Z,100\r\n2024-01-01T01:00:00+00:00,200.5\r\n")
    t = load_trace(p)
    assert list(t.intensity) == [100, 200.5] and t.time_s[0] == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    q = tmp_path / "b.csv"
    q.write_text(f"time,intensity_g_per_kwh,zone\n{10**18},5,FR\n{10**18 + 3600 * 10**9},6,FR\n")
    tq = load_trace(q)
    assert list(tq.time_s) == [1e9, 1e9 + 3600] and tq.zone == "FR"
    s = tmp_path / "c.csv"
    s.write_text("time_s,intensity_g_per_kwh\n0,1\n1800,2\n")
    assert load_trace(s).step_s == 1800


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("time,intensity_g_per_kwh\n2024-01-01T00:00Z,1\n2024-01-01T01:00Z,abc\n", 3, "not a number"),
        ("time,intensity_g_per_kwh\n2024-01-01T00:00Z,1\nyesterday,2\n", 3, "not a date"),
        ("time,intensity_g_per_kwh\n2024-01-01T01:00Z,1\n2024-01-01T00:00Z,2\n", 3, "sort the rows"),
        ("time,intensity_g_per_kwh\n2024-01-01T01:00Z,1\n2024-01-01T01:00Z,2\n", 3, "duplicate"),
        ("time,intensity_g_per_kwh\n2024-01-01T00:00Z,-5\n", 2, "non-negative"),
        ("time,intensity_g_per_kwh\n2024-01-01T00:00Z,nan\n", 2, "finite"),
        ("time,intensity_g_per_kwh\n2024-01-01T00:00Z\n", 2, "field"),
        ("when,what\n1,2\n", 1, "unrecognised header"),
    ],
)
def test_malformed_rows_name_file_line_and_fix(tmp_path: Path, body: str, line: int, words: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(UserError) as e:
        load_trace(p)
    msg = e.value.message
    assert str(p) in msg and f"line {line}" in msg and words in msg and "—" in msg and "\n" not in msg


def test_em_export_with_a_broken_row(tmp_path: Path) -> None:
    src = need(DATA / "electricitymaps" / "GB_2022_hourly.csv").read_text(encoding="utf-8").splitlines()
    src[5] = src[5].replace(src[5].split(",")[4], "n/a")
    p = tmp_path / "GB.csv"
    p.write_text("\r\n".join(src[:10]) + "\r\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 6"):
        load_trace(p)


@pytest.mark.parametrize("missing", ["nope.csv", ""])
def test_missing_or_empty_file(tmp_path: Path, missing: str) -> None:
    p = tmp_path / (missing or "empty.csv")
    if not missing:
        p.write_text("")
    with pytest.raises(UserError, match=r"file not found|empty file"):
        load_trace(p)
    with pytest.raises(UserError, match="direct, lca"):
        load_trace(p, "both")


def test_trace_provider_on_a_manual_clock() -> None:
    tr = load_trace(need(DATA / "electricitymaps" / "US-CAL-CISO_2022_hourly.csv"))
    t0 = datetime(2022, 7, 4, 10, tzinfo=UTC).timestamp()
    i = int((t0 - tr.start_s) // 3600)
    clock = ManualClock(t0 + 1800)
    p = TraceProvider(tr, clock)
    r = p.current("US-CAL-CISO")
    assert r.intensity_g_per_kwh == tr.intensity[i] and r.age_s == 1800 and r.time_s == t0 and not r.forecast
    assert "direct" in r.note
    hist = p.history("US-CAL-CISO")
    assert [x.intensity_g_per_kwh for x in hist] == list(tr.intensity[i - 23 : i + 1])  # no future values
    assert max(x.time_s for x in hist) <= clock.now_s()
    fc = p.forecast("US-CAL-CISO")
    assert [x.intensity_g_per_kwh for x in fc] == list(tr.intensity[i + 1 : i + 25])
    assert all(x.forecast and "perfect foresight" in x.note for x in fc)
    with pytest.raises(UserError, match="pass --zone US-CAL-CISO"):
        p.current("DE")
    clock.set(tr.end_s + 1)
    with pytest.raises(ProviderError, match="outside the trace"):
        p.current("")


def test_trace_provider_on_a_fast_virtual_clock() -> None:
    tr = load_trace(need(DATA / "electricitymaps" / "NO_2022_hourly.csv"))
    fake = [0.0]
    clock = VirtualClock(tr.start_s, speedup=3600.0, monotonic=lambda: fake[0])  # one trace hour per second
    p = TraceProvider(tr, clock)
    seen = []
    for k in range(5):
        fake[0] = k + 0.5
        seen.append(p.current("NO").intensity_g_per_kwh)
    assert seen == list(tr.intensity[:5])
    start = datetime.fromtimestamp(tr.start_s, UTC)
    assert p.history("NO", start=start, end=datetime(2030, 1, 1, tzinfo=UTC))[-1].time_s == tr.time_s[4]
    assert dt_to_ns(start) == int(tr.start_s * 1e9)
