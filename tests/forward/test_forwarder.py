"""The forwarder against a real InfluxDB 1.x (and VictoriaMetrics for the v2 path): a shim-GPU daemon's log arrives
whole — through an InfluxDB restart, a daemon SIGKILL, a refused point, a wrong database and a server down at start."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from jouled.config import Config, NvmlConfig
from jouled.daemon.app import build_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.daemon.forward import build_forwarder
from jouled.daemon.forward.forwarder import Forwarder, quarantine_path
from jouled.model import Marker
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore, sqlite_url
from tests.brokers import free_port
from tests.forward.common import T0_NS, assert_same, fill_store, influx_config, influx_totals, log_totals, wait_for
from tests.servers import ServerHandle, influxd_available, start_influxd, start_victoria, victoria_available
from tests.sources.nvml_shim import make_shim

pytestmark = [
    pytest.mark.influx,
    pytest.mark.skipif(not influxd_available(), reason="influxd not installed (Debian package influxdb)"),
]
REPO = Path(__file__).resolve().parents[2]
_dbs = itertools.count()


@pytest.fixture(scope="module")
def influx() -> Iterator[ServerHandle]:
    srv = start_influxd()
    yield srv
    srv.stop()


@pytest.fixture
def db(influx: ServerHandle) -> str:
    name = f"fwd{next(_dbs)}"
    influx.create_database(name)
    return name


def start(cfg: Config, devices: int = 2, rate_hz: float = 50.0) -> BackgroundDaemon:
    src = NvmlSource(NvmlConfig(), nvml_module=make_shim(devices))
    d = build_daemon(cfg, sqlite_url(cfg.store.path), rate_hz=rate_hz, sources=[src], markers=False)
    return BackgroundDaemon(d).start(wait_markers=False)


def fwd_status(bd: BackgroundDaemon) -> dict[str, object]:
    return dict(bd.daemon.status()["forwarder"])


def drain(cfg: Config) -> None:
    """What a restarted daemon's forwarder does first: send what the log holds past the cursors."""
    st = SqliteStore(Path(cfg.store.path))
    fwd = build_forwarder(cfg, st)
    fwd.drain()
    fwd.close()


def caught_up(bd: BackgroundDaemon) -> bool:
    """Samples were forwarded (not only markers or health) and nothing stored is waiting."""
    hold = bd.daemon.maintain_max_id
    s = fwd_status(bd)
    return hold is not None and (hold() or 0) > 0 and s["backlog_points"] == 0


