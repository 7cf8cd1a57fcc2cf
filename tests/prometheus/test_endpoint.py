"""A real daemon over the NVML shim serving /metrics: the values agree with its log; a taken port is one line."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jouled.config import Config, NvmlConfig
from jouled.daemon.app import build_daemon, run_daemon
from jouled.daemon.background import BackgroundDaemon
from jouled.errors import UserError
from jouled.model import Allocation, CarbonPoint
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config
from tests.sources.nvml_shim import FakeGpu, NvmlShim, old_gpu

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(port: int) -> Samples:
    """/metrics as {sample name: {sorted labels: value}}, parsed by prometheus_client's own parser."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by_device(samples: Samples, name: str) -> dict[str, float]:
    return {dict(k)["device"]: v for k, v in samples.get(name, {}).items()}


def wait_for(port: int, ready: Callable[[Samples], bool], timeout_s: float = 20.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        m = scrape(port)
        if ready(m):
            return m
        if time.monotonic() > deadline:
            raise TimeoutError(f"/metrics never got there: {sorted(m)}")
        time.sleep(0.1)


def shim_config(tmp_path: Path, port: int) -> Config:
    cfg = make_config(tmp_path)
    cfg.prometheus.listen = f"127.0.0.1:{port}"
    return cfg


@pytest.fixture
def gpu_daemon(tmp_path: Path) -> Iterator[tuple[BackgroundDaemon, int]]:
    """Two GPUs with energy counters (250 W) and a pre-Volta one without (100 W: the integral), at 20 Hz."""
    port = free_port()
    cfg = shim_config(tmp_path, port)
    shim = NvmlShim([FakeGpu(power_w=250.0), FakeGpu(power_w=250.0), old_gpu(power_w=100.0)])
    src = NvmlSource(NvmlConfig(), nvml_module=shim)
    d = build_daemon(cfg, sqlite_url(cfg.store.path), rate_hz=20, sources=[src], markers=False)
    d.status_extras["forwarder"] = lambda: {"lag_s": 1.5, "backlog_points": 42, "url": "http://x", "points_sent": 7,
                                           "errors": None}
    bg = BackgroundDaemon(d).start()
    try:
        yield bg, port
    finally:
        bg.stop()


def _prefix_sums_match(value: float, sums: np.ndarray) -> bool:
    return bool(np.isclose(sums, value, rtol=1e-9, atol=1e-6).any())


def test_metrics_agree_with_the_log(gpu_daemon: tuple[BackgroundDaemon, int]) -> None:
    bg, port = gpu_daemon
    d = bg.daemon
    store = SqliteStore(d.store.path, readonly=True)
    started = d.started_ns
    # carbon and allocations land in the log from elsewhere (the poller, `nas search`): the latest is exported
    d.store.write_carbon([CarbonPoint(started - 10**9, "DE", "trace", 300.0), CarbonPoint(started, "DE", "trace", 310.0),
                          CarbonPoint(started + 10**15, "DE", "trace", 999.0, forecast=True)])
    d.store.write_allocations([Allocation(started - 1, "s1", 3, 5, 0.375, 300.0), Allocation(started, "s1", 2, 6, 0.25, 310.0)])

    m = wait_for(port, lambda m: len(by_device(m, "jouled_power_watts")) == 3
                 and min(by_device(m, "jouled_energy_joules_total").values()) > 0)

    power = by_device(m, "jouled_power_watts")
    energy = by_device(m, "jouled_energy_joules_total")
    devices = sorted(power)
    assert len(devices) == 3
    for (labels, _v) in m["jouled_power_watts"].items():
        lab = dict(labels)
        assert lab["host"] == "testhost" and lab["source"] == "nvml" and lab["role"] == "gpu"
    # the last power reading in the log; the energy = what the log holds since start, up to the scrape's last sample
    for dev in devices:
        s = store.read_series(SeriesKey("testhost", "nvml", dev), start_ns=started)
        assert power[dev] in set(s.power_w.tolist())
        if np.isfinite(s.energy_j).any():  # counter: the counter's increase since the first sample
            e = s.energy_j[np.isfinite(s.energy_j)]
            assert _prefix_sums_match(energy[dev], e - e[0]), (dev, energy[dev], e - e[0])
            assert power[dev] == pytest.approx(250.0)
        else:  # the trapezoid of power
            trap = np.concatenate(([0.0], np.cumsum((s.power_w[1:] + s.power_w[:-1]) / 2 * np.diff(s.time_ns) / 1e9)))
            assert _prefix_sums_match(energy[dev], trap), (dev, energy[dev], trap)
            assert power[dev] == pytest.approx(100.0)

    # the counter only grows
    later = wait_for(port, lambda m2: all(by_device(m2, "jouled_energy_joules_total")[k] > energy[k] for k in devices))
    assert all(by_device(later, "jouled_energy_joules_total")[k] > energy[k] for k in devices)

    src = {("host", "testhost"), ("source", "nvml")}
    assert set(m["jouled_sample_rate_hz"]) == {tuple(sorted(src))}
    assert m["jouled_sample_rate_hz"][tuple(sorted(src))] > 0
    assert m["jouled_samples_total"][tuple(sorted(src))] > 0
    assert m["jouled_read_errors_total"][tuple(sorted(src))] == 0
    assert tuple(sorted(src)) in m["jouled_missed_ticks_total"]
    assert 0 <= m["jouled_last_sample_age_seconds"][tuple(sorted(src))] < 10
    assert m["jouled_store_write_errors_total"] == {(("host", "testhost"),): 0.0}
    assert m["jouled_forwarder_lag_seconds"] == {(("host", "testhost"),): 1.5}
    assert m["jouled_forwarder_backlog_points"] == {(("host", "testhost"),): 42.0}
    assert m["jouled_forwarder_points_sent_total"] == {(("host", "testhost"),): 7.0}
    assert "jouled_forwarder_errors_total" not in m  # a value the status does not have is left out, not 0
    assert m["jouled_carbon_intensity_g_per_kwh"] == {(("provider", "trace"), ("zone", "DE")): 310.0}
    assert m["jouled_cenas_gpus"] == {(("role", "evaluation"), ("search", "s1")): 6.0,
                                      (("role", "sampling"), ("search", "s1")): 2.0}
    assert m["jouled_cenas_lambda_s"] == {(("search", "s1"),): 0.25}
    from jouled import __version__

    assert m["jouled_build_info"] == {(("version", __version__),): 1.0}
    assert d.status()["prometheus"]["port"] == port


def test_markers_counted(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, embedded_port=free_port())
    cfg.prometheus.listen = f"127.0.0.1:{port}"
    d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()])
    bg = BackgroundDaemon(d).start()
    try:
        m = wait_for(port, lambda m: "jouled_markers_total" in m)
    finally:
        bg.stop()
    assert m["jouled_markers_total"][(("host", "testhost"), ("result", "stored"))] == 0
    assert m["jouled_mqtt_connected"][(("host", "testhost"),)] == 1
    with pytest.raises(httpx.HTTPError):  # stopped with the daemon
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_taken_port_is_one_line_naming_the_key_and_frees_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = shim_config(tmp_path, port)
        with pytest.raises(UserError) as e:
            build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], markers=False)
    msg = str(e.value)
    assert "[prometheus] listen" in msg and "already in use" in msg and "\n" not in msg
    # the log's lock went with the failed build: the next start works
    cfg.prometheus.listen = ""
    d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], markers=False)
    run_daemon(d, 0.2)


