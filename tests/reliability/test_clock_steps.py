"""Clock steps (an NTP jump, a manual ``date -s``) during a run: windows stay correct.

Samples are stamped by ``jouled.clock`` (monotonic-anchored: a step does not bend them). Markers carry the sender's
CLOCK_MONOTONIC and boot id, and the daemon of the same host and boot places them by it. The step is injected at the
lowest layer, the marker client's wall-clock function (the machine's clock is never touched); everything else is
real: the daemon with the NVML shim at constant power, its embedded broker, SQLite, the spool.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from jouled.clock import CLOCK, boot_id
from jouled.config import NvmlConfig
from jouled.daemon import spool as spool_mod
from jouled.markers import (
    CLIENT_TIME_ATTR,
    LocalClock,
    MarkerError,
    MarkerTracker,
    marker_digest,
    marker_to_json,
    parse_marker,
)
from jouled.model import Marker
from jouled.sources.nvml import NvmlSource
from jouled.store.sqlite import SqliteStore
from jouled.trainer.markers import MarkerClient

from ..brokers import free_port
from ..daemon.harness import make_config, start_daemon
from ..sources.nvml_shim import make_shim

GPU_W = 250.0
EPOCH_S = 2.0
BOOT = "0b7d2f4e-1111-4c2a-9e3f-000000000001"
OTHER_BOOT = "0b7d2f4e-2222-4c2a-9e3f-000000000002"
WALL0_NS = 1_717_000_000_000_000_000
MONO0_NS = 5_000_000_000_000
LOCAL = LocalClock("h1", BOOT, anchor_wall_ns=WALL0_NS, anchor_mono_ns=MONO0_NS)

needs_boot_id = pytest.mark.skipif(boot_id() is None, reason="no /proc/sys/kernel/random/boot_id (not Linux)")


class SteppingWall:
    """A wall clock that NTP steps: the real one plus an offset the test changes mid-run."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


def payload(**over: object) -> bytes:
    d: dict[str, object] = {"time": WALL0_NS + 30 * 10**9, "host": "h1", "run": "r", "scope": "run", "event": "start",
                            "seq": 1, "mono_ns": MONO0_NS + 10**9, "boot_id": BOOT}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not None}).encode()


def parse(p: bytes, local: LocalClock | None = LOCAL, now_ns: int = WALL0_NS + 10**9) -> Marker:
    return parse_marker(p, topic_host="h1", now_ns=now_ns, max_skew_s=300.0, local=local)


# ------------------------------------------------------------------ the mapping (pure)


def test_same_host_and_boot_is_placed_by_its_monotonic_reading() -> None:
    m = parse(payload())  # the sender's wall clock stepped +30 s; its monotonic clock did not
    assert m.time_ns == WALL0_NS + 10**9
    assert m.attrs[CLIENT_TIME_ATTR] == WALL0_NS + 30 * 10**9  # the difference stays visible
    assert (m.mono_ns, m.boot_id) == (MONO0_NS + 10**9, BOOT)


@pytest.mark.parametrize(
    "over",
    [{"boot_id": OTHER_BOOT}, {"boot_id": None}, {"mono_ns": None}, {"host": "h2"}],
    ids=["other-boot", "no-boot-id", "no-mono", "other-host"],
)
def test_other_boot_host_or_old_client_keeps_its_wall_time(over: dict[str, object]) -> None:
    host = over.get("host", "h1")
    m = parse_marker(payload(**over), topic_host=str(host), now_ns=WALL0_NS + 10**9, max_skew_s=300.0, local=LOCAL)
    assert m.time_ns == WALL0_NS + 30 * 10**9
    assert CLIENT_TIME_ATTR not in m.attrs


def test_without_a_local_clock_nothing_is_mapped_and_old_payloads_stay_valid() -> None:
    assert parse(payload(), local=None).time_ns == WALL0_NS + 30 * 10**9  # importers, other readers: as today
    old = parse(payload(mono_ns=None, boot_id=None))
    assert (old.mono_ns, old.boot_id) == (None, None)


