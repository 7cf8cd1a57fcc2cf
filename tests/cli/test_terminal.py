"""A terminal a person can read: tables fit 80 columns without cutting a run id, device or energy; --wide shows all;
help shows defaults and types as words; progress callbacks count up; no control codes when stderr is not a TTY."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from jouled.cli import app
from jouled.model import Marker, Sample
from jouled.store.sqlite import SqliteStore, sqlite_url
from jouled.tables import Column, cell_widths, fit_columns, print_table, table_width

runner = CliRunner()
ENV80 = {"COLUMNS": "80", "JOULED_CONFIG": "", "JOULED_STORE": ""}
S = 1_000_000_000
RUN = "resnet50-lr0.1-bs256-cosine-seed7-abcdef0"  # 40 characters
GPU = "gpu0-nvidia-a100-sxm4-80gb-3b00"
CPU = "package-0-intel-xeon-8480"
T0 = 1_700_000_000 * S
PYTHON_TYPE = re.compile(r"<[a-z][a-z_\[\], ]*>|\b(?:FLOAT|INTEGER|TEXT|PATH|BOOLEAN)\b(?! \(|/)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _store(tmp_path: Path, runs: tuple[str, ...] = (RUN,)) -> str:
    """A real SQLite log: two devices sampled at 10 Hz (power and an energy counter) under run/epoch/phase markers."""
    db = tmp_path / "log.db"
    st_ = SqliteStore(db)
    samples = []
    for i in range(0, 10 * 20 * len(runs) + 20):
        t = T0 + i * S // 10
        samples.append(Sample(t, "h1", "nvml", GPU, power_w=250.0 + (i % 7), energy_j=25.0 * i))
        samples.append(Sample(t, "h1", "rapl", CPU, power_w=80.0 + (i % 3), energy_j=8.0 * i))
    st_.write_samples(samples)
    markers = []
    for k, run in enumerate(runs):
        base = T0 + S + k * 20 * S
        plan: list[tuple[float, str, str, int | None, str | None]] = [(0, "run", "start", None, None)]
        for ep in range(3):
            plan += [(ep * 5, "epoch", "start", ep, None), (ep * 5, "phase", "start", ep, "train"),
                     (ep * 5 + 4, "phase", "end", ep, "train"), (ep * 5 + 4, "phase", "start", ep, "eval"),
                     (ep * 5 + 5, "phase", "end", ep, "eval"), (ep * 5 + 5, "epoch", "end", ep, None)]
        plan.append((15, "run", "end", None, None))
        for seq, (dt_s, scope, event, epoch, phase) in enumerate(plan):
            markers.append(Marker(base + int(dt_s * S), "h1", run, scope, event, seq, epoch, phase, None, (GPU,)))
    st_.write_markers(markers)
    return sqlite_url(db)


def _j(v: float) -> str:  # the table's energy format
    return f"{v / 1000:.3f} kJ" if abs(v) >= 10_000 else f"{v:.2f} J"


def _check_80(out: str) -> None:
    for line in out.splitlines():
        assert len(line) <= 80, f"{len(line)} > 80: {line!r}"
    assert "…" not in out and "..." not in out


# ---------------------------------------------------------------- the pure fitting decision


@given(
    st.lists(st.tuples(st.integers(1, 60), st.integers(0, 6)), min_size=1, max_size=12),
    st.integers(20, 200),
)
@settings(max_examples=300, deadline=None)
def test_fit_columns_keeps_essentials_and_fits_when_it_can(cols: list[tuple[int, int]], width: int) -> None:
    mins = [w for w, _ in cols]
    prios = [p for _, p in cols]
    keep = fit_columns(mins, prios, width)
    assert all(keep[i] for i, p in enumerate(prios) if p == 0)
    essentials = table_width([w for w, p in cols if p == 0]) if any(p == 0 for p in prios) else 1
    kept_w = table_width([w for w, k in zip(mins, keep, strict=True) if k])
    if essentials <= width:
        assert kept_w <= width
    if table_width(mins) <= width:
        assert all(keep)
    # nothing hidden that would still fit
    for i, k in enumerate(keep):
        if not k:
            assert table_width([w for j, w in enumerate(mins) if keep[j] or j == i]) > width


def test_fit_drops_highest_priority_number_first() -> None:
    assert fit_columns([10, 10, 10, 10], [0, 1, 2, 3], table_width([10, 10, 10])) == [True, True, True, False]
    assert fit_columns([10, 10, 10, 10], [0, 3, 2, 1], table_width([10, 10])) == [True, False, False, True]


def test_cell_widths_by_kind() -> None:
    assert cell_widths(Column("id"), ["abc def ghij"]) == (12, 12)
    assert cell_widths(Column("flags", fit="wrap"), ["sparse gap-long"]) == (8, 15)
    assert cell_widths(Column("arch", fit="fold", fold_min=5), ["x" * 30]) == (5, 30)
    assert cell_widths(Column("per device"), ["a 1 J\nlonger-name 2 J"]) == (15, 15)


@given(
    st.lists(
        st.tuples(st.text("abcdefghij-_0123456789", min_size=1, max_size=45),
                  st.text("abc ", max_size=30), st.floats(0, 1e6)),
        min_size=1, max_size=6,
    ),
    st.integers(60, 140),
)
@settings(max_examples=60, deadline=None)
def test_rendered_table_fits_and_keeps_whole_values(rows: list[tuple[str, str, float]], width: int) -> None:
    cols = [Column("run"), Column("note", 2, fit="wrap"), Column("energy", 0, "right"), Column("extra", 3)]
    cells = [[r, n, _j(e), "x" * 20] for r, n, e in rows]
    con = Console(width=width, record=True, file=io.StringIO())
    print_table("t", cols, cells, console=con)
    text = con.export_text()
    essential = table_width([max(len(c[0]) for c in [*cells, ["run"]]), max(len(c[2]) for c in [*cells, ["", "", "energy"]])])
    if essential <= width:
        assert max(len(ln) for ln in text.splitlines()) <= width
    for run, _, e in rows:
        assert run in text and _j(e) in text


# ---------------------------------------------------------------- real commands on a real store at 80 columns


def test_energy_epochs_at_80_columns_keeps_run_device_energy(tmp_path: Path) -> None:
    url = _store(tmp_path)
    res = runner.invoke(app, ["energy", "epochs", "--run", RUN, "--scope", "all", "--store", url], env=ENV80)
    assert res.exit_code == 0, res.output
    out = res.output
    _check_80(out)
    assert RUN in out and GPU in out and CPU in out
    data = json.loads(runner.invoke(app, ["energy", "epochs", "--run", RUN, "--scope", "all", "--store", url,
                                          "--format", "json"], env=ENV80).output)
    assert data
    for r in data:
        assert _j(r["energy_j"]) in out
    assert "hidden at 80 columns:" in out and "--wide" in out
    assert "max gap" in out.split("hidden at 80 columns:")[1]
    wide = runner.invoke(app, ["energy", "epochs", "--run", RUN, "--scope", "all", "--store", url, "--wide"], env=ENV80)
    assert wide.exit_code == 0
    for col in ("max gap", "method", "samples", "source", "duration"):
        assert col in wide.output
    assert "hidden at" not in wide.output


def test_energy_runs_at_80_columns(tmp_path: Path) -> None:
    runs = (RUN, RUN[::-1])
    url = _store(tmp_path, runs)
    res = runner.invoke(app, ["energy", "runs", "--store", url], env=ENV80)
    assert res.exit_code == 0, res.output
    _check_80(res.output)
    data = json.loads(runner.invoke(app, ["energy", "runs", "--store", url, "--format", "json"], env=ENV80).output)
    wide = runner.invoke(app, ["energy", "runs", "--store", url, "--wide"], env=ENV80)
    assert "start" in wide.output and "per device" in wide.output and "hidden at" not in wide.output
    for r in data:
        assert r["run"] in res.output and _j(r["energy_j"]) in res.output
        for dev, e in r["energy_j_by_device"].items():
            assert f"{dev} {_j(e)}" in wide.output  # a device and its energy stay together, whole
    assert "per device" in res.output.split("hidden at 80 columns:")[1]


def test_energy_by_device_totals_fit(tmp_path: Path) -> None:
    url = _store(tmp_path)
    res = runner.invoke(app, ["energy", "epochs", "--run", RUN, "--store", url, "--by", "device"], env=ENV80)
    assert res.exit_code == 0, res.output
    _check_80(res.output)
    assert f"nvml {GPU}" in res.output


def test_run_status_and_sources_tables_fit(tmp_path: Path) -> None:
    from tests.brokers import free_port

    db = tmp_path / "d.db"
    env = {**ENV80, "JOULED_MQTT_EMBEDDED_PORT": str(free_port()), "XDG_DATA_HOME": str(tmp_path)}
    res = runner.invoke(app, ["run", "--duration", "1.5", "--source", "estimate", "--store", sqlite_url(db)], env=env)
    assert res.exit_code == 0, res.output
    _check_80(res.output)
    assert "estimate" in res.output
    # the daemon's own status file, with the long device names and a retry message a big machine has
    path = tmp_path / "d.status.json"
    doc = json.loads(path.read_text())
    src = doc["sources"][[s["name"] for s in doc["sources"]].index("estimate")]
    src["devices"] = [GPU, GPU.replace("gpu0", "gpu1"), CPU]
    src.update(state="retrying", errors=3, last_error="NVML_ERROR_GPU_IS_LOST on gpu1 (retrying in 4 s)")
    doc["pid"] = 0  # the daemon ran in this process: say it is gone
    path.write_text(json.dumps(doc))
    st = runner.invoke(app, ["status", "--store", sqlite_url(db)], env=env)
    assert st.exit_code == 1, st.output  # the daemon has stopped: its last status, exit 1
    out = st.stdout
    _check_80(out)
    for dev in src["devices"]:
        assert dev in out
    assert "estimate retrying: NVML_ERROR_GPU_IS_LOST on gpu1" in " ".join(out.split())
    wide = runner.invoke(app, ["status", "--store", sqlite_url(db), "--wide"], env=env)
    assert "jitter p50/p99 ms" in wide.stdout and "hidden at" not in wide.stdout
    so = runner.invoke(app, ["sources"], env=env)
    assert so.exit_code == 0, so.output
    _check_80(so.output)
    assert "estimate" in so.output


# ---------------------------------------------------------------- one name for one concept: nas search --gpus N / --devices


def test_worker_slots_count_or_list() -> None:
    from jouled.errors import UserError
    from jouled.scheduler.search_cli import worker_slots

    assert worker_slots(None, None, lambda: 0) == ["cpu0", "cpu1"]
    assert worker_slots(None, None, lambda: 3) == ["0", "1", "2"]
    assert worker_slots("2", None, lambda: 4) == ["0", "1"]
    assert worker_slots("3", None, lambda: 0) == ["cpu0", "cpu1", "cpu2"]
    assert worker_slots(None, "1,3", lambda: 4) == ["1", "3"]
    assert worker_slots(None, "cpu:2", lambda: 4) == ["cpu0", "cpu1"]
    for gpus, devices, found, needle in [
        ("0,1", None, 2, "--devices 0,1"), ("cpu:2", None, 0, "--devices cpu:2"), ("5", None, 2, "only 2 GPU"),
        ("0", None, 2, "at least 1"), ("2", "0,1", 2, "pass one"), (None, "gpu0", 2, "--devices 'gpu0'"),
    ]:
        with pytest.raises(UserError, match=re.escape(needle)):
            worker_slots(gpus, devices, lambda f=found: f)  # type: ignore[misc]


def test_nas_search_policy_is_a_deprecated_alias_of_method(tmp_path: Path) -> None:
    res = runner.invoke(app, ["nas", "search", "--policy", "magic", "--provider", "constant",
                              "--store", sqlite_url(tmp_path / "s.db")], env=ENV80)
    assert res.exit_code == 2
    assert "--policy is deprecated — use --method" in res.output
    assert "magic" in res.output
    help_text = runner.invoke(app, ["nas", "search", "-h"], env=ENV80).output
    assert "--method" in help_text and "--policy" not in help_text and "--devices" in help_text


# ---------------------------------------------------------------- progress: callbacks count up; no bar when not a terminal


def test_simulator_reports_progress_in_order(bench: object) -> None:
    from jouled.scheduler.simulator import SimConfig, run_many

    calls: list[tuple[int, int]] = []
    trace = _trace_file()
    run_many(["vanilla", "oneshot"], trace, bench, [0, 1], SimConfig(gpus=1, hours=1.0),  # type: ignore[arg-type]
             on_progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 5


def _trace_file():  # type: ignore[no-untyped-def]
    from jouled.carbon.trace import load_trace

    src = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carbon" / "electricitymaps" / "DE_2022_hourly.csv"
    if not src.is_file():
        pytest.skip(f"no trace at {src}")
    return load_trace(src, "direct")


def test_train_reports_batches_counting_up() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from jouled.trainer.data import load_data
    from jouled.trainer.models import build_model
    from jouled.trainer.train import train

    data = load_data("digits", None, 256, seed=0)
    torch.manual_seed(0)
    net = build_model("nb201:" + "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|none~2|",
                      data.num_classes, data.in_channels, data.image_size, channels=4, cells_per_stage=1)
    calls: list[tuple[int, int]] = []
    train(net, data, 2, "cpu", max_batches=3, on_progress=lambda d, t: calls.append((d, t)))
    total = 2 * (min(len(data.train), 3) + min(len(data.eval), 3))  # 2 epochs × (train + eval batches, at most 3)
    assert total >= 8 and calls[0] == (0, total)
    assert [d for d, _ in calls] == list(range(total + 1))
    assert all(t == total for _, t in calls)


def test_no_control_codes_without_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    for extra in ([], ["--no-progress"]):
        res = runner.invoke(app, ["train", "--dataset", "digits", "--epochs", "1", "--channels", "4", "--cells", "1",
                                  "--max-batches", "2", "--no-markers", *extra], env=ENV80)
        assert res.exit_code == 0, res.output
        assert not ANSI.search(res.output) and "\r" not in res.output, repr(res.output[:400])
        _check_80(res.stdout)


def test_progress_bar_is_off_when_stderr_is_not_a_terminal() -> None:
    from jouled.progress import progress_bar, progress_enabled

    assert progress_enabled() is False  # pytest captures stderr
    assert progress_enabled(no_progress=True) is False
    with progress_bar("x", enabled=False) as cb:
        cb(1, 2)  # a no-op, not an error


# ---------------------------------------------------------------- help: -h everywhere, defaults shown, types as words


def _commands() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:  # type: ignore[no-untyped-def]
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return out


def test_every_command_has_short_help_and_no_python_types() -> None:
    cmds = _commands()
    assert ["nas", "simulate"] in cmds and ["energy", "epochs"] in cmds
    for path in cmds:
        res = runner.invoke(app, [*path, "-h"], env=ENV80)
        assert res.exit_code == 0, (path, res.output)
        assert "Usage:" in res.output
        bad = PYTHON_TYPE.findall(res.output.replace("FILE <path>", "FILE"))  # typer prints an argument's type
        assert not bad, (path, bad, res.output)


def test_help_shows_defaults_and_unused_store_is_hidden() -> None:
    out = runner.invoke(app, ["nas", "simulate", "-h"], env=ENV80).output
    assert "[default: 8]" in out and "--gpus N" in out and "--store" not in out and "--no-progress" in out
    out = runner.invoke(app, ["energy", "epochs", "-h"], env=ENV80).output
    assert "--store URL" in out and "--config FILE" in out and "--run RUN" in out and "--wide" in out
    out = runner.invoke(app, ["train", "-h"], env=ENV80).output
    assert "--store" not in out and "--epochs N" in out and "default: 3" in out


def test_import_parsing_reports_lines_counting_up(tmp_path: Path) -> None:
    from jouled.importers import parse_samples

    n = 25_000
    text = "time,host,source,device,power_w,energy_j\n" + "".join(
        f"{T0 + i * S // 10},h1,nvml,gpu0,{100 + i % 5},\n" for i in range(n))
    calls: list[tuple[int, int]] = []
    parsed = parse_samples(text, default_host="h", fmt="csv", on_progress=lambda d, t: calls.append((d, t)))
    assert len(parsed.items) == n and not parsed.errors
    assert [d for d, _ in calls] == [10_000, 20_000] and all(t == n + 2 for _, t in calls)
    lp = "".join(f"power,host=h1,source=nvml,device=gpu0 power_w={100 + i % 5} {T0 + i * S // 10}\n" for i in range(n))
    calls.clear()
    assert len(parse_samples(lp, default_host="h", fmt="lp", on_progress=lambda d, t: calls.append((d, t))).items) == n
    assert [d for d, _ in calls] == [10_000, 20_000]
    # the command, not a terminal: no bar, no control codes, everything imported
    f = tmp_path / "big.csv"
    f.write_text(text)
    res = runner.invoke(app, ["import", "samples", str(f), "--store", sqlite_url(tmp_path / "i.db")], env=ENV80)
    assert res.exit_code == 0, res.output
    assert f"imported {n} samples" in res.output and not ANSI.search(res.output)


def test_carbon_tables_fit_and_keep_time_and_value() -> None:
    trace = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carbon" / "electricitymaps" / "DE_2022_hourly.csv"
    if not trace.is_file():
        pytest.skip(f"no trace at {trace}")
    base = ["--trace", str(trace), "--at", "2022-03-01T00:00:00Z"]
    for cmd in (["carbon", "history"], ["carbon", "forecast"], ["carbon", "now"]):
        res = runner.invoke(app, [*cmd, *base], env=ENV80)
        assert res.exit_code == 0, res.output
        _check_80(res.output)
        assert re.search(r"│ 2022-0[23]-\d\d \d\d:00 │", res.output), res.output[:600]  # a time on one line
        doc = json.loads(runner.invoke(app, [*cmd, *base, "--format", "json"], env=ENV80).output)
        assert f"{doc[0]['intensity_g_per_kwh']:.1f}" in res.output
