"""`jouled assess`, `compare` and `report` through the CLI on a real SQLite log holding a run with known truth
(tests/quality/trace.py): every number `assess` prints is checked against the arithmetic written out here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.quality.codecarbon import J_PER_KWH

from .trace import make_store

runner = CliRunner()

# per-epoch energies by hand (epochs [0,2], [2,2.5], [2.5,10], [10,20] s):
# nvml 100 W, readings 0.05…19.95 s: the edges before 0.05 and after 19.95 are not covered (the energy core does
# not extrapolate), the 3.1 s hole is interpolated across (constant power: exact)
NVML_J = [100 * 1.95, 100 * 0.5, 100 * 7.5, 100 * 9.95]
# smi 110 W, readings 0.3…19.3 s
SMI_J = [110 * 1.7, 110 * 0.5, 110 * 7.5, 110 * 9.3]
# wall 300 W, readings 0.25…19.75 s
WALL_J = [300 * 1.75, 300 * 0.5, 300 * 7.5, 300 * 9.75]
# rapl counter 50 W, reads at 0, 1, …, 20 s: every edge covered
RAPL_J = [50 * 2.0, 50 * 0.5, 50 * 7.5, 50 * 10.0]


def _store(tmp_path: Path, attrs: dict[str, object] | None = None) -> str:
    return make_store(tmp_path / "j.db", attrs)


def _json(args: list[str]) -> Any:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _by(findings: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["check"], f["subject"]): f for f in findings}


def test_assess_every_number_by_hand(tmp_path: Path) -> None:
    url = _store(tmp_path)
    out = _json(["assess", "--run", "r1", "--store", url, "--format", "json", "--gpu-limits", "50:250"])
    f = _by(out["findings"])
    assert out["verdict"] == "fail" and out["host"] == "h" and out["gpu_limits_from"] == "--gpu-limits"

    # samples inside each epoch (both ends included): nvml every 0.1 s → 20, 5, 75 and 20 + 50 around the hole
    assert f[("samples-per-epoch", "nvml:gpu0")]["numbers"] == {
        "epochs": 4, "samples_min": 5, "samples_median": 45.0, "samples_max": 75, "sparse_epochs": 1,
        "sparse_share": 0.25, "sparse_integrated_epochs": 0, "counter_epochs_missing_reads": 0, "coarse_epochs": 0}
    # 5 counter reads in the 0.5 s epoch, as its 0.1 s rate promises: the difference is exact
    assert f[("samples-per-epoch", "nvml:gpu0")]["verdict"] == "ok"
    # rapl reads at whole seconds: [0,2] → 0,1,2; [2,2.5] → 2; [2.5,10] → 3…10; [10,20] → 10…20
    assert f[("samples-per-epoch", "rapl:package-0")]["numbers"] == {
        "epochs": 4, "samples_min": 1, "samples_median": 5.5, "samples_max": 11, "sparse_epochs": 3,
        "sparse_share": 0.75, "sparse_integrated_epochs": 0, "counter_epochs_missing_reads": 0, "coarse_epochs": 0}
    assert f[("samples-per-epoch", "rapl:package-0")]["verdict"] == "ok"
    # smi at 0.3 + k: [0,2] → 0.3, 1.3; [2,2.5] → 2.3; [2.5,10] → 3.3…9.3; [10,20] → 10.3…19.3
    assert f[("samples-per-epoch", "smi:gpu0")]["numbers"] == {
        "epochs": 4, "samples_min": 1, "samples_median": 4.5, "samples_max": 10, "sparse_epochs": 3,
        "sparse_share": 0.75, "sparse_integrated_epochs": 3, "counter_epochs_missing_reads": 0, "coarse_epochs": 0}
    assert f[("samples-per-epoch", "smi:gpu0")]["verdict"] == "fail"  # 75 % of epochs integrated from < 10
    # wall at 0.25 + 0.5 k: 4, 1, 15, 20
    assert f[("samples-per-epoch", "visa:wall")]["numbers"] == {
        "epochs": 4, "samples_min": 1, "samples_median": 9.5, "samples_max": 20, "sparse_epochs": 2,
        "sparse_share": 0.5, "sparse_integrated_epochs": 2, "counter_epochs_missing_reads": 0, "coarse_epochs": 0}

    # coverage: the hole from 11.95 to 15.05 s (3.1 s > 5 periods of 0.1 s) of the 20 s run is not covered
    assert f[("coverage", "nvml:gpu0")]["numbers"] == {
        "coverage": 0.845, "largest_gap_s": 3.1, "holes": 1, "gap_epochs": 1, "period_s": 0.1, "samples": 170}
    assert f[("coverage", "nvml:gpu0")]["verdict"] == "fail"
    assert f[("coverage", "smi:gpu0")]["numbers"] == {
        "coverage": 1.0, "largest_gap_s": 1.0, "holes": 0, "gap_epochs": 0, "period_s": 1.0, "samples": 20}
    assert f[("coverage", "visa:wall")]["numbers"] == {
        "coverage": 1.0, "largest_gap_s": 0.5, "holes": 0, "gap_epochs": 0, "period_s": 0.5, "samples": 40}
    assert f[("coverage", "rapl:package-0")]["numbers"] == {
        "coverage": 1.0, "largest_gap_s": 1.0, "holes": 0, "gap_epochs": 0, "period_s": 1.0, "samples": 21}
    assert f[("coverage", "smi:gpu0")]["verdict"] == "ok"

    # smi vs nvml per epoch
    rel = [(s - n) / n for s, n in zip(SMI_J, NVML_J, strict=True)]
    smi = f[("smi-vs-nvml", "gpu0")]
    assert smi["verdict"] == "warn"  # worst epoch 10 %: within 15 %, not within 5 %
    assert smi["numbers"] == {
        "epochs": 4, "mean_rel_diff": pytest.approx(sum(rel) / 4, abs=1e-4),
        "mean_abs_rel_diff": pytest.approx(sum(map(abs, rel)) / 4, abs=1e-4), "max_abs_rel_diff": pytest.approx(0.1),
        "pearson": pytest.approx(float(np.corrcoef(SMI_J, NVML_J)[0, 1]), abs=1e-4)}

    # GPU range: 100 W throughout, limits 50–250 W: no span, p95 at 40 % of the max limit
    rng = f[("gpu-power-range", "nvml:gpu0")]
    assert rng["verdict"] == "warn" and rng["numbers"] == {
        "min_w": 100.0, "p5_w": 100.0, "p95_w": 100.0, "max_w": 100.0, "readings": 170, "limit_min_w": 50.0,
        "limit_max_w": 250.0, "span_share": 0.0, "p95_of_max": 0.4}

    # per-epoch Pearson with the wall meter
    for key, energies in (("nvml:gpu0", NVML_J), ("smi:gpu0", SMI_J), ("rapl:package-0", RAPL_J)):
        w = f[("wall-correlation", key)]
        assert w["numbers"] == {"epochs": 4, "pearson": pytest.approx(float(np.corrcoef(energies, WALL_J)[0, 1]), abs=1e-4),
                                "wall": "visa:wall"}
        assert w["verdict"] == "ok"

    assert f[("totals", "run")]["verdict"] == "ok"
    assert f[("totals", "run")]["numbers"] == {"total": ["nvml:gpu0", "rapl:package-0"], "estimated": [], "host_wide": []}

    # the table shows the same findings
    res = runner.invoke(app, ["assess", "--run", "r1", "--store", url, "--wide"])
    assert res.exit_code == 0 and "coverage" in res.output and "84.5%" in res.output


def test_assess_limits_from_the_run_marker(tmp_path: Path) -> None:
    url = _store(tmp_path, {"gpu_power_min_w": 80, "gpu_power_max_w": 120})
    out = _json(["assess", "--run", "r1", "--store", url, "--format", "json"])
    rng = _by(out["findings"])[("gpu-power-range", "nvml:gpu0")]
    assert "start marker" in out["gpu_limits_from"]
    assert rng["numbers"]["limit_min_w"] == 80.0 and rng["numbers"]["p95_of_max"] == pytest.approx(100 / 120, abs=1e-4)
    out = _json(["assess", "--run", "r1", "--store", _store(tmp_path / "b"), "--format", "json"])
    rng = _by(out["findings"])[("gpu-power-range", "nvml:gpu0")]
    assert rng["verdict"] == "warn" and "limits are unknown" in rng["why"]


def _write_codecarbon(path: Path) -> None:
    """CodeCarbon's running totals (420 W whole machine, 150 W of it GPU) written at 2, 10 and 20 s into the run."""
    from datetime import datetime

    from .trace import T0

    def ts(t_s: float) -> str:  # CodeCarbon writes datetime.now(): local time, no zone
        return datetime.fromtimestamp(T0 / 1e9 + t_s).isoformat()

    kwh = 1 / J_PER_KWH
    lines = ["timestamp,project_name,run_id,duration,emissions,energy_consumed,cpu_energy,gpu_energy,ram_energy"]
    for t in (2.0, 10.0, 20.0):
        lines.append(f"{ts(t)},p,x,{t},0,{420 * t * kwh},{60 * t * kwh},{150 * t * kwh},{10 * t * kwh}")
    path.write_text("\n".join(lines) + "\n")


