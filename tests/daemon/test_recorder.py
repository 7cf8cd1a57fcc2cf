"""Markers over a real MQTT broker into the daemon: validation, dedup, counter snapshots, broker restarts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from jouled.clock import CLOCK
from tests.brokers import free_port, mosquitto_available, start_mosquitto
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon

pytestmark = pytest.mark.broker
TOPIC = "jouled/v1/testhost/markers"


def _publish(port: int, payloads: list[bytes | dict], topic: str = TOPIC) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for p in payloads:
        data = p if isinstance(p, bytes) else json.dumps(p).encode()
        c.publish(topic, data, qos=1).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()


def _marker(seq: int, event: str = "start", scope: str = "epoch", epoch: int = 0, **kw: object) -> dict:
    m = {"time": CLOCK.now_ns(), "host": "testhost", "run": "r1", "scope": scope, "event": event, "epoch": epoch,
         "seq": seq}
    m.update(kw)
    return m


def _wait(pred, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.02)


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed (make test installs it)")
def test_markers_via_mosquitto_validated_deduped_snapshotted(tmp_path: Path) -> None:
    broker = start_mosquitto()
    try:
        src = ScriptedSource(devices=1)
        d = start_daemon(make_config(tmp_path, broker.url), [src])
        good = [_marker(0), _marker(1, "end")]
        bad: list[bytes | dict] = [
            b"{not json",
            {k: v for k, v in _marker(2).items() if k != "run"},
            _marker(3, epoch="seven"),  # type: ignore[arg-type]
            _marker(4, scope="century"),
            _marker(5, "end", epoch=9),  # end without start: kept, warned
            _marker(1, "start", epoch=5),  # seq 1 reused with other content
            _marker(6, time=CLOCK.now_ns() + 3600 * 10**9),  # an hour in the future
        ]
        _publish(broker.port, [*good, good[0], *bad])  # good[0] again = a QoS-1 redelivery
        rec = d.daemon.recorder
        _wait(lambda: rec.stats.received == 10)
        stats = rec.stats.as_dict()
        final = d.stop()
    finally:
        broker.close()
    assert stats["stored"] == 3  # seq 0, 1, 5
    assert stats["duplicates"] == 1
    assert stats["rejected"] == {"bad_json": 1, "missing_field": 1, "wrong_type": 1, "unknown_scope": 1,
                                 "duplicate_seq": 1, "clock_skew": 1}
    assert stats["warnings"] == {"end_without_start": 1}
    stored = d.daemon.store.read_markers("r1")
    assert [m.seq for m in stored] == [0, 1, 5]
    assert src.counter_reads >= 1  # markers asked the sources for fresh counters
    assert final["markers"]["stored"] == 3


def test_embedded_broker_receives_markers(tmp_path: Path) -> None:
    port = free_port()
    src = ScriptedSource()
    d = start_daemon(make_config(tmp_path, "", embedded_port=port), [src])
    logged: list[tuple[str, int]] = []  # who said "new rows in the log" (the forwarder's nudge), and markers stored then
    d.daemon.on_flush.append(lambda: logged.append((threading.current_thread().name, d.daemon.recorder.stats.stored)))
    try:
        assert d.daemon.recorder.stats.embedded
        _publish(port, [_marker(0), _marker(1, "end")])
        _wait(lambda: d.daemon.recorder.stats.stored == 2)
        _wait(lambda: any(n == 2 for _t, n in logged))
    finally:
        d.stop()
    assert len(d.daemon.store.read_markers("r1")) == 2
    # stored markers nudge what follows the log themselves (the event loop's thread), not only the sample flushes
    # (the store thread's): the forwarder sends them even where no samples flow
    assert {t for t, _n in logged} - {"jouled-store"}


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed (make test installs it)")
def test_daemon_resubscribes_after_broker_restart(tmp_path: Path) -> None:
    broker = start_mosquitto()
    try:
        d = start_daemon(make_config(tmp_path, broker.url), [ScriptedSource()])
        _publish(broker.port, [_marker(0)])
        _wait(lambda: d.daemon.recorder.stats.stored == 1)
        broker.stop()
        _wait(lambda: not d.daemon.recorder.stats.connected)
        broker.start()
        _wait(lambda: d.daemon.recorder.stats.connected, timeout_s=30)
        _publish(broker.port, [_marker(1, "end")])
        _wait(lambda: d.daemon.recorder.stats.stored == 2)
        d.stop()
    finally:
        broker.close()
    assert [m.event for m in d.daemon.store.read_markers("r1")] == ["start", "end"]
