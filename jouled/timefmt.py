"""Time as text: the one RFC 3339 parser and formatter, nanosecond-exact (integer arithmetic, never a float).

Every place jouled reads or writes a wall-clock time as text uses these: markers on MQTT, the CSV/line-protocol
importers, ``export --from/--to``, carbon traces, energy rows and CSV export.

What the parser accepts (RFC 3339 §5.6)::

    2024-05-01T12:00:00Z   2024-05-01t12:00:00.123456789z   2024-05-01 14:00:00.5+02:00   ...-00:00

- ``T``/``t`` or a space between date and time; ``Z``/``z`` or a numeric offset ``±HH:MM`` (``-00:00`` is UTC).
- Any number of fraction digits: the first nine are kept exactly, the rest are dropped (truncated toward the
  earlier instant, never rounded, so a time never moves into the next nanosecond).
- No offset is an error (RFC 3339 requires one), unless the caller says a naive time means UTC
  (``naive_utc=True``: the importers and ``export`` document that).
- Leap seconds: ``:60`` is accepted (in any minute: the leap-second table is not consulted) and read as the
  first instant of the next second, the way a POSIX clock reads it: ``2016-12-31T23:59:60.5Z`` is
  ``2017-01-01T00:00:00.5Z``. POSIX time — and so jouled's integer ns — has no leap seconds, so a leap second
  and the second after it share their nanoseconds; the formatter never writes ``:60``.
- The result must fit int64 nanoseconds (1677-09-21T00:12:43.145224192Z … 2262-04-11T23:47:16.854775807Z),
  what the store holds; outside that the parser raises.

The formatter writes UTC with ``Z`` and all nine fraction digits (``format_time_ns``), so format → parse is
the identity over the whole int64 range.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NS_PER_S = 1_000_000_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,  # \d would otherwise match any Unicode digit, and int() reads them
)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class TimeFormatError(ValueError):
    """Text that is not an RFC 3339 time jouled can hold; the message says what is wrong."""


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm: exact integers)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The inverse of _days_from_civil: (year, month, day)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def parse_rfc3339_ns(text: str, *, naive_utc: bool = False) -> int:
    """An RFC 3339 time → integer ns since 1970-01-01T00:00:00Z (see the module doc for what is accepted)."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise TimeFormatError(f"{text!r} is not RFC 3339 (e.g. 2024-05-01T12:00:00.5Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, off = m.group(7), m.group(8)
    if off is None and not naive_utc:
        raise TimeFormatError(f"{text!r} has no offset — add Z (UTC) or ±HH:MM, e.g. 2024-05-01T12:00:00Z")
    if not 1 <= month <= 12:
        raise TimeFormatError(f"{text!r}: month {month} is not 1–12")
    last_day = 29 if month == 2 and _is_leap_year(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= last_day:
        raise TimeFormatError(f"{text!r}: day {day} is not in {year:04d}-{month:02d} (1–{last_day})")
    if hour > 23 or minute > 59 or second > 60:
        raise TimeFormatError(f"{text!r}: {hour:02d}:{minute:02d}:{second:02d} is not a time of day")
    offset_s = 0
    if off is not None and off not in ("Z", "z"):
        off_h, off_m = int(off[1:3]), int(off[4:6])
        if off_h > 23 or off_m > 59:
            raise TimeFormatError(f"{text!r}: offset {off} is not ±00:00–±23:59")
        offset_s = (off_h * 3600 + off_m * 60) * (-1 if off[0] == "-" else 1)
    # second 60 (a leap second) is simply 60 s after the minute began: the first instant of the next second
    whole_s = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset_s
    ns = whole_s * NS_PER_S + (int(frac[:9].ljust(9, "0")) if frac else 0)
    if ns > INT64_MAX:
        raise TimeFormatError(f"{text!r} is after 2262-04-11T23:47:16.854775807Z (beyond int64 nanoseconds)")
    if ns < INT64_MIN:
        raise TimeFormatError(f"{text!r} is before 1677-09-21T00:12:43.145224192Z (beyond int64 nanoseconds)")
    return ns


def format_time_ns(t_ns: int) -> str:
    """Integer ns since the epoch → RFC 3339 UTC with all nine fraction digits (exact: no float)."""
    sec, ns = divmod(int(t_ns), NS_PER_S)
    days, day_s = divmod(sec, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(day_s, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{ns:09d}Z"


def format_times_ns(times_ns: Sequence[int]) -> list[str]:
    """`format_time_ns` of many times at once: numpy's calendar, in C (the same strings over the int64 range, a
    property test checks it), for the tens of thousands of window edges of one query. numpy is imported here, not
    at the top, so the modules that only parse times stay light."""
    import numpy as np

    t = np.asarray(times_ns, dtype=np.int64)
    if t.size == 0:
        return []
    out: list[str] = np.datetime_as_string(t.astype("datetime64[ns]"), unit="ns", timezone="UTC").tolist()
    for i in np.flatnonzero(t == INT64_MIN).tolist():  # numpy's NaT: its one int64 that is not a time
        out[i] = format_time_ns(INT64_MIN)
    return out


def parse_time_arg_ns(text: str, *, naive_utc: bool = True) -> int:
    """A time given on a command line or in an imported row: integer ns since the epoch, or RFC 3339."""
    v = text.strip()
    if _INTEGER.fullmatch(v):
        if len(v.lstrip("+-")) > 19:  # refuse a 5,000-digit string before converting it
            raise TimeFormatError(f"{text!r} is beyond int64 nanoseconds")
        n = int(v)
        if not INT64_MIN <= n <= INT64_MAX:
            raise TimeFormatError(f"{text!r} is beyond int64 nanoseconds")
        return n
    return parse_rfc3339_ns(v, naive_utc=naive_utc)
