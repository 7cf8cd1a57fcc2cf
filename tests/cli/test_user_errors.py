"""No silent or misleading outcome: what the first hour at a terminal hit becomes one line naming the input and
the fix, with a non-zero exit where nothing useful happened (issue 8). Through the real `jouled` app."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import ENV_NOT_CONFIG, load_config
from jouled.daemon.service import sampling_summary
from jouled.errors import UserError
from jouled.store.sqlite import sqlite_url

runner = CliRunner()


def _one_line(res, code: int, *needles: str, absent: tuple[str, ...] = ()) -> str:  # type: ignore[no-untyped-def]
    """The command exited with ``code`` and said one thing, on one line, with every needle in it."""
    text = res.output
    assert res.exit_code == code, text
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    for n in needles:
        assert n in lines[0], text
    for n in absent:
        assert n not in lines[0], text
    return lines[0]


# -- tracebacks → one line -------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [os.urandom(4096), b"time,power\n1,2\n" * 200])
def test_store_that_is_not_sqlite(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "notes.db"
    f.write_bytes(content)
    good = tmp_path / "s.csv"
    good.write_text("time,source,device,power_w\n1,rapl,package-0,5\n")
    for cmd in (["energy", "runs"], ["energy", "epochs", "--run", "r"], ["import", "samples", str(good)]):
        res = runner.invoke(app, [*cmd, "--store", sqlite_url(f)])
        _one_line(res, 2, str(f), "not a jouled SQLite log", "--store")
    assert f.read_bytes() == content  # refused, not "repaired" into a jouled log


def test_store_of_another_program(tmp_path: Path) -> None:
    import sqlite3

    f = tmp_path / "other.db"
    with sqlite3.connect(f) as c:
        c.execute("CREATE TABLE contacts (name TEXT)")
    _one_line(runner.invoke(app, ["energy", "runs", "--store", sqlite_url(f)]), 2, "another program", "--store")


def test_import_a_folder(tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "samples", str(tmp_path), "--store", sqlite_url(tmp_path / "s.db")])
    _one_line(res, 2, str(tmp_path), "is a folder")


def test_config_not_utf8_and_toml_syntax_with_line(tmp_path: Path) -> None:
    cfg = tmp_path / "j.toml"
    cfg.write_bytes("[daemon]\nhost = 'caf\u00e9'\n".encode("latin-1"))
    _one_line(runner.invoke(app, ["sources", "--config", str(cfg)]), 2, str(cfg), "not UTF-8")
    cfg.write_text("[daemon]\nhost = 'a'\nflush_interval_s = = 2\n", encoding="utf-8")
    _one_line(runner.invoke(app, ["sources", "--config", str(cfg)]), 2, f"{cfg}:3", "not valid TOML")
    _one_line(runner.invoke(app, ["sources", "--config", str(tmp_path)]), 2, "is a folder")


def test_demo_refuses_a_bad_dataset_before_starting_anything(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    res = runner.invoke(app, ["demo", "--dataset", "bogus", "--store", sqlite_url(tmp_path / "d.db")])
    _one_line(res, 2, "--dataset bogus", "digits")
    assert not (tmp_path / "d.db").exists()  # no daemon started, no log created


# -- silent exits → a line and a code ---------------------------------------------------------------------


def test_run_duration_must_be_positive(tmp_path: Path) -> None:
    for d in ("-1", "0"):
        res = runner.invoke(app, ["run", "--duration", d, "--store", sqlite_url(tmp_path / "r.db")])
        _one_line(res, 2, f"--duration {d}", "> 0")
    assert not (tmp_path / "r.db").exists()


def test_status_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    # no status file at all: 2, one line
    _one_line(runner.invoke(app, ["status", "--store", sqlite_url(db)]), 2, "is the daemon running")
    # a status file left by a daemon that is gone: its last status, then one line, exit 1
    dead = 2**22 + 12345  # above the default pid_max of 4194304: no such process
    nvml = {"name": "nvml", "state": "unavailable", "reason": "no NVIDIA driver", "next_try_s": 30.0}
    status = {"pid": dead, "host": "h", "uptime_s": 3.0, "sources": [nvml], "store": {"path": str(db), "written": 7}}
    (tmp_path / "s.status.json").write_text(json.dumps(status))
    for fmt in ("table", "json"):
        res = runner.invoke(app, ["status", "--format", fmt, "--store", sqlite_url(db)])
        assert res.exit_code == 1, res.output
        text = " ".join(res.output.split())  # rich wraps long paths
        assert "daemon not running" in text and str(dead) in text and "Traceback" not in text
        assert "7 samples written" in text or '"written": 7' in text  # the last status is shown
        if fmt == "table":  # and a stopped daemon tries nothing again
            assert "nvml unavailable: no NVIDIA driver" in text and "next try" not in text
    # a live pid (ours): 0
    (tmp_path / "s.status.json").write_text(json.dumps({**status, "pid": os.getpid()}))
    res = runner.invoke(app, ["status", "--store", sqlite_url(db)])
    assert res.exit_code == 0 and "not running" not in res.output, res.output
    assert "next try in 30 s" in " ".join(res.output.split())


def test_unknown_key_in_environment_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sources", "--format", "json"], env={"JOULED_SOURCES_NVML_BOGUS": "1"})
    _one_line(res, 2, "JOULED_SOURCES_NVML_BOGUS", "[sources.nvml]", "RATE_HZ", "COUNTER_RATE_HZ")
    with pytest.raises(UserError, match=r"JOULED_SOURCES_FOO_RATE_HZ.*NVML, RAPL"):
        load_config(None, {"JOULED_SOURCES_FOO_RATE_HZ": "1"})
    with pytest.raises(UserError, match=r"JOULED_MQTT_PORT.*\[mqtt\].*EMBEDDED_PORT"):
        load_config(None, {"JOULED_MQTT_PORT": "1884"})
    # variables that are not config keys stay allowed, and real keys still work
    ok = {v: "x" for v in ENV_NOT_CONFIG} | {
        "JOULED_CONFIG": "", "JOULED_STORE": sqlite_url(tmp_path / "x.db"), "JOULED_CI_JOB": "1",
        "JOULED_SPOOL_DIR": str(tmp_path), "JOULED_SOURCES_NVML_RATE_HZ": "50",
    }
    assert load_config(None, ok).sources.nvml.rate_hz == 50.0
    assert {"JOULED_INFLUX_TOKEN", "JOULED_CARBON_TOKEN", "JOULED_NAS_DATA"} <= ENV_NOT_CONFIG


def test_wrong_csv_header_is_not_a_skip_bad_matter(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    f = tmp_path / "samples.csv"
    f.write_text("timestamp,watts\n1,2\n3,4\n")
    for extra in ([], ["--skip-bad"]):
        res = runner.invoke(app, ["import", "samples", str(f), "--store", db, *extra])
        _one_line(res, 2, str(f), "time,host,source,device,power_w,energy_j", absent=("--skip-bad",))
    # --skip-bad that leaves nothing to import is not a success either
    f.write_text("time,source,device,power_w\nyesterday,rapl,package-0,5\n1,rapl,package-0,watts\n")
    res = runner.invoke(app, ["import", "samples", str(f), "--store", db, "--skip-bad"])
    _one_line(res, 2, "nothing to import", "all 2 rows are bad")
    f.write_text("time,source,device,power_w\n")
    _one_line(runner.invoke(app, ["import", "samples", str(f), "--store", db]), 2, "no rows")
    # and a good row among bad ones still imports, exit 0
    f.write_text("time,source,device,power_w\nyesterday,rapl,package-0,5\n1,rapl,package-0,7\n")
    res = runner.invoke(app, ["import", "samples", str(f), "--store", db, "--skip-bad"])
    assert res.exit_code == 0 and "imported 1 samples" in res.output, res.output


def test_carbon_history_of_an_empty_window(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("time,intensity_g_per_kwh\n" + "".join(f"2022-01-01T{h:02d}:00:00Z,{100 + h}\n" for h in range(6)))
    res = runner.invoke(
        app, ["carbon", "history", "--trace", str(trace), "--at", "2022-01-01T05:30:00Z",
              "--start", "2021-06-01T00:00:00Z", "--end", "2021-06-02T00:00:00Z"],
    )
    _one_line(res, 1, "no intensity", "2021-06-01T00:00:00Z", "2021-06-02T00:00:00Z")
    res = runner.invoke(app, ["carbon", "history", "--trace", str(trace), "--at", "2022-01-01T05:30:00Z",
                              "--start", "2022-01-01T00:00:00Z", "--format", "json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 6, res.output


def test_nas_plot_out_into_an_existing_folder(tmp_path: Path, bench: object) -> None:
    pytest.importorskip("matplotlib")
    from tests.conftest import NAS_DATA

    trace = tmp_path / "trace.csv"
    trace.write_text("time,intensity_g_per_kwh\n" + "".join(f"2022-01-01T{h:02d}:00:00Z,{100 + 40 * (h % 5)}\n"
                                                            for h in range(4)))
    out = tmp_path / "plots"
    out.mkdir()
    base = ["nas", "simulate", "--trace", str(trace), "--method", "vanilla", "--seeds", "1", "--gpus", "1",
            "--hours", "2", "--format", "json", "--data", str(NAS_DATA)]
    res = runner.invoke(app, [*base, "--plot-out", str(out)])
    assert res.exit_code == 0, res.output
    png = out / "nas-simulate.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.loads(res.output)  # nothing but the JSON on the way
    # a name matplotlib would silently turn into "<name>.png" beside it is refused before simulating
    res = runner.invoke(app, [*base, "--plot-out", str(tmp_path / "fig")])
    _one_line(res, 2, "--plot-out", "fig.png")
    _one_line(runner.invoke(app, [*base, "--plot-out", str(tmp_path / "nowhere" / "f.png")]), 2, "does not exist")


# -- misleading numbers ---------------------------------------------------------------------------------


def _markers_csv(tmp_path: Path, run: str, t0_s: int, epochs: int = 2) -> Path:
    rows = ["time,host,run,scope,event,epoch"]
    rows.append(f"{t0_s * 10**9},h,{run},run,start,")
    for e in range(epochs):
        rows.append(f"{(t0_s + e) * 10**9},h,{run},epoch,start,{e}")
        rows.append(f"{(t0_s + e + 1) * 10**9},h,{run},epoch,end,{e}")
    rows.append(f"{(t0_s + epochs) * 10**9},h,{run},run,end,")
    p = tmp_path / f"{run}.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def _samples_csv(tmp_path: Path, source: str, device: str, t0_s: float, t1_s: float, hz: float = 10.0) -> Path:
    n = int((t1_s - t0_s) * hz)
    rows = ["time,host,source,device,power_w"] + [f"{int((t0_s + i / hz) * 1e9)},h,{source},{device},50" for i in range(n + 1)]
    p = tmp_path / f"{source}-{device}-{t0_s}.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_run_without_samples_says_so_and_exits_1(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    assert runner.invoke(app, ["import", "markers", str(_markers_csv(tmp_path, "r1", 1000)), "--store", db]).exit_code == 0
    # samples that stop 3 s before the run (the daemon was stopped): inside the read margin, none in a window
    assert runner.invoke(app, ["import", "samples", str(_samples_csv(tmp_path, "rapl", "package-0", 990, 997)),
                               "--store", db]).exit_code == 0
    res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--format", "json", "--store", db])
    assert res.exit_code == 1, res.output
    rows = json.loads(res.output[: res.output.rindex("]") + 1])
    assert len(rows) == 2 and all(r["energy_j"] is None and "no-samples" in r["flags"] for r in rows)
    assert "no samples for this run's windows" in res.output and "jouled status" in res.output
    res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--store", db], env={"COLUMNS": "80"})
    assert res.exit_code == 1 and "no-samples" in res.output and "0.00 J" not in res.output, res.output
    res = runner.invoke(app, ["energy", "runs", "--format", "json", "--store", db])
    assert res.exit_code == 1, res.output
    run = json.loads(res.output[: res.output.rindex("]") + 1])[0]
    assert run["energy_j"] is None and "no-samples" in run["flags"]  # null, not 0
    res = runner.invoke(app, ["energy", "runs", "--store", db], env={"COLUMNS": "80"})
    assert res.exit_code == 1 and "0.00 J" not in res.output and "was the daemon running" in res.output, res.output


def test_run_with_no_series_at_all_keeps_its_rows(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    runner.invoke(app, ["import", "markers", str(_markers_csv(tmp_path, "r1", 1000)), "--store", db])
    res = runner.invoke(app, ["energy", "epochs", "--run", "r1", "--format", "json", "--store", db])
    assert res.exit_code == 1, res.output
    rows = json.loads(res.output[: res.output.rindex("]") + 1])
    assert [r["epoch"] for r in rows] == [0, 1]  # not an empty table
    assert all(r["flags"] == ["no-samples"] and r["energy_j"] is None and r["device"] == "" for r in rows)


def test_partly_covered_run_warns_and_exits_0_and_estimate_is_host_wide(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    runner.invoke(app, ["import", "markers", str(_markers_csv(tmp_path, "r2", 2000, epochs=3)), "--store", db])
    # the estimate source sampled epoch 0 only; the daemon died before epochs 1 and 2 (beyond the read margin)
    runner.invoke(app, ["import", "samples", str(_samples_csv(tmp_path, "estimate", "cpu", 1999, 2001)), "--store", db])
    res = runner.invoke(app, ["energy", "epochs", "--run", "r2", "--scope", "all", "--format", "json",
                              "--store", db])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[: res.output.rindex("]") + 1])
    est = [r for r in rows if r["source"] == "estimate"]
    assert est and all("host-wide" in r["flags"] and "estimated" in r["flags"] for r in est)
    e0 = next(r for r in est if r["scope"] == "epoch" and r["epoch"] == 0)
    assert e0["energy_j"] == pytest.approx(50.0, rel=0.05) and "no-samples" not in e0["flags"]
    e2 = next(r for r in est if r["scope"] == "epoch" and r["epoch"] == 2)
    assert e2["energy_j"] is None and "no-samples" in e2["flags"]
    assert "warning" in res.output and "no-samples" in res.output
    # the CSV writes each row's flags as space-separated names (the rows hold them as tuples), and none as ""
    res = runner.invoke(app, ["energy", "epochs", "--run", "r2", "--format", "csv", "--store", db])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith(("run,", "r2,"))]
    flags = {(r["epoch"], r["source"]): r["flags"] for r in csv.DictReader(lines)}
    assert flags[("0", "estimate")].split() == ["estimated", "host-wide"]
    assert "no-samples" in flags[("2", "estimate")].split() and "(" not in "".join(flags.values())


def test_sampling_summary_counts_the_sources_that_work() -> None:
    health = [
        {"name": "nvml", "state": "unavailable", "reason": "no NVIDIA driver — install it"},
        {"name": "rapl", "state": "unavailable", "reason": "no RAPL zones — load intel_rapl"},
        {"name": "visa", "state": "unavailable", "reason": "no meter configured — set resource"},
        {"name": "estimate", "state": "sampling", "reason": ""},
    ]
    line = sampling_summary(health)
    assert line.startswith("sampling 1 of 4 sources (estimate); off: nvml (no NVIDIA driver); rapl (no RAPL zones)")
    assert "install it" not in line  # the fix was logged with the source's own warning


@pytest.mark.slow
def test_demo_prints_section_names_of_disabled_sources(tmp_path: Path) -> None:
    """rich used to eat "[sources.rapl]" as markup: "disable with  enabled = false"."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    t0 = time.monotonic()
    res = runner.invoke(app, ["demo", "--epochs", "1", "--store", sqlite_url(tmp_path / "d.db")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    unavailable = [ln for ln in res.output.splitlines() if ": unavailable" in ln]
    if not unavailable:
        pytest.skip("every source is available here: no reason to print")
    assert all("disable with  enabled" not in ln for ln in unavailable)
    assert any("[sources." in ln for ln in unavailable), unavailable
    assert time.monotonic() - t0 < 120


@pytest.mark.parametrize(("args", "needles"), [
    (["energy", "epochs", "--run", "r1", "--limit", "abc"], ("'--limit'", "valid integer", "`jouled energy epochs -h`")),
    (["markers", "send", "--run", "r", "--scope", "epoch", "--event", "start", "--epoch", "x"], ("'--epoch'",)),
    (["nas", "simulate", "--seeds", "abc"], ("'--seeds'", "`jouled nas simulate -h`")),
    (["energy", "epochs", "--limit", "3"], ("Missing option '--run' —",)),
    (["energy", "epochs", "--bogus"], ("No such option: --bogus",)),
    (["energy", "bogus"], ("No such command 'bogus'", "`jouled energy -h`")),
])
def test_click_usage_errors_are_one_line_too(args: list[str], needles: tuple[str, ...]) -> None:
    """A new user typed a word where a number goes: click's usage block (three lines) became one, as every other
    error of the CLI, still naming the option; a group given nothing still shows its help."""
    _one_line(runner.invoke(app, args), 2, *needles, absent=("Usage:",))


def test_a_group_given_nothing_still_shows_its_help() -> None:
    res = runner.invoke(app, ["energy"])
    assert "Usage: " in res.output and "epochs" in res.output