def test_compare_tools_against_truths(tmp_path: Path) -> None:
    url = _store(tmp_path)
    cc = tmp_path / "emissions.csv"
    _write_codecarbon(cc)
    out = _json(["compare", "--run", "r1", "--store", url, "--format", "json", "--codecarbon", str(cc)])
    assert out["truth"] == {"gpu": "nvml-counter", "cpu": "rapl", "host": "wall"}
    e = {t: [ep["energy_j"][t] for ep in out["epochs"]] for t in out["epochs"][0]["energy_j"]}
    assert e["nvml-counter"] == pytest.approx(NVML_J)
    assert e["nvml-power"] == pytest.approx(NVML_J)
    assert e["nvml-avg"] == pytest.approx(NVML_J)  # the power_avg_w extra, 100 W with every reading
    assert e["smi"] == pytest.approx(SMI_J)
    assert e["rapl"] == pytest.approx(RAPL_J)
    assert e["wall"] == pytest.approx(WALL_J)
    assert e["jouled"] == pytest.approx([n + r for n, r in zip(NVML_J, RAPL_J, strict=True)])
    durations = [2.0, 0.5, 7.5, 10.0]
    assert e["codecarbon"] == pytest.approx([420 * d for d in durations], rel=1e-6)
    assert e["codecarbon-gpu"] == pytest.approx([150 * d for d in durations], rel=1e-6)
    assert e["codecarbon-cpu"] == pytest.approx([70 * d for d in durations], rel=1e-6)
    assert [ep["bucket"] for ep in out["epochs"]] == ["1–5 s", "0.5–1 s", "5–30 s", "5–30 s"]
    # the first and last epoch reach past the data of every sampled tool but RAPL (read at 0 and 20 s) and
    # CodeCarbon's intervals (0–2, 2–10, 10–20 s): their figures cover only part of those epochs
    edge = ["nvml-counter", "nvml-power", "nvml-avg", "smi", "wall", "jouled"]
    assert [ep["partial"] for ep in out["epochs"]] == [edge, [], [], edge]
    err = out["epochs"][0]["error_pct"]
    assert err["smi"] == pytest.approx(100 * (SMI_J[0] / NVML_J[0] - 1), abs=1e-4)
    assert err["codecarbon"] == pytest.approx(100 * (840 / 525 - 1), abs=1e-4)
    assert err["codecarbon-cpu"] == pytest.approx(100 * (140 / 100 - 1), abs=1e-4)
    assert "nvml-counter" not in err and "wall" not in err  # the truths themselves
    b = {(x["bucket"], x["tool"]): x for x in out["buckets"]}
    assert b[("5–30 s", "smi")]["epochs"] == 2
    assert b[("5–30 s", "smi")]["max_abs_error_pct"] == pytest.approx(10.0, abs=1e-3)
    assert b[("5–30 s", "smi")]["mean_abs_error_pct"] == pytest.approx(50 * (0.1 + (1023 / 995 - 1)), abs=1e-3)
    res = runner.invoke(app, ["compare", "--run", "r1", "--store", url, "--wide"])
    assert res.exit_code == 0 and "nvml-counter" in res.output and "error by epoch length" in res.output


