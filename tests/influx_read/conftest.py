"""A real InfluxDB 1.x for the reader tests (one per session), a fresh database per test; skipped when absent."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.servers import ServerHandle, influxd_available, start_influxd

_names = itertools.count()


@pytest.fixture(scope="session")
def influxd() -> Iterator[ServerHandle]:
    if not influxd_available():
        pytest.skip("influxd (InfluxDB 1.x) not installed — .ci/system-deps installs it")
    srv = start_influxd()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def influx_db(influxd: ServerHandle) -> str:
    """A new, empty database on the session's server."""
    name = f"jouled_read_{next(_names)}"
    influxd.create_database(name)
    return name
