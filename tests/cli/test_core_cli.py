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
    mk = tmp_path / "m.csv"
    mk.write_text("time,host,run,scope,event,epoch,phase,arch,gpus\n"
                  "1000,h,r1,epoch,start,0,,,gpu0 gpu1\n"
                  "2000,h,r1,epoch,end,0,,,gpu0 gpu1\n")
    res = runner.invoke(app, ["import", "markers", str(mk), "--store", db])
    assert res.exit_code == 0, res.output
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
