"""jouled.query: typed rows with the CLI's JSON fields, the same numbers as `energy epochs/runs`, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import jouled.query
from jouled.cli import app
from jouled.config import Config
from jouled.errors import UserError
from jouled.query import EpochRow, NoMarkers, QueryError, RunRow, StoreError, UnknownRun, compute_rows
from jouled.store.sqlite import SqliteStore, parse_store_url, sqlite_url

from .conftest import GPU_W, HOST, PKG_W, T0_NS, WALL_W, fill_store

runner = CliRunner()


def test_runs_are_typed_rows_with_totals_counted_once(api_store: str) -> None:
    q = jouled.query.open(api_store, Config())
    runs = q.runs()
    assert [r.run for r in runs] == ["r1", "r2"]
    r1 = runs[0]
    assert isinstance(r1, RunRow)
    assert dataclasses.is_dataclass(r1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r1.energy_j = 0.0  # type: ignore[misc]
    assert r1.basis == "run"
    assert r1.duration_s == pytest.approx(6.0)
    # gpu0 only (the run names it; gpu1 is another job's) + the package; the wall meter beside, not added
    assert r1.total_devices == ("nvml:gpu0", "rapl:package-0")
    assert r1.energy_j == pytest.approx((GPU_W + PKG_W) * 6.0, rel=1e-6)
    assert r1.wall_j == pytest.approx(WALL_W * 6.0, rel=1e-6)
    assert r1.carbon_g == pytest.approx((GPU_W + PKG_W) * 6.0 / 3.6e6 * 100.0, rel=1e-6)
    assert runs[1].energy_j == pytest.approx((GPU_W + PKG_W) * 1.0, rel=1e-6)
    assert q.run_ids() == ["r1", "r2"]


def test_epochs_rows_and_scopes(api_store: str) -> None:
    q = jouled.query.open(api_store, Config())
    rows = q.epochs("r1")
    assert all(isinstance(r, EpochRow) for r in rows)
    assert [(r.epoch, r.device) for r in rows] == [(n, d) for n in range(3) for d in ("gpu0", "package-0", "wall")]
    gpu = [r for r in rows if r.device == "gpu0"]
    assert [r.energy_j for r in gpu] == pytest.approx([2 * GPU_W] * 3, rel=1e-6)
    assert {r.method for r in gpu} == {"counter"}
    assert isinstance(gpu[0].flags, tuple)
    assert gpu[0].carbon_g == pytest.approx(2 * GPU_W / 3.6e6 * 100.0, rel=1e-6)
    phases = q.epochs("r1", scope="phase")
    train = [r for r in phases if r.device == "package-0" and r.phase == "train"]
    assert [r.energy_j for r in train] == pytest.approx([1.5 * PKG_W] * 3, rel=1e-6)
    every = q.epochs("r1", scope="all")
    assert {r.scope for r in every} == {"run", "epoch", "phase"}
    assert len(every) == 3 * (1 + 3 + 6)


def test_cli_json_is_these_rows_byte_for_byte(api_store: str) -> None:
    q = jouled.query.open(api_store, Config())
    st = SqliteStore(parse_store_url(api_store), readonly=True)
    for scope in ("epoch", "all"):
        res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--scope", scope, "--format", "json", "--store", api_store])
        assert res.exit_code == 0, res.output
        api = q.epochs("r1", scope=scope).to_dicts()
        assert json.loads(res.stdout) == api
        # byte-identical to the JSON of the row dicts the CLI printed before the typed rows existed
        scopes = ("epoch", "phase", "run") if scope == "all" else (scope,)
        raw, _ = compute_rows(st, Config(), "r1", scopes)
        assert res.stdout == json.dumps(list(raw), indent=2) + "\n"
        assert json.dumps(api, indent=2) == json.dumps(list(raw), indent=2)
    res = runner.invoke(app, ["energy", "runs", "--format", "json", "--store", api_store])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == q.runs().to_dicts()
    from jouled.rows import run_totals

    raw, _ = compute_rows(st, Config(), None, ("run",))
    assert res.stdout == json.dumps(run_totals(raw), indent=2) + "\n"


def test_optional_fields_follow_the_json(tmp_path: Path) -> None:
    url = fill_store(tmp_path / "nocarbon.db", carbon=False)
    q = jouled.query.open(url, Config())
    row = q.epochs("r1")[0]
    assert "carbon_g" not in row.to_dict() and row.carbon_g is None  # no intensity known: no carbon in the JSON
    shared = q.epochs("r1", host_devices="share")
    pkg = next(r for r in shared if r.device == "package-0")
    assert pkg.to_dict()["share"] == pytest.approx(0.5)  # one of the host's two GPUs
    assert pkg.energy_j == pytest.approx(2 * PKG_W * 0.5, rel=1e-6)
    assert "share" not in next(r for r in shared if r.device == "gpu0").to_dict()


def test_to_pandas(api_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    q = jouled.query.open(api_store, Config())
    df = q.epochs("r1").to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == list(q.epochs("r1")[0].to_dict())
    assert df["energy_j"].sum() == pytest.approx(3 * 2 * (GPU_W + PKG_W + WALL_W), rel=1e-6)
    assert list(q.runs().to_pandas()["run"]) == ["r1", "r2"]
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(UserError, match=r"^to_pandas\(\) needs 'pandas', which is not installed — pip install pandas$"):
        q.runs().to_pandas()


def test_to_pandas_from_columns_is_the_frame_of_the_dicts(tmp_path: Path) -> None:
    """to_pandas builds the frame column by column: the same frame as pandas makes of the row dicts, with a field
    only some rows have (`share`: host devices only) a column where it first appears, NaN in the other rows."""
    pd = pytest.importorskip("pandas")
    for url in (fill_store(tmp_path / "c.db"), fill_store(tmp_path / "nc.db", carbon=False)):
        q = jouled.query.open(url, Config())
        for rows in (q.epochs("r1", scope="all"), q.epochs("r1", host_devices="share"), q.runs(),
                     jouled.query.Rows(q.epochs("r1", host_devices="share")[2:])):
            pd.testing.assert_frame_equal(rows.to_pandas(), pd.DataFrame(rows.to_dicts()))
        shared = q.epochs("r1", host_devices="share").to_pandas()
        assert "share" in shared.columns and shared["share"].isna().any() and shared["share"].notna().any()
    assert jouled.query.Rows().to_pandas().empty
    typed = EpochRow.from_dicts([*q.epochs("r1").to_dicts(), *q.epochs("r1", host_devices="share").to_dicts()])
    assert typed == [EpochRow.from_dict(d) for d in [*q.epochs("r1").to_dicts(),
                                                      *q.epochs("r1", host_devices="share").to_dicts()]]
    with pytest.raises(TypeError, match="unknown field"):
        EpochRow.from_dicts([q.epochs("r1").to_dicts()[0], {**q.epochs("r1").to_dicts()[0], "x": 1}])



def test_rows_from_the_table_equal_rows_from_the_dicts(tmp_path: Path) -> None:
    """`epochs()` makes each row of its table a typed row without copying its dict (`EpochRow.from_table`): the same
    rows as the copying path, the table's contract order kept, an optional field a row lacks absent from its JSON
    and None as an attribute; a dict in another key order comes out in the contract's order."""
    url = fill_store(tmp_path / "s.db")
    st = SqliteStore(parse_store_url(url), readonly=True)
    for host_devices in ("total", "share"):
        table, _ = compute_rows(st, Config(), "r1", ("epoch", "phase", "run"), host_devices)
        dicts = [dict(d) for d in table]
        typed = EpochRow.from_table(table)
        assert typed == EpochRow.from_dicts(dicts)
        assert [r.to_dict() for r in typed] == [{**d, "flags": list(d["flags"])} for d in dicts]
        assert all(isinstance(r.flags, tuple) for r in typed)
    gpu = next(r for r in typed if r.device == "gpu0")
    assert gpu.share is None and "share" not in gpu.to_dict()
    d = next(x for x in dicts if x["device"] == "gpu0")
    backwards = dict(reversed(list(d.items())))
    row = EpochRow.from_dict(backwards)
    assert list(row.to_dict()) == list(d) and row == EpochRow.from_dict(d)
    with pytest.raises(TypeError, match=r"field\(s\) \['run'\] missing"):
        EpochRow.from_dict({k: v for k, v in d.items() if k != "run"})
    # a row built by the dataclass itself has every field: its optional ones are in its JSON, as None
    full = dataclasses.replace(row, energy_j=1.0)
    assert full.to_dict()["share"] is None and full.energy_j == 1.0


