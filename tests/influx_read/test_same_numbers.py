"""The same dataset in SQLite and in a real InfluxDB 1.x: `energy epochs|runs`, `export samples` and the Python API
give the same rows, field by field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import jouled.query
from jouled.cli import app
from jouled.store.influx import InfluxV1Store, open_influx
from jouled.store.reader import ReadStore
from jouled.store.sqlite import SqliteStore, sqlite_url
from tests.influx_read import dataset as ds
from tests.servers import ServerHandle

pytestmark = pytest.mark.influx
runner = CliRunner()


@pytest.fixture
def stores(tmp_path: Path, influxd: ServerHandle, influx_db: str) -> tuple[str, str, Path]:
    ss, ms, cs = ds.series(), ds.markers(), ds.carbon()
    db = tmp_path / "j.db"
    st = SqliteStore(db)
    ds.fill_sqlite(st, ss, ms, cs)
    st.close()
    ds.write_lines(influxd.url, influx_db, ds.influx_lines(ss, ms, cs))
    cfg = tmp_path / "j.toml"
    cfg.write_text('[carbon]\nzone = "DE"\n')
    return sqlite_url(db), f"influx://127.0.0.1:{influxd.port}/{influx_db}", cfg


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equal, floats to the last few ulps (the counter math subtracts large, equal numbers either way)."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} rows != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _cli_json(*args: str) -> Any:
    res = runner.invoke(app, [*args, "--format", "json", "--no-progress"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_store_reads_match(stores: tuple[str, str, Path]) -> None:
    sq_url, ix_url, _cfg = stores
    sq: ReadStore = SqliteStore(sq_url[len("sqlite://"):], readonly=True)
    ix = open_influx(ix_url)
    assert isinstance(ix, InfluxV1Store) and isinstance(ix, ReadStore)
    try:
        assert [(k.host, k.source, k.device) for k in ix.series()] == [(k.host, k.source, k.device) for k in sq.series()]
        for ki, ks in zip(ix.series(), sq.series(), strict=True):
            mi, ms = ki.meta, ks.meta
            if ms is None:  # undeclared in the log: the forwarder tags it with the default role
                assert mi is not None and mi.role == ds.default_role(ks.source, ks.device)
            else:
                assert mi is not None and (mi.role, mi.kind, mi.host_wide, mi.comparison) == (
                    ms.role, ms.kind, ms.host_wide, ms.comparison)
            a, b = ix.read_series(ki, ds.T0 + 50 * ds.NS, ds.T0 + 150 * ds.NS), sq.read_series(ks, ds.T0 + 50 * ds.NS,
                                                                                             ds.T0 + 150 * ds.NS)
            assert np.array_equal(a.time_ns, b.time_ns)
            assert np.array_equal(a.power_w, b.power_w, equal_nan=True)  # bit-identical through line protocol
            assert np.array_equal(a.energy_j, b.energy_j, equal_nan=True)
        assert ix.read_markers() == sq.read_markers()
        assert ix.read_markers(attrs=False) == sq.read_markers(attrs=False)  # a query's markers: no attrs
        assert ix.read_markers("r2", "h1") == sq.read_markers("r2", "h1")
        assert ix.read_markers("r2", "h2") == []
        assert ix.runs() == sq.runs() == ["r1", "r2", "r3"]
        for zone, fc in ((None, False), ("DE", False), ("DE", True), ("FR", False)):
            # same time, two zones: the order between them is not part of the contract
            assert ix.read_carbon(zone, forecast=fc) == sorted(sq.read_carbon(zone, forecast=fc),
                                                               key=lambda c: (c.time_ns, c.zone, c.provider))
        assert ix.read_carbon("DE", ds.T0, ds.T0 + 90 * ds.NS) == sq.read_carbon("DE", ds.T0, ds.T0 + 90 * ds.NS)
        assert ix.time_range() == sq.time_range()
        assert ix.watermarks() == {}
    finally:
        ix.close()
        sq.close()


def test_energy_epochs_and_runs_match(stores: tuple[str, str, Path]) -> None:
    sq_url, ix_url, cfg = stores
    for run in ("r1", "r2", "r3"):
        a = _cli_json("energy", "epochs", "--run", run, "--scope", "all", "--config", str(cfg), "--store", sq_url)
        b = _cli_json("energy", "epochs", "--run", run, "--scope", "all", "--config", str(cfg), "--store", ix_url)
        assert a and any(r["carbon_g"] is not None for r in a)
        assert any("gap" in r["flags"] for r in a) or run != "r1"
        _same(b, a, f"epochs {run}")
    a = _cli_json("energy", "runs", "--config", str(cfg), "--store", sq_url)
    b = _cli_json("energy", "runs", "--config", str(cfg), "--store", ix_url)
    assert sorted(r["run"] for r in a) == ["r1", "r2", "r3"] and a[0]["wall_j"] is not None
    _same(b, a, "runs")


def test_export_samples_match(stores: tuple[str, str, Path]) -> None:
    sq_url, ix_url, cfg = stores
    outs = []
    for url in (sq_url, ix_url):
        res = runner.invoke(app, ["export", "samples", "--run", "r1", "--config", str(cfg), "--store", url])
        assert res.exit_code == 0, res.output
        outs.append(res.stdout)
    assert outs[0].count("\n") > 1000
    assert outs[1] == outs[0]
    res = runner.invoke(app, ["export", "samples", "--from", str(ds.T0 + 10 * ds.NS), "--config", str(cfg),
                              "--store", ix_url, "--format", "line-protocol"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("power,host=")


def test_python_api_match(stores: tuple[str, str, Path]) -> None:
    sq_url, ix_url, cfg = stores
    with jouled.query.open(sq_url, cfg) as qa, jouled.query.open(ix_url, cfg) as qb:
        assert qb.run_ids() == qa.run_ids()
        _same(qb.epochs("r1", scope="phase").to_dicts(), qa.epochs("r1", scope="phase").to_dicts(), "phase")
        _same(qb.runs().to_dicts(), qa.runs().to_dicts(), "runs")
        assert qb.problems() == qa.problems()