def test_wire_round_trip_and_bad_values() -> None:
    m = parse(payload(), local=None)
    assert json.loads(marker_to_json(m))["mono_ns"] == MONO0_NS + 10**9
    assert parse(marker_to_json(m), local=None) == m
    for over, kind in [({"mono_ns": -1}, "bad_value"), ({"mono_ns": "x"}, "wrong_type"), ({"boot_id": 7}, "wrong_type"),
                       ({"mono_ns": 2**63}, "out_of_range"), ({"boot_id": "b" * 300}, "too_long")]:
        with pytest.raises(MarkerError) as e:
            parse(payload(**over))
        assert e.value.kind == kind, over


def test_a_step_beyond_the_skew_limit_does_not_reject_a_mappable_marker() -> None:
    hour = 3600 * 10**9  # a clock an hour off, stepped by NTP: its own sent/time say nothing about ours
    m = parse(payload(time=WALL0_NS + hour, sent=WALL0_NS + hour))
    assert m.time_ns == WALL0_NS + 10**9
    with pytest.raises(MarkerError) as e:  # the same marker from another boot is judged by its wall clock, as today
        parse(payload(time=WALL0_NS + hour, sent=WALL0_NS + hour, boot_id=OTHER_BOOT))
    assert e.value.kind == "clock_skew"
    with pytest.raises(MarkerError) as e:  # a monotonic reading from our future is not believed
        parse(payload(mono_ns=MONO0_NS + hour))
    assert e.value.kind == "clock_skew"


def test_redelivery_is_recognised_across_a_daemon_restart_with_a_new_anchor() -> None:
    first = parse(payload())
    tracker = MarkerTracker()
    tracker.seed(replace(first, mono_ns=None, boot_id=None))  # as the store gives it back (no mono columns)
    restarted = LocalClock("h1", BOOT, anchor_wall_ns=WALL0_NS + 5_000, anchor_mono_ns=MONO0_NS)  # anchor jitter
    again = parse(payload(), local=restarted)
    assert again.time_ns != first.time_ns and marker_digest(again) == marker_digest(first)
    assert tracker.check(again).status == "redelivery"
    assert tracker.check(parse(payload(attrs={"x": 1}), local=restarted)).status == "rejected"


# ------------------------------------------------------------------ a real daemon, a real broker, a stepping client


def _run_with_step(
    tmp_path: Path, step_s: float, *, foreign_boot: bool = False
) -> tuple[float, float, tuple[Marker, Marker], tuple[Marker, Marker]]:
    """One epoch of EPOCH_S at GPU_W with the client's wall clock stepped by ``step_s`` in the middle.

    Returns (energy_j from the daemon's log, real duration_s by the monotonic clock, the client's start and end
    markers, the stored start and end markers).
    """
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    src = NvmlSource(NvmlConfig(rate_hz=20.0, counter_rate_hz=20.0), nvml_module=make_shim(1, power_w=GPU_W))
    bg = start_daemon(cfg, [src])
    wall = SteppingWall()
    client = MarkerClient.from_config(cfg, spool_path=tmp_path / "spool", wall_clock_ns=wall)
    if foreign_boot:
        client.boot_id = OTHER_BOOT  # as if the reading came from another boot: it must not be trusted
    try:
        time.sleep(0.5)  # samples before the epoch, so its start edge has neighbours
        with client.run("step", gpus=["gpu0"]) as r:
            with r.epoch(0) as ep:
                time.sleep(EPOCH_S / 2)
                wall.offset_ns = int(step_s * 1e9)  # NTP steps the wall clock mid-epoch
                time.sleep(EPOCH_S / 2)
        assert client.flush(10)
        assert ep.start_marker is not None and ep.end_marker is not None
        sent = (ep.start_marker, ep.end_marker)
        assert sent[0].mono_ns is not None and sent[1].mono_ns is not None
        real_s = (sent[1].mono_ns - sent[0].mono_ns) / 1e9
        energy_j = ep.energy(timeout=20).energy_j if not foreign_boot else float("nan")
    finally:
        client.close(timeout_s=5)
        bg.stop()
    stored = {(m.scope, m.event): m for m in SqliteStore(cfg.store.path, readonly=True).read_markers("step")}
    return energy_j, real_s, sent, (stored[("epoch", "start")], stored[("epoch", "end")])


