"""Imported samples get their series metadata from the source name (jouled.series.default_meta, documented)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.series import SeriesMeta
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url

S = 1_000_000_000
T0 = 1_700_000_000 * S
runner = CliRunner()


def _csv(path: Path) -> None:
    lines = ["time,host,source,device,power_w,energy_j"]
    for i in range(61):  # 0 … 6 s: NVML-like power at 10 Hz, and its counter at 2 Hz on rows of its own
        lines.append(f"{T0 + i * S // 10},h,nvml,gpu0,300,")
        if i % 5 == 2:
            lines.append(f"{T0 + i * S // 10 + 1000},h,nvml,gpu0,,{300.0 * (i / 10 + 1e-6):.6f}")
    for i in range(7):  # 1 Hz
        for src, dev in (("rapl", "package-0"), ("rapl", "dram-1"), ("estimate", "cpu"), ("mymeter", "outlet")):
            lines.append(f"{T0 + i * S},h,{src},{dev},50,{50.0 * i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_imported_samples_take_the_documented_default_for_their_source(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOULED_STORE", raising=False)
    monkeypatch.delenv("JOULED_CONFIG", raising=False)
    store = sqlite_url(tmp_path / "log.db")
    _csv(tmp_path / "samples.csv")
    (tmp_path / "markers.csv").write_text(
        "time,host,run,scope,event,epoch\n"
        f"{T0 + S},h,imp,run,start,\n{T0 + S},h,imp,epoch,start,0\n{T0 + 4 * S},h,imp,epoch,end,0\n"
        f"{T0 + 4 * S},h,imp,run,end,\n", encoding="utf-8"
    )
    for kind in ("samples", "markers"):
        res = runner.invoke(app, ["import", kind, str(tmp_path / f"{kind}.csv"), "--store", store, "--no-progress"])
        assert res.exit_code == 0, res.output

    metas = {(k.source, k.device): k.meta for k in SqliteStore(tmp_path / "log.db", readonly=True).series()}
    default = {"origin": "default", "power_period_s": None, "counter_period_s": None}
    assert metas[("nvml", "gpu0")] == SeriesMeta("gpu", **default)  # type: ignore[arg-type]
    assert metas[("rapl", "package-0")] == SeriesMeta("package", **default)  # type: ignore[arg-type]
    assert metas[("rapl", "dram-1")] == SeriesMeta("dram", **default)  # type: ignore[arg-type]
    assert metas[("estimate", "cpu")] == SeriesMeta("cpu-estimate", kind="estimated", host_wide=True, **default)  # type: ignore[arg-type]
    assert metas[("mymeter", "outlet")] == SeriesMeta("other", **default)  # type: ignore[arg-type]

    res = runner.invoke(app, ["energy", "epochs", "--run", "imp", "--format", "json", "--store", store, "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = {(r["source"], r["device"]): r for r in json.loads(res.stdout)}
    gpu = rows[("nvml", "gpu0")]
    # periods unknown: each field judged against its own median spacing (counter 0.5 s), not the 10 Hz power's
    assert gpu["role"] == "gpu" and gpu["method"] == "counter"
    assert gpu["energy_j"] == pytest.approx(900.0, rel=1e-3)
    assert "gap" not in gpu["flags"] and "sparse" not in gpu["flags"]
    assert rows[("estimate", "cpu")]["role"] == "cpu-estimate"
    assert {"estimated", "host-wide"} <= set(rows[("estimate", "cpu")]["flags"])
    assert rows[("mymeter", "outlet")]["role"] == "other" and "gap" not in rows[("mymeter", "outlet")]["flags"]

    res = runner.invoke(app, ["energy", "runs", "--format", "json", "--store", store, "--no-progress"])
    (run,) = json.loads(res.stdout)
    # gpu + package + dram; the estimate only stands in when no package is measured; an unknown role is not added
    assert run["total_devices"] == ["nvml:gpu0", "rapl:package-0", "rapl:dram-1"]
    assert SeriesKey("h", "nvml", "gpu0") in SqliteStore(tmp_path / "log.db", readonly=True).series()