def test_daemon_forwards_samples_markers_and_health(
    influx: ServerHandle, db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jouled.cli import _print_status_table

    cfg = influx_config(influx.url, db, tmp_path)
    bd = start(cfg)
    try:
        side = SqliteStore(Path(cfg.store.path))  # markers as the recorder stores them: the forwarder tails the table
        now = time.time_ns()
        side.write_markers([Marker(now + i, "testhost", "run 1", "epoch", ev, i, epoch=0, gpus=("gpu0",),
                                   attrs={"a": i}) for i, ev in enumerate(("start", "end"))])
        # caught_up also says maintenance is held at the forwarder's chunk cursor (Daemon.maintain_max_id)
        wait_for(lambda: caught_up(bd), what="the forwarder to catch up")
        wait_for(lambda: bool(influx.influxql("SELECT count(lag_s) FROM jouled_health", db)), what="health points")
        st = fwd_status(bd)
        assert st["errors"] == 0 and st["quarantined"] == 0 and st["lag_s"] is not None
        _print_status_table(bd.daemon.status())  # what `jouled status` prints
        out = capsys.readouterr().out
        assert f"forwarding to {influx.url}" in out and "0 errors" in out
    finally:
        bd.stop()
    # no drain: the forwarder's last pass after the final flush sent what that flush wrote
    assert_same(log_totals(Path(cfg.store.path)), influx_totals(influx, db))
    rows = influx.influxql('SELECT * FROM marker GROUP BY "seq"', db)
    assert len(rows) == 2
    assert {r["values"][0][r["columns"].index("attrs")] for r in rows} == {'{"a":0}', '{"a":1}'}
    tags = influx.influxql("SHOW TAG VALUES FROM power WITH KEY IN (role, kind, scope, source)", db)
    got = {v[0]: v[1] for v in tags[0]["values"]} if len(tags) == 1 else {}
    assert {tuple(v) for v in tags[0]["values"]} == {("kind", "measured"), ("role", "gpu"), ("scope", "device"),
                                                     ("source", "nvml")}, got
    sources = influx.influxql('SHOW TAG VALUES FROM jouled_health WITH KEY = "source"', db)
    assert {v[1] for v in sources[0]["values"]} == {"forwarder", "nvml"}


def test_influx_restart_mid_run_catches_up(influx: ServerHandle, db: str, tmp_path: Path) -> None:
    cfg = influx_config(influx.url, db, tmp_path)
    bd = start(cfg)
    try:
        wait_for(lambda: caught_up(bd), what="first writes")
        influx.kill()
        try:
            wait_for(lambda: int(fwd_status(bd)["errors"]) > 0, what="a failed write")  # type: ignore[call-overload]
            assert fwd_status(bd)["state"] == "retrying"
            wait_for(lambda: int(fwd_status(bd)["backlog_points"]) > 200, what="a backlog")  # type: ignore[call-overload]
        finally:
            influx.start()
        wait_for(lambda: caught_up(bd), what="catch-up after the restart")
    finally:
        bd.stop()
    drain(cfg)
    assert_same(log_totals(Path(cfg.store.path)), influx_totals(influx, db))


def test_sigkill_daemon_mid_batch_no_duplicates_nothing_missing(influx: ServerHandle, db: str, tmp_path: Path) -> None:
    store = tmp_path / "kill.db"
    argv = [sys.executable, "-m", "tests.forward.influx_daemon", "--store", str(store), "--influx", influx.url,
            "--database", db, "--devices", "4", "--rate", "100", "--batch-size", "50"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for run_s in (1.5, 1.0):
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: bool(influx.influxql("SELECT count(power_w) FROM power", db)), what="first points")
            time.sleep(run_s)  # small batches: the kill lands between a write and its cursor commit, or inside one
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
    cfg = influx_config(influx.url, db, tmp_path, host="fwd")
    cfg.store.path = str(store)
    drain(cfg)
    assert_same(log_totals(store), influx_totals(influx, db))


def test_refused_points_are_quarantined_and_the_rest_flows(influx: ServerHandle, db: str, tmp_path: Path) -> None:
    cfg = influx_config(influx.url, db, tmp_path, host="h")
    st = fill_store(Path(cfg.store.path))
    old_ns = 1_000_000_000_000_000_000  # 2001: its own shard, where power_w is made a string below
    st.write_batches([ChunkBatch(SeriesKey("h", "nvml", "gpu0"), np.array([old_ns]), np.array([300.0]), np.array([1.0]))])
    st.write_batches([ChunkBatch(SeriesKey("h", "nvml", "bad\\"), np.array([T0_NS]), np.array([1.0]), np.array([1.0]))])
    r = httpx.post(f"{influx.url}/write", params={"db": db}, content=f'power,host=h,device=gpu0 power_w="oops" {old_ns - 1}')
    assert r.status_code == 204
    fwd = build_forwarder(cfg, st)
    fwd.drain()
    q = [json.loads(ln) for ln in quarantine_path(Path(cfg.store.path)).read_text().splitlines()]
    assert len(q) == 2 and fwd.stats.quarantined == 2
    conflict = next(r for r in q if r["stream"] == "power" and str(old_ns) in r["line"])
    assert "field type conflict" in conflict["reason"]
    assert any("backslash" in r["reason"] and "bad" in r["reason"] for r in q)
    log = log_totals(Path(cfg.store.path))
    del log[("h", "bad\\")]
    n, total, ne, emax = log[("h", "gpu0")]
    log[("h", "gpu0")] = (n - 1, total - 300.0, ne - 1, emax)
    assert_same(log, influx_totals(influx, db, where=f"WHERE time >= {T0_NS}"))


@contextlib.contextmanager
def refused_forwarder(cfg: Config, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Forwarder, list[str]]]:
    """A forwarder over a filled log, run in its thread until InfluxDB has refused it a few times with a config
    error; yields it and the ERROR lines logged so far (stopped when the block ends)."""
    cfg.influx.max_retry_s = 0.1
    fill_store(Path(cfg.store.path))
    fwd = build_forwarder(cfg, SqliteStore(Path(cfg.store.path)))
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="jouled.forward")
    t = threading.Thread(target=fwd.run, args=(stop,))
    t.start()
    try:
        wait_for(lambda: fwd.stats.errors >= 3, what="several refused writes")
        assert fwd.stats.state == "config-error"
        yield fwd, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        stop.set()
        t.join(10)


