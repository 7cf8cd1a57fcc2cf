"""External broker restarts (real Mosquitto, real `jouled run`, MarkerClient at 100 markers/s): with persistence
nothing is lost across two 2 s restarts and the daemon says the session is persistent; without, it says not."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.daemon.recorder import RECONNECT_MAX_S, RECONNECT_MIN_S, session_verdict
from tests.brokers import mosquitto_available
from tests.faults.procs import broker_restarts

needs_mosquitto = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def test_session_verdict() -> None:
    assert session_verdict("unknown", reconnect=False, broker_was_down=False, present=True) == "unknown"
    assert session_verdict("unknown", reconnect=True, broker_was_down=True, present=True) == "persistent"
    assert session_verdict("unknown", reconnect=True, broker_was_down=False, present=True) == "unknown"  # a blip
    assert session_verdict("persistent", reconnect=True, broker_was_down=True, present=False) == "not persistent"
    assert session_verdict("embedded", reconnect=True, broker_was_down=True, present=False) == "embedded"
    assert RECONNECT_MIN_S <= 0.2 and RECONNECT_MAX_S <= 2.0


@needs_mosquitto
def test_two_restarts_of_a_persistent_broker_lose_no_marker(tmp_path: Path) -> None:
    r = broker_restarts(tmp_path, persistence=True, restarts=2, outage_s=2.0, rate_hz=100.0)
    assert r["sent"] > 600 and r["client_delivered"], r
    assert r["lost"] == 0, r
    assert r["session"] == "persistent" and r["session_present"] is True and r["outages_seen"] == 2, r


@needs_mosquitto
def test_a_broker_without_persistence_is_named(tmp_path: Path) -> None:
    r = broker_restarts(tmp_path, persistence=False, restarts=1, outage_s=2.0, rate_hz=100.0)
    assert r["session"] == "not persistent" and r["session_present"] is False, r  # markers lost: not asserted
