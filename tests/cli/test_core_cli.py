"""The core CLI through typer's runner: config errors, import with row validation, status, energy errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import load_config
from jouled.errors import UserError
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url

runner = CliRunner()


def _one_line_error(res, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    text = res.output
    assert "Traceback" not in text
    for n in needles:
        assert n in " ".join(text.split()), text


def test_config_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "j.toml"
    cfg.write_text("[sources.nvml]\nrate_hz = 10\nrat_hz = 5\n")
    with pytest.raises(UserError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert str(cfg) in msg and "sources.nvml.rat_hz" in msg and "\n" not in msg
    # the nearest key, and the example config where this install has it (a wheel has no systemd/ folder)
    from jouled.config import example_config

    assert "did you mean 'rate_hz'?" in msg and example_config() in msg and Path(example_config()).is_file()
    cfg.write_text("[sources.nvml]\nzzz = 5\n")
    with pytest.raises(UserError, match=r"unknown key 'sources\.nvml\.zzz' — remove it"):
        load_config(cfg)


def test_config_bad_value_and_bad_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "j.toml"
    cfg.write_text("[sources.rapl]\nrate_hz = -3\n")
    with pytest.raises(UserError, match=r"sources\.rapl\.rate_hz.*-3"):
        load_config(cfg)
    cfg.write_text("[daemon\nhost=1")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(cfg)
    with pytest.raises(UserError, match="file not found"):
        load_config(tmp_path / "missing.toml")


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "j.toml"
    cfg.write_text("[sources.nvml]\nrate_hz = 10\n[mqtt]\nurl = 'mqtt://a:1883'\n")
    c = load_config(cfg, environ={"JOULED_SOURCES_NVML_RATE_HZ": "100", "JOULED_MQTT_URL": "mqtt://b:1883",
                                  "JOULED_SOURCES_NVML_GPUS": "0,2"})
    assert c.sources.nvml.rate_hz == 100.0 and c.mqtt.url == "mqtt://b:1883" and c.sources.nvml.gpus == [0, 2]
    with pytest.raises(UserError, match=r"environment.*rate_hz"):
        load_config(cfg, environ={"JOULED_SOURCES_NVML_RATE_HZ": "fast"})


def test_cli_bad_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "j.toml"
    cfg.write_text("[store]\npth = 'x'\n")
    _one_line_error(runner.invoke(app, ["status", "--config", str(cfg)]), "unknown key 'store.pth'")


def test_import_samples_csv_all_or_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    csv = tmp_path / "s.csv"
    csv.write_text(
        "time,host,source,device,power_w,energy_j\n"
        "2024-05-01T00:00:00Z,h,nvml,gpu0,100,\n"
        "2024-05-01T00:00:01Z,h,nvml,gpu0,abc,\n"
        "1714521602000000000,h,nvml,gpu0,,12.5\n"
        "2024-05-01T00:00:03Z,h,nvml,gpu0,,\n"
    )
    res = runner.invoke(app, ["import", "samples", str(csv), "--store", sqlite_url(db)])
    _one_line_error(res, "2 bad row(s)", "line 3", "power_w 'abc'", "line 5", "--skip-bad")
    assert not db.exists() or SqliteStore(db).count_samples() == 0  # nothing partial
    res = runner.invoke(app, ["import", "samples", str(csv), "--store", sqlite_url(db), "--skip-bad"])
    assert res.exit_code == 0, res.output
    d = SqliteStore(db).read_series(SeriesKey("h", "nvml", "gpu0"))
    assert len(d) == 2 and d.power_w[0] == 100.0 and d.energy_j[1] == 12.5


def test_import_line_protocol_and_markers(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    lp = tmp_path / "s.lp"
    lp.write_text("power,host=h,source=rapl,device=package-0 energy_j=10.5,power_w=30 1000\n"
                  "power,host=h,source=rapl,device=package-0 energy_j=13.5,power_w=30 2000\n")
    assert runner.invoke(app, ["import", "samples", str(lp), "--store", db]).exit_code == 0
    # the same file again (a new user did): nothing is stored twice, and the line says why
    lp2 = tmp_path / "s2.lp"
    lp2.write_text(lp.read_text() + "power,host=h,source=rapl,device=package-0 energy_j=16.5,power_w=30 3000\n")
    res = runner.invoke(app, ["import", "samples", str(lp2), "--store", db])
    assert res.exit_code == 0 and "imported 1 samples" in res.output and "2 already in the log" in res.output, res.output
    assert SqliteStore(tmp_path / "s.db").count_samples() == 3
    mk = tmp_path / "m.csv"
    mk.write_text("time,host,run,scope,event,epoch,phase,arch,gpus\n"
                  "1000,h,r1,epoch,start,0,,,gpu0 gpu1\n"
                  "2000,h,r1,epoch,end,0,,,gpu0 gpu1\n")
    res = runner.invoke(app, ["import", "markers", str(mk), "--store", db])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["import", "markers", str(mk), "--store", db])
    assert "imported 0 markers" in res.output and "2 already in the log" in res.output, res.output
    ms = SqliteStore(tmp_path / "s.db").read_markers("r1")
    assert [(m.seq, m.event, m.gpus) for m in ms] == [(0, "start", ("gpu0", "gpu1")), (1, "end", ("gpu0", "gpu1"))]
    res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--format", "json", "--store", db])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows[0]["device"] == "package-0" and rows[0]["method"] == "counter"
    assert rows[0]["energy_j"] == pytest.approx(3.0)


def test_import_markers_bad_rows(tmp_path: Path) -> None:
    mk = tmp_path / "m.csv"
    mk.write_text("time,run,scope,event,epoch\n1,r,epoch,start,\n2,r,decade,end,1\nnot-a-time,r,run,start,\n")
    res = runner.invoke(app, ["import", "markers", str(mk), "--store", sqlite_url(tmp_path / "m.db")])
    _one_line_error(res, "3 bad row(s)", "line 2: scope epoch needs an epoch", "line 3", "line 4")
    hdr = tmp_path / "h.csv"
    hdr.write_text("when,run\n1,r\n")
    _one_line_error(runner.invoke(app, ["import", "markers", str(hdr), "--store", sqlite_url(tmp_path / "m.db")]),
                    "header lacks column(s) time")
    _one_line_error(runner.invoke(app, ["import", "samples", str(tmp_path / "nope.csv")]), "no such file")


def test_status_without_daemon(tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["status", "--store", sqlite_url(tmp_path / "x.db")]), "is the daemon running")


def test_energy_unknown_run_and_missing_store(tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["energy", "epochs", "--run", "zz", "--store", sqlite_url(tmp_path / "no.db")]),
                    "no such log")
    SqliteStore(tmp_path / "e.db")
    _one_line_error(runner.invoke(app, ["energy", "epochs", "--run", "zz", "--store", sqlite_url(tmp_path / "e.db")]),
                    "no markers")
    _one_line_error(runner.invoke(app, ["energy", "epochs", "--run", "zz", "--format", "xml"]), "--format 'xml'")


def test_energy_run_without_windows_of_the_scope_names_the_scopes_it_has(tmp_path: Path) -> None:
    """A `jouled calibrate` run has phase windows only: `energy epochs` says so and exits 1, with or without
    --holistic, instead of an empty table."""
    from jouled.model import Marker

    st = SqliteStore(tmp_path / "c.db")
    t = 1_700_000_000_000_000_000
    st.write_markers([Marker(t, "h", "cal", "run", "start", 0), Marker(t + 1, "h", "cal", "phase", "start", 1, phase="idle"),
                      Marker(t + 2, "h", "cal", "phase", "end", 2, phase="idle"), Marker(t + 3, "h", "cal", "run", "end", 3)])
    for extra in ([], ["--holistic"]):
        res = runner.invoke(app, ["energy", "epochs", "--run", "cal", "--store", sqlite_url(tmp_path / "c.db"), *extra])
        assert res.exit_code == 1, res.output
        assert "no epoch windows" in res.output and "--scope phase" in res.output


def test_service_install_into_root(tmp_path: Path) -> None:
    res = runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    assert res.exit_code == 0, res.output
    unit = (tmp_path / "etc/systemd/system/jouled.service").read_text()
    assert "Type=notify" in unit and "@JOULED@" not in unit and " run --config /etc/jouled/jouled.toml" in unit
    cfg = tmp_path / "etc/jouled/jouled.toml"
    assert load_config(cfg).sources.nvml.rate_hz == 10  # the shipped example is a valid config
    cfg.write_text("# mine\n")
    runner.invoke(app, ["service", "install", "--root", str(tmp_path), "--no-enable"])
    assert cfg.read_text() == "# mine\n"  # an existing config is kept
    res = runner.invoke(app, ["service", "uninstall", "--root", str(tmp_path)])
    assert res.exit_code == 0 and not (tmp_path / "etc/systemd/system/jouled.service").exists()


def _runs_store(tmp_path: Path) -> str:
    """Samples of one RAPL package at 1 Hz (10 W by its counter) for 100 s, and three runs: `done` with run
    markers, `imported` with epoch markers only, `going` started and not ended (one epoch done)."""
    import numpy as np

    from jouled.model import Marker
    from jouled.store.sqlite import ChunkBatch

    st = SqliteStore(tmp_path / "r.db")
    s = 1_000_000_000
    t0 = 1_700_000_000 * s
    t = t0 + np.arange(101, dtype=np.int64) * s
    st.write_batches([ChunkBatch(SeriesKey("h", "rapl", "package-0"), t, np.full(101, 10.0), 10.0 * np.arange(101.0))])
    st.write_markers([
        Marker(t0 + 10 * s, "h", "done", "run", "start", 0), Marker(t0 + 20 * s, "h", "done", "run", "end", 1),
        Marker(t0 + 30 * s, "h", "imported", "epoch", "start", 0, epoch=0),
        Marker(t0 + 35 * s, "h", "imported", "epoch", "end", 1, epoch=0),
        Marker(t0 + 35 * s + 1, "h", "imported", "epoch", "start", 2, epoch=1),
        Marker(t0 + 40 * s, "h", "imported", "epoch", "end", 3, epoch=1),
        Marker(t0 + 50 * s, "h", "going", "run", "start", 0),
        Marker(t0 + 50 * s + 1, "h", "going", "epoch", "start", 1, epoch=0),
        Marker(t0 + 60 * s, "h", "going", "epoch", "end", 2, epoch=0),
    ])
    st.close()
    return sqlite_url(tmp_path / "r.db")


def test_energy_runs_lists_runs_without_a_run_window_from_their_epochs(tmp_path: Path) -> None:
    """A new user imported epoch markers, and had a run still going: `energy runs` listed neither (an empty table,
    exit 0) and printed the dataclass repr of the unpaired start."""
    db = _runs_store(tmp_path)
    res = runner.invoke(app, ["energy", "runs", "--format", "json", "--store", db])
    assert res.exit_code == 0, res.output
    runs = {r["run"]: r for r in json.loads(res.stdout)}
    assert {k: (r["basis"], r["energy_j"]) for k, r in runs.items()} == {
        "done": ("run", pytest.approx(100.0)), "imported": ("epoch", pytest.approx(100.0)),
        "going": ("epoch", pytest.approx(100.0)),
    }
    assert "warning: run going start (seq 0): no end" in res.stderr
    assert "Marker(" not in res.stderr and "MarkerProblem(" not in res.stderr
    # the run still going says so: `open` in its flags, "(not ended)" in the table; the imported one is complete
    assert "open" in runs["going"]["flags"] and "open" not in runs["imported"]["flags"]
    table = runner.invoke(app, ["energy", "runs", "--store", db], env={"COLUMNS": "100"}).stdout
    assert "going (not ended)" in table and "imported (not ended)" not in table
    res = runner.invoke(app, ["energy", "runs", "--format", "csv", "--store", db])
    header, *lines = res.stdout.splitlines()  # the JSON's fields in its order, a column per device (not sorted, none lost)
    assert header.split(",")[:3] == ["run", "basis", "start"] and header.endswith(",energy_j:rapl:package-0")
    assert len(lines) == 3
    from jouled.query import open as open_query

    with open_query(db) as q:  # the Python API lists the same runs
        assert sorted(r.run for r in q.runs()) == ["done", "going", "imported"]


def test_energy_runs_with_nothing_finished_says_so_and_exits_1(tmp_path: Path) -> None:
    from jouled.model import Marker

    st = SqliteStore(tmp_path / "o.db")
    st.write_markers([Marker(1_700_000_000_000_000_000, "h", "r2", "run", "start", 0)])
    st.close()
    res = runner.invoke(app, ["energy", "runs", "--store", sqlite_url(tmp_path / "o.db")])
    assert res.exit_code == 1, res.output
    assert "no run in" in res.stderr and "r2" in res.stderr and "once it ends" in res.stderr
    assert "warning: run r2 start (seq 0): no end" in res.stderr
