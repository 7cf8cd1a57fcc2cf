"""Hostile names through a real InfluxDB 1.x: run, host and device names and arch/phase strings that look like
InfluxQL, quotes, paths, parameters, unicode and backslashes are stored via line protocol, read back exactly, give the
same energy rows as SQLite, and the database is intact afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.model import Marker
from jouled.series import SeriesMeta
from jouled.store.influx import open_influx
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url
from tests.influx_read import dataset as ds
from tests.servers import ServerHandle

pytestmark = pytest.mark.influx
runner = CliRunner()

# names that can be tags (InfluxDB tags hold no newline, nor a backslash at the end or before , = space)
TAG_NAMES = ["x'; DROP MEASUREMENT power; --", 'a"b', "a'b", "../../etc", "Ünïcødé-模型-🚀", "a\\b", "$run",
             "a b,c=d", 'x" OR "1"="1']
# strings fields hold anything
FIELD_NAMES = [*TAG_NAMES, "a\nb", "tab\there", "end\\", '\\"', "'; DROP DATABASE x; --"]


def _markers() -> list[Marker]:
    out = []
    for i, name in enumerate(TAG_NAMES):
        t = ds.T0 + (10 + 20 * i) * ds.NS
        arch = FIELD_NAMES[i % len(FIELD_NAMES)]
        phase = FIELD_NAMES[(i + 9) % len(FIELD_NAMES)]
        host = TAG_NAMES[(i + 1) % len(TAG_NAMES)]
        gpus: tuple[str, ...] = ()  # every GPU of the host: the window covers the hostile-named device
        out += [
            Marker(t, host, name, "run", "start", 0, arch=arch, gpus=gpus, attrs={"k": name, "n": "a\nb"}),
            Marker(t + ds.NS, host, name, "epoch", "start", 1, epoch=0, phase=phase, arch=arch, gpus=gpus),
            Marker(t + 9 * ds.NS, host, name, "epoch", "end", 2, epoch=0, phase=phase, arch=arch, gpus=gpus),
            Marker(t + 10 * ds.NS, host, name, "run", "end", 3, arch=arch, gpus=gpus),
        ]
    return out


def _series() -> list[ds.Series]:
    out = []
    for i, name in enumerate(TAG_NAMES):
        host = TAG_NAMES[(i + 1) % len(TAG_NAMES)]
        n = 20 * 10 * len(TAG_NAMES) + 200
        t = ds.T0 + np.arange(n, dtype=np.int64) * (ds.NS // 10)
        p = np.full(n, 100.0 + i)
        e = np.cumsum(p / 10)
        out.append(ds.Series(SeriesKey(host, "nvml", name), SeriesMeta(role="gpu", power_period_s=0.1, counter_period_s=0.1),
                             t, p, e))
    return out


def test_hostile_names_round_trip(tmp_path: Path, influxd: ServerHandle, influx_db: str) -> None:
    ms, ss = _markers(), _series()
    sentinel = ds.Series(SeriesKey("keep", "nvml", "gpu0"), None, np.array([ds.T0], np.int64), np.array([1.0]),
                         np.array([np.nan]))
    ds.write_lines(influxd.url, influx_db, ds.influx_lines([*ss, sentinel], ms, []))
    st = SqliteStore(tmp_path / "j.db")
    ds.fill_sqlite(st, [*ss, sentinel], ms, [])
    st.close()
    url = f"influx://127.0.0.1:{influxd.port}/{influx_db}"
    ix = open_influx(url)
    sq = SqliteStore(tmp_path / "j.db", readonly=True)
    try:
        assert ix.runs() == sorted(TAG_NAMES) == sq.runs()
        for name in TAG_NAMES:
            got = ix.read_markers(name)
            assert got == sq.read_markers(name)  # every field as the log has it (gpus: space-joined in both)
            want = [m for m in ms if m.run == name]
            assert [(m.host, m.arch, m.phase, m.attrs) for m in got] == [(m.host, m.arch, m.phase, m.attrs) for m in want]
        assert ix.read_markers("x") == [] and ix.read_markers("'") == [] and ix.read_markers("") == []
        keys = {(k.host, k.device) for k in ix.series()}
        for s in ss:
            assert (s.key.host, s.key.device) in keys
            d = ix.read_series(s.key, None, None)
            assert np.array_equal(d.time_ns, s.t) and np.array_equal(d.power_w, s.p)
    finally:
        ix.close()
        sq.close()
    sq_url = sqlite_url(tmp_path / "j.db")
    for name in TAG_NAMES:
        rows = []
        for store in (sq_url, url):
            res = runner.invoke(app, ["energy", "epochs", "--run", name, "--format", "json", "--no-progress", "--store", store])
            assert res.exit_code == 0, res.output
            rows.append(json.loads(res.stdout))
        assert rows[0] and rows[1] == rows[0]
        assert rows[1][0]["run"] == name and rows[1][0]["energy_j"] > 0
    # the database is intact: every measurement and the sentinel point are still there
    names = {v[0] for s in influxd.influxql("SHOW MEASUREMENTS", influx_db) for v in s["values"]}
    assert names == {"power", "marker"}
    assert influxd.influxql('SELECT count("power_w") FROM "power" WHERE "host" = \'keep\'', influx_db)[0]["values"][0][1] == 1
    assert {v[0] for s in influxd.influxql("SHOW DATABASES") for v in s["values"]} >= {influx_db}