@pytest.mark.parametrize(("args", "needle"), [
    (["assess", "--run", "nope"], "run 'nope'"),
    (["assess", "--run", "r1", "--format", "xml"], "--format 'xml'"),
    (["assess", "--run", "r1", "--gpu-limits", "300"], "--gpu-limits '300'"),
    (["assess", "--run", "r1", "--gpu-limits", "300:100"], "MIN < MAX"),
    (["compare", "--run", "r1", "--codecarbon", "/nonexistent/emissions.csv"], "cannot read it"),
    (["report", "--run", "r1", "-o", "/nonexistent/dir/r.html"], "cannot write it"),
])
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    url = _store(tmp_path)
    res = runner.invoke(app, [*args, "--store", url])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and needle in " ".join(res.output.split())


def test_run_without_epochs_is_one_line(tmp_path: Path) -> None:
    from jouled.model import Marker
    from jouled.store.sqlite import SqliteStore, sqlite_url

    from .trace import ns, samples

    st = SqliteStore(tmp_path / "j.db")
    st.write_samples(samples())
    st.write_markers([Marker(ns(0), "h", "r2", "run", "start", 0), Marker(ns(20), "h", "r2", "run", "end", 1)])
    st.close()
    res = runner.invoke(app, ["assess", "--run", "r2", "--store", sqlite_url(tmp_path / "j.db")])
    assert res.exit_code == 1 and "no complete epoch" in res.output  # found nothing to give, as `energy epochs`


