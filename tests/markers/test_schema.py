"""Marker payload parsing/validation, JSON round trip, topics, broker URLs and the dedup/pairing tracker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouled.markers import (
    TOPIC_WILDCARD,
    MarkerError,
    MarkerTracker,
    host_from_topic,
    marker_to_json,
    parse_broker_url,
    parse_marker,
    parse_time_ns,
    topic_for,
)
from jouled.model import Marker

NOW_NS = 1_717_000_000_000_000_000  # 2024-05-29T16:26:40Z


def good(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "time": NOW_NS - 1_000_000, "host": "h1", "run": "r1", "scope": "phase", "event": "start",
        "epoch": 2, "phase": "eval", "arch": "resnet18", "gpus": ["gpu0", "gpu1"], "seq": 5, "attrs": {"lr": 0.1},
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def parse(obj: Any, topic_host: str | None = "h1", max_skew_s: float = 300.0) -> Marker:
    payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_marker(payload, topic_host=topic_host, now_ns=NOW_NS, max_skew_s=max_skew_s)


def test_parse_good_marker_all_fields() -> None:
    m = parse(good())
    assert m == Marker(
        time_ns=NOW_NS - 1_000_000, host="h1", run="r1", scope="phase", event="start", seq=5, epoch=2,
        phase="eval", arch="resnet18", gpus=("gpu0", "gpu1"), attrs={"lr": 0.1},
    )


def test_host_taken_from_topic_when_absent() -> None:
    assert parse(good(host=...), topic_host="node7").host == "node7"


@pytest.mark.parametrize(
    ("payload", "kind", "field"),
    [
        (b"{not json", "bad_json", None),
        (b"\xff\xfe", "bad_encoding", None),  # not UTF-8 (issue 9: a named kind)
        (b"[1, 2]", "not_object", None),
        (b'"a string"', "not_object", None),
        (good(time=...), "missing_field", "time"),
        (good(run=...), "missing_field", "run"),
        (good(scope=...), "missing_field", "scope"),
        (good(event=...), "missing_field", "event"),
        (good(seq=...), "missing_field", "seq"),
        (good(epoch=...), "missing_field", "epoch"),
        (good(scope="epoch", epoch=None), "missing_field", "epoch"),
        (good(phase=...), "missing_field", "phase"),
        (good(time=1.5e18), "wrong_type", "time"),
        (good(time=True), "wrong_type", "time"),
        (good(time="yesterday"), "bad_time", "time"),
        (good(time="2024-05-29T16:26:40"), "bad_time", "time"),  # RFC 3339 requires an offset
        (good(time="2024-02-30T00:00:00Z"), "bad_time", "time"),
        (good(time=-5), "bad_time", "time"),
        (good(run=7), "wrong_type", "run"),
        (good(run="  "), "bad_value", "run"),
        (good(seq="5"), "wrong_type", "seq"),
        (good(seq=True), "wrong_type", "seq"),
        (good(seq=-1), "bad_value", "seq"),
        (good(epoch=1.0), "wrong_type", "epoch"),
        (good(epoch=-3), "bad_value", "epoch"),
        (good(phase=3), "wrong_type", "phase"),
        (good(arch=["x"]), "wrong_type", "arch"),
        (good(gpus="gpu0"), "wrong_type", "gpus"),
        (good(gpus=["gpu0", 1]), "wrong_type", "gpus"),
        (good(attrs=[1]), "wrong_type", "attrs"),
        (good(scope="batch"), "unknown_scope", "scope"),
        (good(scope=1), "wrong_type", "scope"),
        (good(event="pause"), "unknown_event", "event"),
        (good(host="h2"), "host_mismatch", "host"),
        (good(time=NOW_NS + 301 * 10**9), "clock_skew", "time"),
        (good(time=NOW_NS, sent=NOW_NS - 400 * 10**9), "clock_skew", "sent"),
        (good(time=NOW_NS + 400 * 10**9, sent=NOW_NS), "clock_skew", "time"),
    ],
)
def test_every_malformed_kind_names_the_field(payload: Any, kind: str, field: str | None) -> None:
    with pytest.raises(MarkerError) as ei:
        parse(payload)
    assert (ei.value.kind, ei.value.field) == (kind, field)
    if field:
        assert f"'{field}'" in str(ei.value)


def test_missing_host_without_topic_host() -> None:
    with pytest.raises(MarkerError) as ei:
        parse(good(host=...), topic_host=None)
    assert (ei.value.kind, ei.value.field) == ("missing_field", "host")


def test_late_marker_is_accepted_early_time_within_skew_too() -> None:
    # a marker spooled during an outage arrives hours late: that is not skew when "sent" is recent
    late = parse(good(time=NOW_NS - 3 * 3600 * 10**9, sent=NOW_NS - 10**9))
    assert late.time_ns == NOW_NS - 3 * 3600 * 10**9
    assert parse(good(time=NOW_NS - 3 * 3600 * 10**9)).seq == 5  # no "sent": only the future is rejected
    assert parse(good(time=NOW_NS + 299 * 10**9)).time_ns == NOW_NS + 299 * 10**9


def test_unknown_fields_are_ignored_and_optional_fields_default() -> None:
    m = parse({"time": NOW_NS, "run": "r", "scope": "run", "event": "end", "seq": 0, "future_field": 1})
    assert (m.epoch, m.phase, m.arch, m.gpus, m.attrs, m.host) == (None, None, None, (), {}, "h1")


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("2024-05-29T16:26:40Z", 1_717_000_000_000_000_000),
        ("2024-05-29T16:26:40.5Z", 1_717_000_000_500_000_000),
        ("2024-05-29T16:26:40.123456789Z", 1_717_000_000_123_456_789),
        ("2024-05-29T18:26:40.000000001+02:00", 1_717_000_000_000_000_001),
        ("2024-05-29t16:26:40z", 1_717_000_000_000_000_000),
        ("2024-05-29 12:26:40-04:00", 1_717_000_000_000_000_000),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339_to_ns(text: str, expected_ns: int) -> None:
    assert parse_time_ns(text) == expected_ns


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)), st.integers(0, 999))
def test_rfc3339_agrees_with_datetime(dt: datetime, extra_ns: int) -> None:
    aware = dt.replace(tzinfo=UTC)
    text = aware.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}{extra_ns:03d}Z"
    whole = int((aware.replace(microsecond=0) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    assert parse_time_ns(text) == whole * 10**9 + dt.microsecond * 1000 + extra_ns


def test_json_round_trip_emits_integer_ns() -> None:
    m = parse(good(time="2024-05-29T16:26:39.999Z"))
    payload = marker_to_json(m)
    assert json.loads(payload)["time"] == NOW_NS - 1_000_000
    assert parse(payload) == m
    sent = json.loads(marker_to_json(m, sent_ns=NOW_NS))
    assert sent["sent"] == NOW_NS
    minimal = Marker(time_ns=1, host="h", run="r", scope="run", event="start", seq=0)
    assert json.loads(marker_to_json(minimal)) == {
        "time": 1, "host": "h", "run": "r", "scope": "run", "event": "start", "seq": 0,
    }


def test_topics() -> None:
    assert topic_for("node-3") == "jouled/v1/node-3/markers"
    assert TOPIC_WILDCARD == "jouled/v1/+/markers"
    assert host_from_topic("jouled/v1/node-3/markers") == "node-3"
    assert host_from_topic("jouled/v2/node-3/markers") is None
    assert host_from_topic("jouled/v1/node-3/samples") is None
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError):
            topic_for(bad)


def test_broker_urls() -> None:
    a = parse_broker_url("mqtt://127.0.0.1")
    assert (a.host, a.port, a.tls, a.username) == ("127.0.0.1", 1883, False, None)
    b = parse_broker_url("mqtts://alice:p%40ss@broker.example:9883")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.example", 9883, True, "alice", "p@ss")
    assert parse_broker_url("mqtts://broker").port == 8883
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/topic", "127.0.0.1:1883"):
        with pytest.raises(ValueError, match="expected mqtt://"):
            parse_broker_url(bad)


def mk(seq: int, scope: str = "epoch", event: str = "start", epoch: int | None = 0, run: str = "r1", **kw: Any) -> Marker:
    return Marker(time_ns=seq, host="h", run=run, scope=scope, event=event, seq=seq, epoch=epoch, **kw)


def test_tracker_dedups_redelivery_and_rejects_conflicting_seq() -> None:
    t = MarkerTracker()
    first = mk(0)
    assert t.accept(first).status == "accepted"
    assert t.accept(mk(0)).status == "redelivery"  # identical content: a QoS-1 redelivery
    assert t.redeliveries == 1
    clash = t.accept(mk(0, epoch=1))
    assert clash.status == "rejected"
    assert clash.problem is not None and clash.problem.kind == "duplicate_seq"
    assert t.accept(mk(0, run="r2")).status == "accepted"  # seq is per run
    assert t.accepted == 2 and t.problems["duplicate_seq"] == 1


def test_tracker_pairs_windows() -> None:
    t = MarkerTracker()
    r = t.accept(mk(0, event="end"))
    assert r.status == "accepted" and r.problem is not None and r.problem.kind == "end_without_start"
    assert t.accept(mk(1, scope="run", epoch=None)).problem is None
    assert t.accept(mk(2, epoch=1)).problem is None
    assert t.accept(mk(3, scope="phase", epoch=1, phase="train")).problem is None
    # a phase end pairs with its own (epoch, phase), not with the epoch
    assert t.accept(mk(4, scope="phase", event="end", epoch=1, phase="eval")).problem.kind == "end_without_start"  # type: ignore[union-attr]
    assert t.accept(mk(5, scope="phase", event="end", epoch=1, phase="train")).problem is None
    again = t.accept(mk(6, epoch=1))
    assert again.problem is not None and again.problem.kind == "start_while_open"
    assert [m.seq for m in t.open_windows()] == [1, 6]
    assert t.accept(mk(7, event="end", epoch=1)).problem is None
    assert t.problems == {"end_without_start": 2, "start_while_open": 1}


def test_tracker_seed_then_redelivery_and_bounded_memory() -> None:
    t = MarkerTracker(max_runs=2)
    t.seed(mk(0, run="a"))
    assert t.accept(mk(0, run="a")).status == "redelivery"
    assert t.accept(mk(1, event="end", run="a")).problem is None  # the seeded start pairs with it
    t.accept(mk(0, run="b"))
    t.accept(mk(0, run="c"))  # evicts run "a", the least recently seen
    assert t.accept(mk(0, run="a")).status == "accepted"
