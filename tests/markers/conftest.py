"""Pytest fixtures for the marker tests: real Mosquitto and amqtt brokers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.brokers import BrokerHandle, mosquitto_available, start_amqtt, start_mosquitto


@pytest.fixture
def mosquitto() -> Iterator[BrokerHandle]:
    """A fresh Mosquitto (no persistence) for one test; ``.kill()``/``.start()`` to take it down and back."""
    if not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install -y mosquitto")
    b = start_mosquitto()
    yield b
    b.close()


@pytest.fixture
def mosquitto_persistent() -> Iterator[BrokerHandle]:
    """Mosquitto that keeps sessions and queued messages across an orderly ``stop()``/``start()``."""
    if not mosquitto_available():
        pytest.skip("mosquitto not installed: apt-get install -y mosquitto")
    b = start_mosquitto(persistence=True)
    yield b
    b.close()


@pytest.fixture
def amqtt_broker() -> Iterator[BrokerHandle]:
    """The amqtt broker (the daemon's embedded one) in its own process."""
    b = start_amqtt()
    yield b
    b.close()