def test_report_is_self_contained(tmp_path: Path) -> None:
    url = _store(tmp_path)
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--run", "r1", "--store", url, "-o", str(out), "--gpu-limits", "50:250"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.count("<svg") == 4  # power, energy, error, histogram (no carbon known: a note instead)
    for title in ("Power over time", "Energy per epoch, by tool", "Error against the truth vs epoch length",
                  "GPU power histogram", "Carbon intensity unknown"):
        assert title in html
    # nothing fetched: no script, no link, no src, and the only URL is the SVG namespace
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert {u for u in __import__("re").findall(r"https?://[^\"' )]+", html)} == {"http://www.w3.org/2000/svg"}
    assert math.isfinite(len(html)) and "coverage" in html and "84.5%" in html


def _near(px: Any, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of an RGB numpy image within `tol` of a colour (anti-aliased edges count when close)."""
    return int((np.abs(px.astype(int) - np.array(rgb)).sum(axis=2) <= tol).sum())


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    """The page as a person sees it: headless Chromium screenshots it; the plots' colours are on the image."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (Debian package chromium, .ci/system-deps)")
    image = pytest.importorskip("PIL.Image")
    url = make_store(tmp_path / "j.db", carbon=True)
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--run", "r1", "--store", url, "-o", str(out), "--gpu-limits", "50:250"])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert html.count("<svg") == 5 and "Carbon per epoch" in html
    png = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,3600",
                    out.as_uri()], capture_output=True, timeout=120, check=True)
    px = np.asarray(image.open(png).convert("RGB"))
    assert px.shape[:2] == (3600, 1200)
    background = _near(px, (243, 244, 246), 6) + _near(px, (255, 255, 255), 6)
    assert background < 0.97 * px.shape[0] * px.shape[1]  # not blank
    assert _near(px, (31, 119, 180)) > 300  # nvml:gpu0's line, the first tool's points
    assert _near(px, (214, 228, 245), 8) > 5000  # the epoch bands behind the power
    assert _near(px, (44, 160, 44)) > 2000  # the GPU power histogram's bar
    assert _near(px, (148, 103, 189)) > 2000  # the carbon bars
    assert _near(px, (220, 252, 231), 8) > 200  # the green `ok` verdict badges of the findings table
    assert _near(px, (254, 226, 226), 8) > 200  # the red `fail` badges


@pytest.mark.parametrize("redeclared", [False, True])
def test_rows_are_those_of_energy_epochs(tmp_path: Path, redeclared: bool) -> None:
    """assess/compare read the run once; their rows are `energy epochs`' rows, also where a series was re-declared
    mid-run (then the query core splits the run, and load_run takes its rows)."""
    from jouled.config import Config
    from jouled.quality.load import load_run
    from jouled.series import SeriesMeta
    from jouled.store.sqlite import SeriesKey, SqliteStore

    from .trace import ns

    url = _store(tmp_path)
    if redeclared:
        st = SqliteStore(tmp_path / "j.db")
        st.declare_series({SeriesKey("h", "smi", "gpu0"): SeriesMeta(role="gpu", device="gpu0", power_period_s=1.0,
                                                                     comparison=True)}, ns(5.0))
        st.close()
    want = _json(["energy", "epochs", "--run", "r1", "--store", url, "--format", "json"])
    st = SqliteStore(tmp_path / "j.db", readonly=True)
    got = load_run(st, Config(), "r1").rows
    st.close()
    key = ("epoch", "source", "device", "energy_j", "samples", "method")
    assert sorted(tuple(r[k] for k in key) for r in got) == sorted(tuple(r[k] for k in key) for r in want)