def test_to_pandas_from_the_table_columns_is_the_frame_of_the_rows(tmp_path: Path) -> None:
    """`epochs()` rows keep their table, and to_pandas reads its columns while the rows are still its own: the
    frame of the row dicts, for every table shape (some series only in some windows, a window nobody has samples
    for, share, with and without carbon), and the rows' own path once the list was changed."""
    pd = pytest.importorskip("pandas")
    from jouled.model import Marker

    for name, carbon in (("c.db", True), ("nc.db", False)):
        url = fill_store(tmp_path / name, carbon=carbon)
        st = SqliteStore(parse_store_url(url))
        late = T0_NS + 1000 * 10**9  # long after every sample: windows without samples (carbon known, when it is)
        st.write_markers([Marker(late, HOST, "late", "run", "start", 0), Marker(late + 1, HOST, "late", "epoch", "start", 1, 0),
                          Marker(late + 2 * 10**9, HOST, "late", "epoch", "end", 2, 0),
                          Marker(late + 3 * 10**9, HOST, "late", "run", "end", 3)])
        st.close()
        q = jouled.query.open(url, Config())
        for run, scope, hd in (("r1", "epoch", "total"), ("r1", "all", "share"), ("late", "all", "total"),
                               ("r2", "epoch", "exclude")):
            rows = q.epochs(run, scope=scope, host_devices=hd)
            assert getattr(rows, "_table", None) is not None
            if run == "late":
                assert all("no-samples" in r.flags for r in rows) and all(("carbon_g" in r.to_dict()) == carbon for r in rows)
            want = pd.DataFrame(rows.to_dicts())
            pd.testing.assert_frame_equal(rows.to_pandas(), want)
            if len(rows) > 1:
                del rows[0]
                pd.testing.assert_frame_equal(rows.to_pandas(), pd.DataFrame(rows.to_dicts()))

