"""MarkerClient against real brokers: order, spooling through outages, replay of a crashed process's spool."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jouled.markers import MarkerTracker, parse_marker
from jouled.model import Marker
from jouled.trainer.markers import MarkerClient, SeqAllocator
from tests.brokers import BrokerHandle, Subscriber, TcpGate, free_port

REPO = Path(__file__).resolve().parents[2]


def decode(payloads: list[bytes]) -> list[Marker]:
    now = time.time_ns()
    return [parse_marker(p, topic_host=None, now_ns=now, max_skew_s=60) for p in payloads]


def unique_in_order(markers: list[Marker], tracker: MarkerTracker | None = None) -> list[Marker]:
    """First deliveries only, checked by the daemon's own tracker (redeliveries must be identical); pass a tracker
    to carry on from markers checked before."""
    t = tracker or MarkerTracker()
    out = []
    for m in markers:
        r = t.accept(m)
        assert r.status != "rejected", r.problem
        if r.status == "accepted":
            out.append(m)
    return out


def wait_unique(sub: Subscriber, n: int, timeout_s: float = 30.0) -> list[Marker]:
    """Distinct markers once ``n`` distinct ones arrived (redeliveries do not count), or at the timeout.

    Each payload is decoded and checked once, as it arrives (one tracker for the whole wait): decoding every
    payload again on each wake-up was quadratic, and 3000 markers then took longer than the timeout to check.
    """
    deadline = time.monotonic() + timeout_s
    tracker = MarkerTracker()
    got: list[Marker] = []
    seen = 0
    while True:
        payloads = sub.wait_for(seen + 1, timeout_s=max(0.0, deadline - time.monotonic()))
        got += unique_in_order(decode(payloads[seen:]), tracker)
        seen = len(payloads)
        if len(got) >= n or time.monotonic() >= deadline:
            return got


def shape(ms: list[Marker]) -> list[tuple[object, ...]]:
    return [(m.scope, m.event, m.epoch, m.phase) for m in ms]


def test_publishes_every_marker_in_order_to_mosquitto(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.port)
    try:
        with MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path) as client:
            with client.run("r1", arch="resnet18", gpus=["gpu0"], attrs={"seed": 0}) as r:
                for n in range(3):
                    with r.epoch(n):
                        with r.phase("train"):
                            pass
                        with r.phase("eval"):
                            pass
            assert client.flush(10)
            assert client.pending == 0
        got = decode(sub.wait_for(20))
    finally:
        sub.close()
    assert len(got) == 20
    assert [m.seq for m in got] == list(range(20))
    expected: list[tuple[object, ...]] = [("run", "start", None, None)]
    for n in range(3):
        expected += [("epoch", "start", n, None)]
        for p in ("train", "eval"):
            expected += [("phase", "start", n, p), ("phase", "end", n, p)]
        expected += [("epoch", "end", n, None)]
    expected += [("run", "end", None, None)]
    assert shape(got) == expected
    assert all(m.host == "h1" and m.arch == "resnet18" and m.gpus == ("gpu0",) for m in got)
    assert got[0].attrs == {"seed": 0}
    assert [m.time_ns for m in got] == sorted(m.time_ns for m in got)
    assert not list(tmp_path.glob("*.jsonl")), "a fully delivered spool is removed on close"


def test_exception_inside_a_window_still_ends_it(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.port)
    try:
        with MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path) as client:
            with pytest.raises(ZeroDivisionError), client.run("r1") as r, r.epoch(0), r.phase("train"):
                1 / 0  # noqa: B018
            assert client.flush(10)
        got = decode(sub.wait_for(6))
    finally:
        sub.close()
    assert shape(got) == [
        ("run", "start", None, None), ("epoch", "start", 0, None), ("phase", "start", 0, "train"),
        ("phase", "end", 0, "train"), ("epoch", "end", 0, None), ("run", "end", None, None),
    ]
    assert all(m.attrs == {"status": "error", "error": "ZeroDivisionError"} for m in got[3:])


@pytest.mark.parametrize("broker_fixture", ["mosquitto", "amqtt_broker"])
def test_broker_down_markers_spooled_then_replayed_in_order(
    broker_fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker: BrokerHandle = request.getfixturevalue(broker_fixture)
    # the client reaches the broker through a gate, so the test decides when it gets back in:
    # after the new subscriber is ready (a restarted broker without persistence forgets subscriptions)
    gate = TcpGate(broker.port).open()
    sub = Subscriber(broker.port)
    client = MarkerClient(gate.url, host="h1", spool_path=tmp_path, fsync_interval_s=0.02)
    try:
        r = client.run("r1").start()
        for n in range(2):
            r.start_epoch(n)
            r.end_epoch(n)
        assert client.flush(10)
        assert len(sub.wait_for(5)) == 5
        sub.close()

        gate.close()
        broker.kill()
        for n in range(2, 40):
            with r.epoch(n):
                pass
        r.end()
        assert not client.flush(0.5), "nothing can be acknowledged while the broker is down"
        assert client.pending == 77
        spool = Path(client.stats().spool_file)
        time.sleep(0.1)  # past one fsync interval
        lines = [json.loads(ln) for ln in spool.read_text().splitlines()]
        assert [x["seq"] for x in lines][-77:] == list(range(5, 82)), "undelivered markers are on disk"

        broker.start()
        sub = Subscriber(broker.port)
        gate.open()
        assert client.flush(15), client.stats()
        got = wait_unique(sub, 77)
    finally:
        client.close(2)
        sub.close()
        gate.close()
    assert [m.seq for m in got] == list(range(5, 82)), "replayed in order, none lost"
    assert shape(got)[:2] == [("epoch", "start", 2, None), ("epoch", "end", 2, None)]
    assert shape(got)[-1] == ("run", "end", None, None)
    assert [m.time_ns for m in got] == sorted(m.time_ns for m in got)
    assert client.stats().connects == 2


def test_broker_stopped_while_publishing_nothing_lost(mosquitto_persistent: BrokerHandle, tmp_path: Path) -> None:
    broker = mosquitto_persistent
    # a persistent subscriber session, as the daemon keeps: the broker queues for it across the restart
    sub = Subscriber(broker.port, client_id="jouled-test-daemon", persistent=True)
    client = MarkerClient(broker.url, host="h1", spool_path=tmp_path)
    n_total = 3000
    try:
        r = client.run("burst").start()
        for i in range(1, n_total - 1):
            r.mark("epoch", "start" if i % 2 else "end", epoch=i // 2)
            if i == n_total // 2:
                broker.stop()  # mid-burst: some delivered, some in flight, the rest queued
        r.end()
        time.sleep(0.3)
        assert client.pending > 0
        broker.start()
        assert client.flush(30), client.stats()
        got = wait_unique(sub, n_total)
    finally:
        client.close(2)
        sub.close()
    assert [m.seq for m in got] == list(range(n_total))


def test_crashed_process_spool_is_adopted_and_replayed_first(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    dead_port = free_port()
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from jouled.trainer.markers import MarkerClient
        c = MarkerClient("mqtt://127.0.0.1:{dead_port}", host="h1", spool_path=Path({str(tmp_path)!r}))
        r = c.run("r1").start()
        for n in range(10):
            with r.epoch(n):
                pass
        c.flush(0.3)  # cannot deliver: returns False once the markers are in the spool
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, timeout=60, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    left = list(tmp_path.glob("*.jsonl"))
    assert len(left) == 1 and len(left[0].read_text().splitlines()) == 21

    sub = Subscriber(mosquitto.port)
    try:
        with MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path) as client:
            assert client.stats().adopted == 21
            r = client.run("r1")
            r.start_epoch(10)
            assert client.flush(10)
        got = decode(sub.wait_for(22))
    finally:
        sub.close()
    assert [m.epoch for m in got[1:21:2]] == list(range(10))
    assert shape(got[-1:]) == [("epoch", "start", 10, None)]
    # the new process continues the run's sequence instead of reusing seq 0..
    assert got[-1].seq > max(m.seq for m in got[:-1])
    assert not list(tmp_path.glob("*.jsonl"))


def test_live_clients_do_not_adopt_each_other(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    a = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="h1", spool_path=tmp_path)
    try:
        a.run("ra").start()
        a.flush(0.2)
        with MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path) as b:
            assert b.stats().adopted == 0  # a is alive and holds its spool's lock
        assert a.pending == 1
    finally:
        assert not a.close(0.2)
    with MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path) as c:
        assert c.stats().adopted == 1  # now a is gone: its spool is an orphan
        assert c.flush(10)


def test_seq_allocator_is_shared_and_persistent(tmp_path: Path) -> None:
    alloc = SeqAllocator(tmp_path)
    assert alloc.reserve("run/with spaces") == 0
    assert alloc.reserve("run/with spaces", 5) == 1
    assert SeqAllocator(tmp_path).reserve("run/with spaces") == 6
    alloc.observe("run/with spaces", 100)
    assert alloc.peek("run/with spaces") == 101
    alloc.observe("run/with spaces", 3)  # an older explicit seq does not move the counter back
    assert alloc.reserve("other") == 0 and alloc.peek("run/with spaces") == 101


def test_mark_rejects_incomplete_markers_in_the_caller(tmp_path: Path) -> None:
    with MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host="h1", spool_path=tmp_path) as c:
        with pytest.raises(ValueError, match="epoch"):
            c.mark("epoch", "start", "r1")
        with pytest.raises(ValueError, match="phase"):
            c.mark("phase", "start", "r1", epoch=1)
        with pytest.raises(ValueError, match="scope"):
            c.mark("batch", "start", "r1", epoch=1)
        with pytest.raises(ValueError, match="belongs to an epoch"):
            c.run("r1").phase("eval")
        with pytest.raises(ValueError):
            MarkerClient("http://x", spool_path=tmp_path)
        assert c.pending == 0


def test_silent_broker_times_out_and_keeps_markers(tmp_path: Path) -> None:
    # something accepts TCP on the broker port and never answers CONNECT (a hung broker)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        c = MarkerClient(
            f"mqtt://127.0.0.1:{silent.getsockname()[1]}", host="h1", spool_path=tmp_path, connect_timeout_s=0.3
        )
        r = c.run("r1").start()
        for n in range(100):
            with r.epoch(n):
                pass
        assert c.pending == 201
        time.sleep(0.8)
        assert "did not answer CONNECT" in c.stats().last_error
        assert not c.close(0.2)
    finally:
        silent.close()
    lines = Path(c.stats().spool_file).read_text().splitlines()
    assert len(lines) == 201 and json.loads(lines[-1])["seq"] == 200