def test_assess_on_imported_csv_equals_the_log(tmp_path: Path) -> None:
    """The same trace brought in by `jouled import samples` / `import markers` (CSV): the same findings."""
    from .trace import markers, samples

    def cell(v: object) -> str:
        return "" if v is None else str(v)

    (tmp_path / "s.csv").write_text("time,host,source,device,power_w,energy_j\n" + "".join(
        f"{s.time_ns},{s.host},{s.source},{s.device},{cell(s.power_w)},{cell(s.energy_j)}\n" for s in samples()))
    (tmp_path / "m.csv").write_text("time,host,run,scope,event,epoch,phase,arch,gpus\n" + "".join(
        f"{m.time_ns},{m.host},{m.run},{m.scope},{m.event},{cell(m.epoch)},,,{' '.join(m.gpus)}\n" for m in markers()))
    url = f"sqlite:///{tmp_path / 'imported.db'}"
    for kind, f in (("samples", "s.csv"), ("markers", "m.csv")):
        res = runner.invoke(app, ["import", kind, str(tmp_path / f), "--store", url])
        assert res.exit_code == 0, res.output
    args = ["assess", "--run", "r1", "--format", "json", "--gpu-limits", "50:250", "--store"]
    imported = _json([*args, url])
    direct = _json([*args, _store(tmp_path / "direct")])
    assert imported == direct


def test_report_of_a_run_with_no_compared_tool_shows_its_series_energy(tmp_path: Path) -> None:
    """A CPU-estimate-only run (a machine with no GPU, no RAPL, no meter: what `jouled demo` logs here) has no tool
    to compare, but its energy per epoch is still drawn, from the rows of `energy epochs`."""
    from jouled.model import Marker
    from jouled.store.sqlite import ChunkBatch, SeriesKey, SqliteStore, sqlite_url

    s = 1_000_000_000
    t0 = 1_700_000_000 * s
    st = SqliteStore(tmp_path / "e.db")
    t = t0 + np.arange(0, 61, dtype=np.int64) * s // 10  # 0 … 6 s at 10 Hz
    st.write_batches([ChunkBatch(SeriesKey("h", "estimate", "cpu"), t, np.full(t.size, 50.0), np.full(t.size, np.nan))])
    st.write_markers([Marker(t0 + a * s, "h", "cpu-run", "epoch", ev, seq, epoch=e)
                      for seq, (a, ev, e) in enumerate([(0, "start", 0), (3, "end", 0), (3, "start", 1), (6, "end", 1)])])
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", "--run", "cpu-run", "--store", sqlite_url(tmp_path / "e.db"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    energy = html[html.index("Energy per epoch, by series"):html.index("Tools against the truth")]
    assert "estimate:cpu" in energy and "no data" not in energy  # 150 J per epoch, drawn
    # `compare` has nothing to put side by side: one line naming what it needs, exit 1 (it printed two empty tables)
    for fmt in ("table", "json"):
        res = runner.invoke(app, ["compare", "--run", "cpu-run", "--format", fmt, "--store", sqlite_url(tmp_path / "e.db")])
        assert res.exit_code == 1 and "no measuring tool" in res.stderr and res.stdout == "", res.output


def test_ticks_of_a_range_below_float_resolution_end() -> None:
    """Two epochs of equal energy that differ by float rounding once hung the report (the tick step could not
    advance past 150 J): the range is taken as flat and the ticks are finite."""
    from jouled.quality.svg import nice_ticks

    ticks = nice_ticks(149.99999999999991, 149.99999999999997)
    assert 2 <= len(ticks) <= 61 and ticks[0] <= 150.0 <= ticks[-1]


def test_compare_names_a_coarse_truth(tmp_path: Path) -> None:
    """NVML declared with a counter the driver updates every 100 ms: epochs under 2 s are coarse for the truth, and the
    table says so under its buckets (the JSON counts them per bucket)."""
    from jouled.series import SeriesMeta
    from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url

    from .trace import markers, ns, samples

    st = SqliteStore(tmp_path / "j.db")  # declared before the samples, as the daemon does
    st.declare_series({SeriesKey("h", "nvml", "gpu0"): SeriesMeta(role="gpu", device="gpu0", power_period_s=0.1,
                                                                  counter_period_s=0.1, counter_update_s=0.1)}, ns(-1.0))
    st.write_samples(samples())
    st.write_markers(markers(None))
    st.close()
    url = sqlite_url(tmp_path / "j.db")
    out = _json(["compare", "--run", "r1", "--store", url, "--format", "json"])
    assert out["coarse_below_s"] == {"nvml-counter": pytest.approx(2.0)}
    b = {(x["bucket"], x["tool"]): x for x in out["buckets"]}
    assert b[("0.5–1 s", "smi")]["truth_coarse_epochs"] == 1 and b[("5–30 s", "smi")]["truth_coarse_epochs"] == 0
    res = runner.invoke(app, ["compare", "--run", "r1", "--store", url, "--wide"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "nvml-counter is coarse in epochs under 2.0 s (the device updates it every 100 ms)" in res.output
