"""The one RFC 3339 parser and formatter (jouled.timefmt): exact ns, offsets, case, leap seconds, int64 bounds,
and format → parse is the identity over the whole int64 range; the importer, markers and export use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouled import importers, markers, rows
from jouled.timefmt import (
    INT64_MAX,
    INT64_MIN,
    TimeFormatError,
    format_time_ns,
    format_times_ns,
    parse_rfc3339_ns,
    parse_time_arg_ns,
)

T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T12:00:00.123456789Z", T0 + 123_456_789),
        ("2024-05-01T12:00:00.000000001Z", T0 + 1),
        ("2024-05-01T12:00:00.5Z", T0 + 500_000_000),
        ("2024-05-01T12:00:00.1234567899999Z", T0 + 123_456_789),  # beyond ns: truncated, never rounded up
        ("2024-05-01T14:00:00.123456789+02:00", T0 + 123_456_789),
        ("2024-05-01T07:30:00-04:30", T0),
        ("2024-05-01T12:00:00-00:00", T0),
        ("2024-05-01t12:00:00z", T0),
        ("2024-05-01 12:00:00Z", T0),
        ("  2024-05-01T12:00:00Z\n", T0),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000_000_000),  # a leap day
        ("2016-12-31T23:59:60Z", 1_483_228_800_000_000_000),  # leap second = the next second's first instant
        ("2016-12-31T23:59:60.5Z", 1_483_228_800_500_000_000),
        ("2262-04-11T23:47:16.854775807Z", INT64_MAX),
        ("1677-09-21T00:12:43.145224192Z", INT64_MIN),
    ],
)
def test_parse_exact(text: str, expected_ns: int) -> None:
    assert parse_rfc3339_ns(text) == expected_ns


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2024-05-01T12:00:00", "no offset"),  # RFC 3339 requires one
        ("2024-05-01", "not RFC 3339"),
        ("2024-05-01T12:00Z", "not RFC 3339"),  # seconds are required
        ("2024-05-01T12:00:00.Z", "not RFC 3339"),
        ("2024-05-01T12:00:00+0200", "not RFC 3339"),
        ("2023-02-29T00:00:00Z", "day 29"),
        ("2024-13-01T00:00:00Z", "month 13"),
        ("2024-04-31T00:00:00Z", "day 31"),
        ("2024-05-01T24:00:00Z", "not a time of day"),
        ("2024-05-01T12:60:00Z", "not a time of day"),
        ("2024-05-01T12:00:61Z", "not a time of day"),
        ("2024-05-01T12:00:00+24:00", "offset"),
        ("2262-04-11T23:47:16.854775808Z", "after 2262"),
        ("1677-09-21T00:12:43.145224191Z", "before 1677"),
        ("9999-12-31T23:59:59Z", "after 2262"),
        ("２０２４-05-01T12:00:00Z", "not RFC 3339"),  # ASCII digits only
    ],
)
def test_parse_refuses(text: str, why: str) -> None:
    with pytest.raises(TimeFormatError, match=why):
        parse_rfc3339_ns(text)


def test_naive_utc_only_when_asked() -> None:
    assert parse_rfc3339_ns("2024-05-01T12:00:00.000000007", naive_utc=True) == T0 + 7
    assert parse_time_arg_ns("2024-05-01 12:00:00") == T0
    assert parse_time_arg_ns(str(T0)) == T0 and parse_time_arg_ns("-5") == -5
    with pytest.raises(TimeFormatError):
        parse_time_arg_ns("9" * 30)


@given(st.integers(INT64_MIN, INT64_MAX))
def test_format_then_parse_is_identity(t_ns: int) -> None:
    text = format_time_ns(t_ns)
    assert len(text) == len("2024-05-01T12:00:00.000000000Z") and text.endswith("Z")
    assert parse_rfc3339_ns(text) == t_ns


@given(st.lists(st.integers(INT64_MIN, INT64_MAX), max_size=50))
def test_format_many_is_format_one_by_one(times_ns: list[int]) -> None:
    """The vectorised formatter (numpy's calendar) writes exactly what the integer one does, NaT's int64 included."""
    assert format_times_ns(times_ns) == [format_time_ns(t) for t in times_ns]


def test_format_many_edges() -> None:
    edges = [INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX, 951_782_400 * 10**9]  # 2000-02-29
    assert format_times_ns(edges) == [format_time_ns(t) for t in edges]
    assert format_times_ns([]) == []


@given(
    st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2262, 1, 1)),
    st.integers(0, 999),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
def test_agrees_with_datetime(dt: datetime, extra_ns: int, offset_min: int) -> None:
    """An independent oracle: datetime's own arithmetic (µs) plus the extra ns, at any offset."""
    tz = timezone(timedelta(minutes=offset_min))
    aware = dt.replace(tzinfo=tz)
    text = aware.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}{extra_ns:03d}" + aware.strftime("%z")[:3] + ":" + (
        aware.strftime("%z")[3:]
    )
    expected = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000 + extra_ns
    assert parse_rfc3339_ns(text) == expected
    assert format_time_ns(expected)[:19] == aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_every_user_of_rfc3339_is_ns_exact() -> None:
    """The importer once truncated to µs; markers had their own parser; energy had its own formatter."""
    text = "2024-05-01T12:00:00.123456789Z"
    assert importers.parse_time_ns(text) == T0 + 123_456_789
    assert importers.parse_time_ns("2024-05-01T12:00:00.123456789") == T0 + 123_456_789  # naive = UTC
    assert markers.parse_time_ns(text) == T0 + 123_456_789
    assert rows.format_times_ns is format_times_ns  # the energy rows use the one formatter (its vector form)
    with pytest.raises(ValueError, match="not RFC 3339"):
        importers.parse_time_ns("yesterday")
    with pytest.raises(markers.MarkerError, match="bad_time"):
        markers.parse_time_ns("1969-12-31T23:59:59Z")  # markers are after 1970
