"""The GPUs' power limits travel with the data: the NVML source declares them (nvmlDeviceGetPowerManagementLimitConstraints,
through the pynvml shim), the log stores them with the series' metadata (schema v4), and `assess` judges the run's
power range against them; a read-only view of a v3 log still reads."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from jouled.cli import app
from jouled.config import NvmlConfig
from jouled.series import SeriesMeta
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url
from tests.sources.nvml_shim import FakeGpu, NvmlShim

from ..oldlogs import log_at_version
from .trace import markers, ns, samples

runner = CliRunner()


def test_nvml_source_declares_the_limits() -> None:
    shim = NvmlShim([FakeGpu(limits_w=(150.0, 350.0)), FakeGpu(limits_w=None)])
    src = NvmlSource(NvmlConfig(), nvml_module=shim)
    info = src.open()
    try:
        assert (info.series["gpu0"].power_min_w, info.series["gpu0"].power_max_w) == (150.0, 350.0)
        assert (info.series["gpu1"].power_min_w, info.series["gpu1"].power_max_w) == (None, None)  # NOT_SUPPORTED
    finally:
        src.close()


def test_assess_takes_the_declared_limits(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "j.db")  # as the daemon does: the source declares its series when it opens
    st.declare_series({SeriesKey("h", "nvml", "gpu0"): SeriesMeta(role="gpu", device="gpu0", power_period_s=0.1,
                                                                  counter_period_s=0.1, power_min_w=80.0,
                                                                  power_max_w=180.0)}, ns(-1.0))
    st.write_samples(samples())
    st.write_markers(markers())
    st.close()
    url = sqlite_url(tmp_path / "j.db")
    (key,) = [k for k in SqliteStore(tmp_path / "j.db", readonly=True).series() if k.source == "nvml"]
    assert key.meta is not None and (key.meta.power_min_w, key.meta.power_max_w) == (80.0, 180.0)
    res = runner.invoke(app, ["assess", "--run", "r1", "--store", url, "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert "declaration" in out["gpu_limits_from"]
    (rng,) = [f for f in out["findings"] if f["check"] == "gpu-power-range"]
    # 100 W throughout against 80–180 W: no span; p95 at 100/180 of the max
    assert rng["numbers"]["limit_min_w"] == 80.0 and rng["numbers"]["limit_max_w"] == 180.0
    assert rng["numbers"]["p95_of_max"] == round(100 / 180, 4)
    # --gpu-limits wins over the declaration
    res = runner.invoke(app, ["assess", "--run", "r1", "--store", url, "--format", "json", "--gpu-limits", "50:250"])
    assert json.loads(res.stdout)["gpu_limits_from"] == "--gpu-limits"


def test_a_v3_log_reads_without_limits(tmp_path: Path) -> None:
    """A reader does not migrate: a v3 log's declarations read back, the limits unknown."""
    path = tmp_path / "v3.db"
    conn = log_at_version(path, 3)
    conn.execute("INSERT INTO series(id, host, source, device) VALUES (1, 'h', 'nvml', 'gpu0')")
    conn.execute("INSERT INTO series_meta VALUES (1, 0, 'gpu', 'gpu0', 'measured', 0, 0.1, 0.5, 0.001, 0, 'source')")
    conn.commit()
    conn.close()
    (key,) = SqliteStore(path, readonly=True).series()
    assert key.meta == SeriesMeta(role="gpu", device="gpu0", power_period_s=0.1, counter_period_s=0.5,
                                  counter_resolution_j=0.001)
    st = SqliteStore(path)  # a writer migrates to v4; the old declaration keeps its values, limits NULL
    (key,) = st.series()
    assert key.meta is not None and key.meta.power_max_w is None and key.meta.counter_period_s == 0.5
    st.close()
