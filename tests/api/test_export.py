"""`jouled export samples`: raw samples out, read back by `jouled import samples` (CSV and line protocol) exactly."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.export import iter_slices, write_line_protocol
from jouled.model import Sample
from jouled.store.sqlite import SeriesKey, SqliteStore, parse_store_url, sqlite_url
from jouled.timefmt import format_time_ns

from .conftest import HOST, T0_NS

runner = CliRunner()


def _all(st: SqliteStore, lo: int, hi: int) -> dict[SeriesKey, tuple[list[int], list[float], list[float]]]:
    out = {}
    for k in st.series():
        d = st.read_series(k, lo, hi)
        if len(d):
            out[k] = (d.time_ns.tolist(), np.nan_to_num(d.power_w, nan=-1).tolist(), np.nan_to_num(d.energy_j, nan=-1).tolist())
    return out


@pytest.mark.parametrize("fmt", ["csv", "line-protocol"])
def test_run_round_trips_through_import(api_store: str, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"r1.{fmt}"
    res = runner.invoke(app, ["export", "samples", "--run", "r1", "--format", fmt, "-o", str(out), "--store", api_store])
    assert res.exit_code == 0, res.output
    back = sqlite_url(tmp_path / "back.db")
    res = runner.invoke(app, ["import", "samples", str(out), "--store", back])
    assert res.exit_code == 0, res.output
    lo, hi = T0_NS + 1_000_000_000, T0_NS + 7_000_000_000  # r1's first and last marker
    original = _all(SqliteStore(parse_store_url(api_store), readonly=True), lo, hi)
    assert original and _all(SqliteStore(parse_store_url(back), readonly=True), 0, 2**62) == original
    if fmt == "csv":
        lines = out.read_text().splitlines()
        assert lines[0] == "time,host,source,device,power_w,energy_j"
        assert lines[1].startswith(f"{lo},{HOST},")


def test_span_in_rfc3339_or_ns_to_stdout(api_store: str) -> None:
    a, b = T0_NS + 2_000_000_000, T0_NS + 2_500_000_000
    by_ns = runner.invoke(app, ["export", "samples", "--from", str(a), "--to", str(b), "--store", api_store])
    by_rfc = runner.invoke(app, ["export", "samples", "--from", format_time_ns(a), "--to", format_time_ns(b),
                                 "--store", api_store])
    assert by_ns.exit_code == 0 and by_ns.stdout == by_rfc.stdout
    rows = by_ns.stdout.splitlines()[1:]
    times = [int(r.split(",")[0]) for r in rows]
    assert min(times) == a and max(times) == b and times == sorted(times)
    rfc = runner.invoke(app, ["export", "samples", "--from", str(a), "--to", str(b), "--time", "rfc3339", "--store", api_store])
    assert rfc.stdout.splitlines()[1].startswith("2023-11-14T22:13:22.000000000Z,")


def test_line_protocol_escapes_tags_and_keeps_extras(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "odd.db")
    st.write_samples([
        Sample(T0_NS + i, "my host", "visa", "wall,a=b c", power_w=1.5 + i, extras={"util pct": 3.0}) for i in range(3)
    ])
    buf = io.StringIO()
    assert write_line_protocol(iter_slices(st, T0_NS, T0_NS + 10, extras=True), buf) == 3
    first = buf.getvalue().splitlines()[0]
    assert first == f"power,host=my\\ host,source=visa,device=wall\\,a\\=b\\ c power_w=1.5,util\\ pct=3.0 {T0_NS}"
    lp = tmp_path / "odd.lp"
    lp.write_text(buf.getvalue())
    back = tmp_path / "back.db"
    assert runner.invoke(app, ["import", "samples", str(lp), "--store", sqlite_url(back)]).exit_code == 0
    d = SqliteStore(back, readonly=True).read_series(SeriesKey("my host", "visa", "wall,a=b c"), extras=True)
    assert d.power_w.tolist() == [1.5, 2.5, 3.5] and d.extras["util pct"].tolist() == [3.0] * 3


def test_slices_stream_the_same_samples(api_store: str) -> None:
    st = SqliteStore(parse_store_url(api_store), readonly=True)
    lo, hi = T0_NS, T0_NS + 12_000_000_000
    whole = list(iter_slices(st, lo, hi))
    small = list(iter_slices(st, lo, hi, slice_ns=700_000_000))
    assert len(whole) == 1 and len(small) == 18
    cat = np.concatenate([s.time_ns for s in small])
    assert cat.tolist() == whole[0].time_ns.tolist()
    assert np.concatenate([s.power_w for s in small]).tolist() == pytest.approx(whole[0].power_w.tolist(), nan_ok=True)


def test_errors_are_one_line(api_store: str, tmp_path: Path) -> None:
    def err(*args: str) -> str:
        res = runner.invoke(app, ["export", "samples", *args, "--store", api_store])
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        return lines[0]

    assert "--run RUN, or --from TIME" in err()
    assert "known runs: r1, r2" in err("--run", "nope")
    assert "not a time" in err("--from", "yesterday")
    assert "choose csv, line-protocol or parquet" in err("--run", "r1", "--format", "xlsx")
    assert "not both" in err("--run", "r1", "--from", "0")
    if importlib.util.find_spec("pyarrow") is None:
        assert err("--run", "r1", "--format", "parquet", "-o", str(tmp_path / "x.parquet")) == (
            "Error: --format parquet needs 'pyarrow', which is not installed — pip install pyarrow"
        )


def test_parquet(api_store: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "r1.parquet"
    res = runner.invoke(app, ["export", "samples", "--run", "r1", "--format", "parquet", "-o", str(out), "--store", api_store])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    assert t.column_names == ["time", "host", "source", "device", "power_w", "energy_j"]
    csv_rows = runner.invoke(app, ["export", "samples", "--run", "r1", "--store", api_store]).stdout.splitlines()[1:]
    assert t.num_rows == len(csv_rows)


def test_an_export_of_nothing_says_so_and_exits_1(api_store: str) -> None:
    res = runner.invoke(app, ["export", "samples", "--from", "0", "--to", "1", "--store", api_store])
    assert res.exit_code == 1, res.output
    assert res.stdout == "time,host,source,device,power_w,energy_j\n"  # the header alone: still valid CSV
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: no samples between 1970-01-01T00:00:00Z")


def test_the_count_goes_to_stderr(api_store: str) -> None:
    res = runner.invoke(app, ["export", "samples", "--run", "r1", "--store", api_store])
    assert res.exit_code == 0, res.output
    n = len(res.stdout.splitlines()) - 1
    assert res.stderr.startswith(f"exported {n} samples (") and n > 0
