"""One bad record or message never stops the log: store transactions always end, the recorder rejects and counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jouled.clock import CLOCK
from jouled.markers import MarkerError, parse_marker
from jouled.model import Allocation, CarbonPoint, Marker
from jouled.store.sqlite import ChunkBatch, MarkerRowError, SeriesKey, SqliteStore
from tests.brokers import free_port
from tests.daemon.fakes import ScriptedSource
from tests.daemon.harness import make_config, start_daemon
from tests.reliability.helpers import marker, publish, wait_for

# the single-message triggers of issue 9: each wedged the store for good
TRIGGERS: dict[str, dict[str, Any]] = {
    "surrogate_run": {"run": "r\ud800"},
    "surrogate_phase": {"scope": "phase", "phase": "p\ud800"},
    "seq_2_63": {"seq": 9223372036854775808},
    "epoch_2_64": {"epoch": 18446744073709551616},
}


def _m(seq: int, **kw: Any) -> Marker:
    base: dict[str, Any] = dict(time_ns=CLOCK.now_ns(), host="h", run="r1", scope="epoch", event="start", seq=seq, epoch=0)
    base.update(kw)
    return Marker(**base)


def _batch(n: int = 10) -> ChunkBatch:
    t = np.arange(n, dtype=np.int64) * 1000 + CLOCK.now_ns()
    return ChunkBatch(SeriesKey("h", "src", "dev0"), t, np.full(n, 100.0), np.arange(n, dtype=np.float64))


@pytest.mark.parametrize("name", list(TRIGGERS))
def test_store_keeps_good_markers_of_a_batch_with_an_unstorable_one(tmp_path: Path, name: str) -> None:
    st = SqliteStore(tmp_path / "log.db")
    bad = _m(**{"seq": 1, **TRIGGERS[name]})
    with pytest.raises(MarkerRowError) as ei:
        st.write_markers([_m(0), bad, _m(2)])
    assert ei.value.stored == 2
    assert [b for b, _ in ei.value.bad] == [bad]
    assert f"seq {bad.seq}" in str(ei.value)
    conn = st._conn()
    assert not conn.in_transaction  # nothing left open: later writes work
    assert st.write_batches([_batch()]) == 10
    assert st.write_markers([_m(3)]) == 1
    assert [m.seq for m in st.read_markers("r1")] == [0, 2, 3]


def test_carbon_and_allocation_writes_roll_back_and_leave_the_store_writable(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "log.db")
    now = CLOCK.now_ns()
    with pytest.raises(UnicodeEncodeError):
        st.write_carbon([CarbonPoint(now, "DE", "p", 300.0), CarbonPoint(now, "D\ud800", "p", 1.0)])
    with pytest.raises(OverflowError):
        st.write_allocations([Allocation(now, "s", 2**64, 1, 1.0, 300.0)])
    assert not st._conn().in_transaction
    assert st.read_carbon("DE") == []  # one transaction: the good point of the failed write is not half-written
    assert st.write_carbon([CarbonPoint(now, "DE", "p", 300.0)]) == 1
    assert st.write_allocations([Allocation(now, "s", 1, 1, 1.0, 300.0)]) == 1
    assert st.write_batches([_batch()]) == 10


def test_a_failure_mid_batch_rolls_back_the_whole_chunk_write(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "log.db")
    good = _batch()
    t = np.arange(3, dtype=np.int64) + CLOCK.now_ns()
    broken = ChunkBatch(SeriesKey("h", "src", "dev1"), t, np.ones(3), np.ones(3), {"a": np.ones(3), "b": np.ones(2)})
    with pytest.raises(ValueError):
        st.write_batches([good, broken])  # the first chunk was inserted before the second failed
    assert st.count_samples() == 0 and st.series() == []
    assert st.write_batches([good]) == 10
    assert st.count_samples() == 10


def _payload(**overrides: Any) -> bytes:
    m = marker(99)
    m.update(overrides)
    return json.dumps(m).encode()


# payload → the kind it must be rejected as (a named, counted kind — never the catch-all)
BAD_PAYLOADS: list[tuple[bytes, str]] = [
    (_payload(run="r\ud800"), "bad_encoding"),
    (_payload(scope="phase", phase="p\ud800"), "bad_encoding"),
    (_payload(seq=9223372036854775808), "out_of_range"),
    (_payload(epoch=18446744073709551616), "out_of_range"),
    (_payload(attrs={"k": 2**70}), "out_of_range"),
    (b'{"time": 1, "run": "r", "scope": "run", "event": "start", "seq": '
     + b"9" * 5000 + b"}", "out_of_range"),  # over 4,300 digits: json's int() would raise ValueError
    (b'{"time": 1, "run": "r", "scope": "run", "event": "start", "seq": 1, "attrs": {"x": ' + b"[" * 5000
     + b"]" * 5000 + b"}}", "too_deep"),  # json.loads would raise RecursionError
    (b'{"time": 1, "run": "r", "scope": "run", "event": "start", "seq": 1, "attrs": {"x": NaN}}', "not_finite"),
    (b'{"time": 1, "run": "r", "scope": "run", "event": "start", "seq": 1, "attrs": {"x": 1e999}}', "not_finite"),
    (b'{"time": 1, "run": "r\xff", "scope": "run", "event": "start", "seq": 1}', "bad_encoding"),
    (_payload(run="r" * 300), "too_long"),
    (_payload(arch="a" * 5000), "too_long"),
    (_payload(attrs={"pad": "x" * 70_000}), "too_large"),  # the payload itself is over 64 KiB
    (_payload(attrs={"pad": "x" * 20_000}), "too_large"),  # attrs over 16 KiB
    (_payload(attrs={f"k{i}": i for i in range(200)}), "too_many_fields"),
    (json.dumps({**marker(99), **{f"x{i}": 1 for i in range(40)}}).encode(), "too_many_fields"),
    (_payload(time="9999-12-31T23:59:59Z"), "bad_time"),  # beyond int64 ns
]


@pytest.mark.parametrize(("payload", "kind"), BAD_PAYLOADS, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD_PAYLOADS)])
def test_parse_marker_rejects_as_a_named_kind(payload: bytes, kind: str) -> None:
    with pytest.raises(MarkerError) as ei:
        parse_marker(payload, topic_host="testhost", now_ns=CLOCK.now_ns(), max_skew_s=1e12)
    assert ei.value.kind == kind


def test_bad_messages_never_stop_the_daemon_log(tmp_path: Path) -> None:
    """Through the real path: broker → recorder → real store; after every bad message markers and samples still land."""
    port = free_port()
    d = start_daemon(make_config(tmp_path, "", embedded_port=port), [ScriptedSource(devices=2)])
    rec = d.daemon.recorder
    try:
        wait_for(lambda: d.daemon.store_health.written > 0)
        sent = 0
        for i, (payload, _kind) in enumerate(BAD_PAYLOADS):
            before = d.daemon.store_health.written
            publish(port, [payload, marker(2 * i, "start", epoch=i), marker(2 * i + 1, "end", epoch=i)])
            sent += 3
            wait_for(lambda: rec.stats.received == sent, what=f"payload {i} handled")  # noqa: B023
            wait_for(lambda: rec.stats.stored == 2 * (i + 1), what=f"valid markers after bad payload {i}")  # noqa: B023
            wait_for(lambda: d.daemon.store_health.written > before, what=f"samples after payload {i}")  # noqa: B023
        status = d.daemon.status()
    finally:
        d.stop()
    expected: dict[str, int] = {}
    for _, kind in BAD_PAYLOADS:
        expected[kind] = expected.get(kind, 0) + 1
    assert status["markers"]["rejected"] == expected
    assert status["markers"]["failed"] == 0  # nothing reached the catch-all "marker handling failed"
    assert status["store"]["write_errors"] == 0
    assert [m.seq for m in d.daemon.store.read_markers("r1")] == list(range(2 * len(BAD_PAYLOADS)))
    assert not d.daemon.store._conn().in_transaction


def test_client_encodes_a_diverged_loss_so_the_daemon_keeps_the_marker() -> None:
    from jouled.markers import marker_to_json

    m = _m(1, host="testhost", event="end", attrs={"loss": float("nan"), "grad": [float("inf"), 1.0]})
    got = parse_marker(marker_to_json(m), topic_host="testhost", now_ns=CLOCK.now_ns(), max_skew_s=300.0)
    assert got.attrs == {"loss": "nan", "grad": ["inf", 1.0]}