def test_store_and_config_resolve_like_the_cli(api_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULED_STORE", api_store)
    assert [r.run for r in jouled.query.open().runs()] == ["r1", "r2"]
    monkeypatch.delenv("JOULED_STORE")
    cfg = tmp_path / "j.toml"
    cfg.write_text(f'[store]\npath = "{parse_store_url(api_store)}"\n')
    assert jouled.query.open(config=cfg).run_ids() == ["r1", "r2"]
    assert jouled.query.open(config=str(cfg)).run_ids() == ["r1", "r2"]
    c = Config()
    c.store.path = str(parse_store_url(api_store))
    assert jouled.query.open(config=c).run_ids() == ["r1", "r2"]


def test_errors_are_one_line_user_errors(api_store: str, tmp_path: Path) -> None:
    q = jouled.query.open(api_store, Config())
    with pytest.raises(UnknownRun) as e:
        q.epochs("nope")
    assert isinstance(e.value, UserError)
    assert str(e.value) == f"run 'nope': no markers in {parse_store_url(api_store)} — known runs: r1, r2"
    res = runner.invoke(app, ["energy", "epochs", "--run", "nope", "--store", api_store])
    assert res.exit_code == 2 and res.stderr.strip() == f"Error: {e.value}"
    with pytest.raises(QueryError, match="scope 'weeks': choose epoch, phase, run or all"):
        q.epochs("r1", scope="weeks")
    empty = tmp_path / "empty.db"
    SqliteStore(empty).close()
    with pytest.raises(NoMarkers, match="no markers yet"):
        jouled.query.open(sqlite_url(empty), Config()).runs()
    with pytest.raises(StoreError, match="no such log"):
        jouled.query.open(sqlite_url(tmp_path / "missing.db"), Config())
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database\n" * 100)
    with pytest.raises(StoreError) as bad:
        jouled.query.open(sqlite_url(junk), Config())
    assert "\n" not in str(bad.value) and str(junk) in str(bad.value)


def test_a_new_json_field_must_be_declared_in_the_row() -> None:
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['bogus'\] — add them to jouled.query.RunRow"):
        RunRow.from_dict({"run": "r", "bogus": 1})
    with pytest.raises(TypeError, match="missing"):
        EpochRow.from_dict({"run": "r"})


def test_table_limit_shows_both_ends_and_says_what_it_left_out(api_store: str) -> None:
    """A day of epochs is 100,000 rows, minutes of rich rendering: the table shows at most --limit rows (the first
    and the last halves around a ⋮ row) and names how to get the rest; csv and json keep every row."""
    st = SqliteStore(parse_store_url(api_store), readonly=True)
    raw, _ = compute_rows(st, Config(), "r1", ("epoch",))
    assert len(raw) > 4
    env = {"COLUMNS": "200"}
    res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--limit", "4", "--store", api_store], env=env)
    assert res.exit_code == 0, res.output
    body = [ln for ln in res.stdout.splitlines() if ln.startswith("│")]
    assert len(body) == 5 and "⋮" in body[2]  # 2 rows, ⋮, 2 rows
    assert body[0].split("│")[3].strip() == raw[0]["device"] and body[-1].split("│")[3].strip() == raw[-1]["device"]
    assert f"{len(raw) - 4:,} of {len(raw):,} rows left out" in " ".join(res.stdout.split())
    full = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--limit", "0", "--store", api_store], env=env)
    assert len([ln for ln in full.stdout.splitlines() if ln.startswith("│")]) == len(raw) and "left out" not in full.stdout
    csv_out = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--limit", "4", "--format", "csv", "--store", api_store])
    assert len(csv_out.stdout.strip().splitlines()) == len(raw) + 1
    epochs = sorted({r["epoch"] for r in raw})
    by = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--by", "epoch", "--limit", "2", "--store", api_store], env=env)
    totals = [ln.split("│")[1].strip() for ln in by.stdout.split("totals by epoch")[1].splitlines() if ln.startswith("│")]
    assert totals == [str(epochs[0]), "⋮", str(epochs[-1])]  # in number order, both ends
    bad = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--limit", "-2", "--store", api_store])
    assert bad.exit_code == 2 and "--limit -2" in bad.output
