"""The recorder's pending-marker queue: stored-then-acknowledged, redeliveries while pending, bounded memory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from jouled.config import Config
from jouled.daemon import recorder as recorder_mod
from jouled.daemon.recorder import MarkerRecorder
from jouled.daemon.service import Daemon
from jouled.model import Marker
from tests.reliability.helpers import PageCappedStore, marker

TOPIC = "jouled/v1/testhost/markers"


def _rig(tmp_path: Path) -> tuple[MarkerRecorder, PageCappedStore]:
    cfg = Config()
    cfg.daemon.host = "testhost"
    store = PageCappedStore(tmp_path / "log.db")
    daemon = Daemon(config=cfg, sources=[], store=store, status_path=tmp_path / "status.json")
    # fill the markers table's first page, so every new marker needs a page the cap will refuse
    store.write_markers([Marker(time_ns=1, host="testhost", run="warm", scope="run", event="start", seq=0,
                                attrs={"pad": "x" * 3000})])
    return MarkerRecorder(daemon), store


def _payload(seq: int, event: str = "start", **kw: object) -> bytes:
    return json.dumps(marker(seq, event, attrs={"pad": "x" * 3000}, **kw)).encode()  # a fresh page per marker


def test_pending_markers_are_not_acknowledged_and_redeliveries_are_recognised(tmp_path: Path) -> None:
    rec, store = _rig(tmp_path)
    store.max_pages = store._conn().execute("PRAGMA page_count").fetchone()[0]

    async def go() -> None:
        first = _payload(0)
        assert await rec.handle(TOPIC, first) is None  # the store is full: held, not stored
        assert rec.stats.pending == 1 and rec.stats.store_errors == 1
        assert rec.tracker.check(rec._pending[("r1", 0)][0]).status == "accepted"  # not remembered as stored
        assert await rec.handle(TOPIC, first) is None  # a QoS-1 redelivery while pending: a duplicate, not a loss
        assert rec.stats.duplicates == 1 and rec.stats.pending == 1
        assert await rec.handle(TOPIC, _payload(0, epoch=7)) is None  # same seq, other content: refused
        assert rec.stats.rejected == {"duplicate_seq": 1}
        assert await rec.handle(TOPIC, _payload(1, "end")) is None
        assert rec.stats.pending == 2 and rec.daemon.store_health.write_errors == 1  # no write per message while failing
        assert "database or disk is full" in rec.daemon.store_health.last_error
        store.max_pages = None
        stored = await rec.flush_pending()
        assert [m.seq for m in stored] == [0, 1]
        assert rec.stats.pending == 0 and rec.stats.stored == 2
        assert not rec.stats.warnings  # paired in order: start, then end
        assert await rec.handle(TOPIC, first) is None  # now a redelivery of a stored marker
        assert rec.stats.duplicates == 2

    asyncio.run(go())
    assert [m.seq for m in store.read_markers("r1")] == [0, 1]


def test_pending_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_mod, "MAX_PENDING_MARKERS", 3)
    rec, store = _rig(tmp_path)
    store.max_pages = store._conn().execute("PRAGMA page_count").fetchone()[0]

    async def go() -> None:
        for i in range(5):
            await rec.handle(TOPIC, _payload(i, "start", epoch=i))
        assert rec.stats.pending == 3 and rec.stats.dropped == 2
        store.max_pages = None
        await rec.flush_pending()

    asyncio.run(go())
    assert [m.seq for m in store.read_markers("r1")] == [2, 3, 4]  # the oldest went first, and it is counted