@needs_boot_id
@pytest.mark.parametrize("step_s", [30.0, -30.0])
def test_epoch_energy_is_power_times_real_duration_across_a_wall_clock_step(tmp_path: Path, step_s: float) -> None:
    energy_j, real_s, sent, (start, end) = _run_with_step(tmp_path, step_s)
    assert real_s == pytest.approx(EPOCH_S, abs=0.2)
    # the stored window is the real one (not real ± 30 s), and the client's stepped wall time is kept beside it
    assert (end.time_ns - start.time_ns) / 1e9 == pytest.approx(real_s, abs=1e-6)
    assert (end.attrs[CLIENT_TIME_ATTR] - start.attrs[CLIENT_TIME_ATTR]) / 1e9 == pytest.approx(real_s + step_s, abs=0.05)
    assert start.time_ns == CLOCK.from_monotonic_ns(sent[0].mono_ns or 0)  # on the daemon's own time base
    assert start.attrs[CLIENT_TIME_ATTR] == sent[0].time_ns
    # without the mapping the window would be EPOCH_S + step_s long: 32 s (16× the energy) or negative
    assert energy_j == pytest.approx(GPU_W * real_s, rel=0.01), (energy_j, GPU_W * real_s)


@needs_boot_id
def test_a_monotonic_reading_from_another_boot_keeps_the_wall_time(tmp_path: Path) -> None:
    """The failure the mapping prevents, shown: a stepped wall time is stored as it came, the window is off by it."""
    _, real_s, _, (start, end) = _run_with_step(tmp_path, -1.0, foreign_boot=True)
    assert CLIENT_TIME_ATTR not in start.attrs and CLIENT_TIME_ATTR not in end.attrs
    assert (end.time_ns - start.time_ns) / 1e9 == pytest.approx(real_s - 1.0, abs=0.05)


@needs_boot_id
def test_spooled_markers_delivered_later_are_mapped_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "SCAN_PERIOD_S", 0.2)
    spool = tmp_path / "spool"
    wall = SteppingWall()
    dead = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="testhost", spool_path=spool, connect_timeout_s=0.2,
                        wall_clock_ns=wall)
    start = dead.mark("run", "start", "spooled")
    wall.offset_ns = 30 * 10**9
    end = dead.mark("run", "end", "spooled")
    assert dead.close(timeout_s=0.3) is False  # broker unreachable: both stay in the spool for the daemon
    cfg = make_config(tmp_path, "", embedded_port=free_port())
    src = NvmlSource(NvmlConfig(rate_hz=10.0), nvml_module=make_shim(1, power_w=GPU_W))
    bg = start_daemon(cfg, [src], spool_dir=spool)
    store = SqliteStore(cfg.store.path, readonly=True)
    try:
        deadline = time.monotonic() + 15
        while len(store.read_markers("spooled")) < 2:
            assert time.monotonic() < deadline, "spooled markers never stored"
            time.sleep(0.05)
    finally:
        bg.stop()
    s, e = store.read_markers("spooled")
    assert s.time_ns == CLOCK.from_monotonic_ns(start.mono_ns or 0) and s.attrs[CLIENT_TIME_ATTR] == start.time_ns
    assert e.time_ns == CLOCK.from_monotonic_ns(end.mono_ns or 0) and e.attrs[CLIENT_TIME_ATTR] == end.time_ns
    assert (e.time_ns - s.time_ns) < 10**9 < (end.time_ns - start.time_ns)  # the +30 s step is gone from the log



def test_the_client_sends_its_monotonic_reading_only_with_its_own_time(tmp_path: Path) -> None:
    c = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="h1", spool_path=tmp_path / "spool", connect_timeout_s=0.2)
    try:
        before = time.monotonic_ns()
        own = json.loads(marker_to_json(c.mark("run", "start", "r")))
        given = json.loads(marker_to_json(c.mark("run", "end", "r", time_ns=WALL0_NS)))  # `jouled markers send --time`
    finally:
        c.close(timeout_s=0.2)
    assert before <= own["mono_ns"] <= time.monotonic_ns() and own["boot_id"] == boot_id()
    assert "mono_ns" not in given and "boot_id" not in given
