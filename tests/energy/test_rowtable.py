"""RowTable: the rows of `energy epochs` held as columns — each way of reading them gives the same rows and text."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jouled.carbon.series import IntensitySeries
from jouled.config import Config
from jouled.energy import SeriesArrays
from jouled.model import Marker
from jouled.query import compute_rows, load_series
from jouled.rows import energy_rows, energy_table
from jouled.rowtable import RowTable, column, csv_text, json_text
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore
from jouled.windows import Window, windows_from_markers

S = 1_000_000_000
CSV_KEYS = ("run", "scope", "epoch", "phase", "arch", "host", "source", "device", "start", "end", "duration_s",
            "energy_j", "method", "samples", "max_gap_s", "flags", "carbon_g", "role")
KEYS = ("run", "scope", "epoch", "phase", "arch", "host", "source", "device", "role", "start", "end", "start_ns",
        "end_ns", "duration_s", "energy_j", "method", "samples", "max_gap_s", "flags", "share", "carbon_g", "nope")


def _series(odd_name: bool = False) -> dict[tuple[str, str], SeriesArrays]:
    t = np.arange(0, 101, dtype=np.int64) * S // 10  # 0 … 10 s at 10 Hz
    nan = np.full(t.size, np.nan)
    secs = t / S
    out = {}
    for i, w in enumerate((100.0, 200.0)):
        out[("nvml", f"gpu{i}")] = SeriesArrays(t, np.full(t.size, w), w * secs, "nvml", f"gpu{i}", 0.1)
    gappy = np.r_[t[:30], t[60:]]  # a 3 s hole: gap flags on the windows across it
    wall = "wall %s \"ü\"" if odd_name else "wall"  # a %-format and JSON escapes in a device name
    out[("visa", wall)] = SeriesArrays(gappy, np.full(gappy.size, 500.0), np.full(gappy.size, np.nan), "visa", wall, 0.1)
    out[("rapl", "package-0")] = SeriesArrays(t, nan, 50.0 * secs, "rapl", "package-0", 0.1)
    return out


def _windows(gpus: bool) -> list[Window]:
    g0, g1 = (("cuda:0",), ("gpu1",)) if gpus else ((), ())
    return [
        Window("r", "run", None, None, "cell-1", g0 + g1, 0, 10 * S),
        Window("r", "epoch", 0, None, "cell-1", g0, 1 * S, 3 * S),
        Window("r", "epoch", 1, "train", None, g1, 2 * S, 7 * S),
        Window("r", "epoch", 2, None, None, g0, 20 * S, 25 * S),  # after the samples: no-samples rows
    ]


CASES = [
    pytest.param(False, "total", False, False, id="every-series-every-window"),
    pytest.param(True, "total", False, False, id="windows-name-gpus"),
    pytest.param(True, "share", True, False, id="share-with-carbon"),
    pytest.param(False, "exclude", True, True, id="exclude-odd-names"),
    pytest.param(False, "share", True, True, id="share-odd-names-grid"),
]


def _table(gpus: bool, policy: Any, carbon: bool, odd: bool) -> RowTable:
    return energy_table(_windows(gpus), _series(odd), host_devices=policy,
                        carbon=IntensitySeries.constant(250.0) if carbon else None)


@pytest.mark.parametrize(("gpus", "policy", "carbon", "odd"), CASES)
def test_each_way_of_reading_gives_the_same_rows(gpus: bool, policy: Any, carbon: bool, odd: bool) -> None:
    bulk = _table(gpus, policy, carbon, odd).rows()
    one_by_one = _table(gpus, policy, carbon, odd)
    assert [one_by_one[i] for i in range(len(one_by_one))] == bulk  # the per-row builder and the bulk one agree
    fresh = _table(gpus, policy, carbon, odd)
    for k in KEYS:  # the columns, read before any row is built
        assert fresh.column(k) == [r.get(k) for r in bulk], k
    assert fresh._cache is None  # reading columns built no row
    assert energy_rows(_windows(gpus), _series(odd), host_devices=policy,
                       carbon=IntensitySeries.constant(250.0) if carbon else None) == bulk
    assert list(fresh) == bulk and fresh == bulk and fresh[1:3] == bulk[1:3] and fresh[-1] == bulk[-1]
    if policy == "share":
        assert any("share" in r for r in bulk)
    if not gpus:
        assert any("no-samples" in r["flags"] for r in bulk)
    assert any(r["flags"] for r in bulk)  # rows with flags take the text writers' nested-list path


@pytest.mark.parametrize(("gpus", "policy", "carbon", "odd"), CASES)
def test_text_from_the_columns_is_the_text_of_the_rows(gpus: bool, policy: Any, carbon: bool, odd: bool) -> None:
    rows = _table(gpus, policy, carbon, odd).rows()
    assert json_text(_table(gpus, policy, carbon, odd)) == json.dumps(rows, indent=2)
    assert json_text(rows) == json.dumps(rows, indent=2)
    # the CSV as the CLI wrote it row by row before (csv.DictWriter, lists space-joined); also every key, one no row
    # has (`nope`) and `share` (some series only) among them
    for keys in (CSV_KEYS, KEYS):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (" ".join(r[k]) if isinstance(r.get(k), (list, tuple)) else r.get(k)) for k in keys})
        assert csv_text(_table(gpus, policy, carbon, odd), keys) == buf.getvalue()
        assert csv_text(rows, keys) == buf.getvalue()


def test_a_row_read_is_kept_as_a_list_would_keep_it() -> None:
    t = _table(True, "total", False, False)
    row = t[2]
    row["note"] = "mine"
    assert t[2] is row and list(t)[2] is row and t.column("note")[2] == "mine"
    assert json.loads(json_text(t))[2]["note"] == "mine"  # a table with a built row writes from its rows
    with pytest.raises(IndexError):
        t[len(t)]
    assert t[-len(t)] == t[0]
    joined = RowTable.from_dicts([*t, {"run": "x"}])
    assert len(joined) == len(t) + 1 and joined[-1] == {"run": "x"} and column(joined, "run")[-1] == "x"
    assert joined.examples() == list(joined)
    assert repr(t) == f"RowTable({len(t)} rows)" and t != 3
    empty = energy_table([], _series())
    assert len(empty) == 0 and json_text(empty) == "[]" and list(empty) == []


def _store(tmp_path: Path, markers: list[Marker]) -> SqliteStore:
    st = SqliteStore(tmp_path / "log.db")
    t = np.arange(0, 600, dtype=np.int64) * S // 10 + 100 * S  # 100 … 160 s at 10 Hz
    st.write_batches([
        ChunkBatch(SeriesKey("h", "nvml", f"gpu{i}"), t, np.full(t.size, 100.0 + i), (100.0 + i) * (t / S))
        for i in range(2)
    ])
    st.write_markers(markers)
    return st


def _m(t_s: float, scope: str, event: str, seq: int, epoch: int | None = None) -> Marker:
    return Marker(int(t_s * S), "h", "r", scope, event, seq, epoch)


@pytest.mark.parametrize("stray", [False, True], ids=["every-marker-pairs", "a-start-without-end-before"])
def test_compute_rows_reads_ahead_what_the_windows_alone_would_read(tmp_path: Path, stray: bool) -> None:
    """compute_rows starts reading over its markers' span before pairing them; the rows are those of the windows'
    own span either way (a start that never ends widens the markers' span: the windows' span is read again)."""
    markers = [_m(110, "epoch", "start", 1, 0), _m(120, "epoch", "end", 2, 0), _m(121, "epoch", "start", 3, 1),
               _m(150, "epoch", "end", 4, 1)]
    if stray:
        markers.append(_m(60, "epoch", "start", 0, 9))  # seq 0: paired first, never ends
    st = _store(tmp_path, markers)
    rows, problems = compute_rows(st, Config(), "r", ("epoch",))
    assert bool(problems) == stray
    wins = [w for w in windows_from_markers(st.read_markers("r"))[0] if w.scope == "epoch"]
    want = energy_rows(wins, load_series(st, "h", wins[0].start_ns, wins[-1].end_ns))
    assert list(rows) == want and len(want) == 4
    assert rows[0]["energy_j"] == pytest.approx(1000.0) and rows[3]["energy_j"] == pytest.approx(29 * 101.0)


def _dictwriter(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(keys), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (" ".join(r[k]) if isinstance(r.get(k), (list, tuple)) else r.get(k)) for k in keys})
    return buf.getvalue()


def test_csv_text_spells_and_quotes_as_the_csv_module() -> None:
    keys = ("name", "x", "n", "flags", "ok", "none")
    rows = [
        {"name": "a,b", "x": float("nan"), "n": 3, "flags": ("gap", "edge"), "ok": True, "none": None},
        {"name": 'say "hi"', "x": float("inf"), "n": -1, "flags": (), "ok": False, "none": None},
        {"name": "two\nlines", "x": -float("inf"), "n": 2**70, "flags": ["x"], "ok": None, "none": None},
        {"name": "", "x": 1e-300, "n": 0, "flags": ("a,b",), "ok": 1.5, "none": None},
        {"name": " spaced ", "x": None, "n": None, "flags": ("no-samples",), "ok": "y"},
        {"name": "one", "x": 1.0, "n": 1, "flags": (), "ok": 1},  # True == 1 == 1.0: each spelt as its own type
    ]
    assert csv_text(rows, keys) == _dictwriter(rows, keys)
    assert csv_text([], keys) == _dictwriter([], keys)
    assert csv_text(rows, ("name",)) == _dictwriter(rows, ("name",))  # one column: an empty field is ""
    assert json_text(rows) == json.dumps(rows, indent=2)


def test_a_column_of_equal_values_of_different_types_keeps_each_spelling() -> None:
    from jouled.rowtable import _encode_column

    assert _encode_column([True, 1, 1.0, "a", None, 1]) == ["true", "1", "1.0", '"a"', "null", "1"]
    assert _encode_column([1, 2.5, None, float("nan")]) == ["1", "2.5", "null", "NaN"]


def test_the_cli_writes_a_numpy_scalar_in_a_window_through_the_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """A value json's encoder refuses (a numpy integer from some store) sends the CLI back to the rows' path,
    which converts it, instead of failing."""
    from jouled.energy_cli import _emit_rows

    w = Window("r", "epoch", np.int64(3), None, None, (), 1 * S, 3 * S)  # type: ignore[arg-type]
    table = energy_table([w], _series())
    with pytest.raises(TypeError):
        json_text(energy_table([w], _series()))
    _emit_rows(table, "json")
    rows = json.loads(capsys.readouterr().out)
    assert {r["epoch"] for r in rows} == {3} and len(rows) == len(table)
    _emit_rows(energy_table([w], _series()), "csv")
    assert capsys.readouterr().out.splitlines()[1].split(",")[2] == "3"