def test_wrong_database_is_one_line_then_catches_up(
    influx: ServerHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"later{next(_dbs)}"
    cfg = influx_config(influx.url, name, tmp_path, host="h")
    with refused_forwarder(cfg, caplog) as (fwd, errors):
        assert len(errors) == 1, errors  # once per distinct error, not per retry
        assert "[influx] database" in errors[0] and name in errors[0] and "\n" not in errors[0]
        influx.create_database(name)
        wait_for(lambda: fwd.stats.state == "idle" and fwd.stats.backlog_points == 0, what="catch-up")
    assert any("writing again" in r.getMessage() for r in caplog.records)
    assert_same(log_totals(Path(cfg.store.path)), influx_totals(influx, name))


def test_server_down_at_start_no_crash_catches_up_later(tmp_path: Path) -> None:
    port = free_port()
    cfg = influx_config(f"http://127.0.0.1:{port}", "late", tmp_path)
    bd = start(cfg)
    srv = None
    try:
        wait_for(lambda: int(fwd_status(bd)["errors"]) > 0, what="a failed write")  # type: ignore[call-overload]
        assert "cannot connect" in str(fwd_status(bd)["last_error"])
        assert bd.thread.is_alive()
        srv = start_influxd(port)
        srv.create_database("late")
        wait_for(lambda: caught_up(bd), what="catch-up once InfluxDB is there")
        bd.stop()
        drain(cfg)
        assert_same(log_totals(Path(cfg.store.path)), influx_totals(srv, "late"))
    finally:
        if bd.thread.is_alive():
            bd.stop()
        if srv is not None:
            srv.stop()


def test_two_daemons_two_hosts_one_database(influx: ServerHandle, db: str, tmp_path: Path) -> None:
    cfgs = [influx_config(influx.url, db, tmp_path, host=h) for h in ("alpha", "beta")]
    daemons = [start(c) for c in cfgs]
    try:
        for bd in daemons:
            wait_for(lambda bd=bd: caught_up(bd), what="both forwarders")  # type: ignore[misc]
    finally:
        for bd in daemons:
            bd.stop()
    for c in cfgs:  # a clean stop forwards the final flush too: nothing to drain
        host = c.daemon.host
        log = log_totals(Path(c.store.path))
        assert_same(log, influx_totals(influx, db, where=f"WHERE host = '{host}'"))


@pytest.mark.skipif(not victoria_available(), reason="victoria-metrics not installed")
def test_v2_api_against_victoriametrics(tmp_path: Path) -> None:
    pytest.importorskip("influxdb_client")
    vm = start_victoria()
    try:
        cfg = influx_config(vm.url, "", tmp_path, host="h")
        cfg.influx.api = "v2"
        cfg.influx.org, cfg.influx.bucket = "o", "b"
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        token.chmod(0o600)
        cfg.influx.token_file = str(token)
        t0 = time.time_ns() - 60 * 10**9  # VictoriaMetrics keeps one month by default: recent points
        st = fill_store(Path(cfg.store.path), t0_ns=t0)
        st.write_markers([Marker(t0, "h", "r", "run", "start", 0, epoch=1)])
        fwd = build_forwarder(cfg, st)
        assert fwd.drain() == 1001 and fwd.stats.errors == 0
        fwd.close()
        httpx.get(f"{vm.url}/internal/force_flush", timeout=10)
        r = httpx.get(f"{vm.url}/api/v1/export", params={"match[]": '{__name__="power_power_w"}'}, timeout=10)
        series = [json.loads(ln) for ln in r.text.splitlines()]
        counts = {s["metric"]["device"]: len(s["values"]) for s in series}
        assert counts == {"gpu0": 500, "gpu1": 500}
        assert {s["metric"]["host"] for s in series} == {"h"}
    finally:
        vm.stop()


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    from jouled.errors import UserError

    cfg = influx_config("ftp://x", "d", tmp_path)
    with pytest.raises(UserError, match=r"\[influx\] url"):
        build_forwarder(cfg, SqliteStore(tmp_path / "x.db"))
    cfg = influx_config("http://127.0.0.1:1", "d", tmp_path)
    cfg.influx.api = "v2"
    cfg.influx.org = "o"
    with pytest.raises(UserError, match="token"):
        build_forwarder(cfg, SqliteStore(tmp_path / "y.db"))


def test_carbon_allocations_and_a_changed_forecast(influx: ServerHandle, db: str, tmp_path: Path) -> None:
    from jouled.model import Allocation, CarbonPoint

    cfg = influx_config(influx.url, db, tmp_path, host="h")
    st = SqliteStore(Path(cfg.store.path))
    now = time.time_ns()
    st.write_carbon([CarbonPoint(now - k * 300 * 10**9, "DE", "trace", 300.0 + k) for k in range(5)])
    st.write_carbon([CarbonPoint(now + 3600 * 10**9, "DE", "trace", 111.0, forecast=True)])
    st.write_allocations([Allocation(now, "s1", 3, 1, 0.75, 250.0)])
    fwd = build_forwarder(cfg, st)
    assert fwd.drain() == 7
    assert fwd.drain() == 0  # nothing new: nothing re-sent
    st.write_carbon([CarbonPoint(now + 3600 * 10**9, "DE", "trace", 222.0, forecast=True)])  # a revised forecast
    assert fwd.drain() == 1
    fwd.close()
    actual = influx.influxql("SELECT count(intensity_g_per_kwh) FROM carbon WHERE forecast = 'false'", db)
    assert actual[0]["values"][0][1] == 5
    fc = influx.influxql("SELECT intensity_g_per_kwh FROM carbon WHERE forecast = 'true'", db)
    assert [v[1] for v in fc[0]["values"]] == [222.0]
    alloc = influx.influxql("SELECT gpus_sampling, lambda_s FROM allocation", db)
    assert alloc[0]["values"][0][1:] == [3, 0.75]
    # a restarted forwarder re-reads the carbon lookback (idempotent) but not the allocations (rowid cursor)
    fwd2 = build_forwarder(cfg, SqliteStore(Path(cfg.store.path)))
    assert fwd2.drain() == 6
    fwd2.close()
    assert influx.influxql("SELECT count(intensity_g_per_kwh) FROM carbon", db)[0]["values"][0][1] == 6


def test_disk_budget_is_one_loud_line(
    influx: ServerHandle, db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = influx_config(influx.url, db, tmp_path, host="h")
    cfg.influx.disk_budget_mb = 0.01  # 10 kB: any log is past it
    st = fill_store(Path(cfg.store.path))
    fwd = build_forwarder(cfg, st)
    caplog.set_level(logging.INFO, logger="jouled.forward")
    fwd.drain()
    fwd.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "disk_budget_mb" in lines[0] and "\n" not in lines[0]
    assert fwd.status()["over_disk_budget"] is True


def test_refused_credentials_are_one_line_then_it_catches_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An InfluxDB with auth on: 401 is one ERROR line naming the keys to fix (never the password), nothing is lost,
    and once the user exists with that password the backlog arrives."""
    srv = start_influxd(auth=True)
    try:
        # the first admin may be created without credentials; then everything needs them
        assert httpx.post(srv.url + "/query", data={"q": "CREATE USER root WITH PASSWORD 'r00t-pw' WITH ALL PRIVILEGES"}
                          ).status_code == 200
        assert httpx.post(srv.url + "/query", data={"q": 'CREATE DATABASE "fwdauth"'}, auth=("root", "r00t-pw")
                          ).status_code == 200
        cfg = influx_config(srv.url, "fwdauth", tmp_path, host="h")
        cfg.influx.username = "jouled"
        pw = tmp_path / "influx-password"
        pw.write_text("s3cret-fwd\n")
        pw.chmod(0o600)
        cfg.influx.password_file = str(pw)
        with refused_forwarder(cfg, caplog) as (fwd, errors):
            assert len(errors) == 1 and "credentials refused" in errors[0] and "[influx] username" in errors[0], errors
            assert not any("s3cret-fwd" in r.getMessage() for r in caplog.records)
            assert httpx.post(srv.url + "/query", data={"q": "CREATE USER jouled WITH PASSWORD 's3cret-fwd'"},
                              auth=("root", "r00t-pw")).status_code == 200
            assert httpx.post(srv.url + "/query", data={"q": 'GRANT WRITE ON "fwdauth" TO "jouled"'},
                              auth=("root", "r00t-pw")).status_code == 200
            wait_for(lambda: fwd.stats.state == "idle" and fwd.stats.backlog_points == 0, what="catch-up")
        n = httpx.post(srv.url + "/query", data={"q": "SELECT count(power_w) FROM power", "db": "fwdauth"},
                       auth=("root", "r00t-pw")).json()["results"][0]["series"][0]["values"][0][1]
        assert n == sum(int(v[0]) for v in log_totals(Path(cfg.store.path)).values())  # every power point arrived
    finally:
        srv.close()


def test_cursors_are_saved_every_few_seconds_and_at_stop_and_a_crash_resends_only_overwrites(
    influx: ServerHandle, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chunk cursor reaches the log at most every CURSOR_SAVE_S (not at each pass) and when the forwarder stops;
    a forwarder that died before saving sends that stretch again, and InfluxDB still equals the log."""
    import jouled.daemon.forward.forwarder as fmod
    from jouled.daemon.forward.writers import target_id

    cfg = influx_config(influx.url, db, tmp_path, host="h")
    path = Path(cfg.store.path)
    st = fill_store(path, chunks=2)
    key = "forward:" + target_id(influx.url, "v1", db, "") + ":chunks"

    def saved() -> int:
        return int(st.get_meta(key, "0") or 0)

    fwd = build_forwarder(cfg, SqliteStore(path))
    assert fwd.step() > 0 and fwd.cursor("chunks") > 0
    assert saved() == 0  # moved in memory only: the next save is due CURSOR_SAVE_S after the start
    crashed_at = fwd.cursor("chunks")
    fwd.writer.close()  # dies here: no close(), no save
    fill_store(path, chunks=2, t0_ns=T0_NS + 10 * 10**9)
    again = build_forwarder(cfg, SqliteStore(path))
    assert again.cursor("chunks") == 0  # starts from the saved cursor: the first stretch is sent again
    again.drain()
    assert saved() == again.cursor("chunks") > crashed_at  # a drain (the final pass) ends with a save
    fill_store(path, chunks=1, t0_ns=T0_NS + 20 * 10**9)
    assert again.step() > 0 and saved() < again.cursor("chunks")
    again.close()  # stopping saves
    assert saved() == again.cursor("chunks")
    assert_same(log_totals(path), influx_totals(influx, db))  # re-sent points overwrote themselves
    monkeypatch.setattr(fmod, "CURSOR_SAVE_S", 0.0)  # due at every advance: saved by the pass itself
    fill_store(path, chunks=1, t0_ns=T0_NS + 30 * 10**9)
    last = build_forwarder(cfg, SqliteStore(path))
    assert last.step() > 0 and saved() == last.cursor("chunks")
    last.close()