def test_bad_listen_from_the_environment_is_one_line(tmp_path: Path) -> None:
    from jouled.config import load_config

    cfg = load_config(None, {"JOULED_PROMETHEUS_LISTEN": "localhost"})
    cfg.store.path = str(tmp_path / "log.db")
    with pytest.raises(UserError, match=r"\[prometheus\] listen"):
        build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], markers=False)


def test_non_loopback_listen_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path)
    cfg.prometheus.listen = f"0.0.0.0:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="jouled.prometheus"):
        d = build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], markers=False)
    run_daemon(d, 0.2)
    assert any("not a loopback address" in r.getMessage() for r in caplog.records)


def test_two_daemons_in_one_process_have_their_own_metrics(tmp_path: Path) -> None:
    bgs, ports = [], []
    for i, watts in enumerate((120.0, 330.0)):
        port = free_port()
        cfg = shim_config(tmp_path / str(i), port)
        src = NvmlSource(NvmlConfig(), nvml_module=NvmlShim([FakeGpu(power_w=watts)]))
        bgs.append(BackgroundDaemon(build_daemon(cfg, sqlite_url(cfg.store.path), sources=[src], markers=False)).start())
        ports.append(port)
    try:
        got = [list(by_device(wait_for(p, lambda m: bool(m.get("jouled_power_watts"))),
                              "jouled_power_watts").values()) for p in ports]
    finally:
        for bg in bgs:
            bg.stop()
    assert got == [[pytest.approx(120.0)], [pytest.approx(330.0)]]


def test_ipv6_loopback(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    cfg = make_config(tmp_path)
    cfg.prometheus.listen = f"[::1]:{port}"
    bg = BackgroundDaemon(build_daemon(cfg, sqlite_url(cfg.store.path), sources=[ScriptedSource()], markers=False)).start()
    try:
        body = httpx.get(f"http://[::1]:{port}/metrics", timeout=5).text
    finally:
        bg.stop()
    assert "jouled_build_info{" in body


def _switches(native_id: int) -> int:
    """How often the thread went to sleep and was woken (voluntary context switches, from /proc)."""
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_the_serving_thread_sleeps_between_scrapes_and_stops_at_once(tmp_path: Path) -> None:
    """No polling: between scrapes the thread is woken not once (serve_forever polled twice a second); a scrape is
    answered, and stop() returns at once, not after a poll interval."""
    port = free_port()
    cfg = shim_config(tmp_path, port)
    src = NvmlSource(NvmlConfig(), nvml_module=NvmlShim([FakeGpu(power_w=250.0)]))
    d = build_daemon(cfg, sqlite_url(cfg.store.path), rate_hz=5, sources=[src], markers=False)
    bg = BackgroundDaemon(d).start()
    try:
        assert scrape(port)
        thread = next(t for t in threading.enumerate() if t.name == "jouled-prometheus")
        assert thread.native_id is not None
        time.sleep(0.3)  # the scrape's answer is out before its thread is back in select: let it get there
        before = _switches(thread.native_id)
        time.sleep(1.5)
        assert _switches(thread.native_id) - before == 0
        assert scrape(port)  # still answering
    finally:
        t0 = time.monotonic()
        bg.stop()
        assert time.monotonic() - t0 < 5.0
    assert not thread.is_alive()
