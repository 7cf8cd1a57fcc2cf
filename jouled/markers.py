"""Marker payloads on MQTT: topic names, parse/validate, JSON encoding and the dedup/window state machine (pure).

Used by the daemon's subscriber (parse_marker + MarkerTracker) and by the training-side client
(marker_to_json, topic_for). Nothing here does I/O or reads a clock: callers pass ``now_ns``.

Wire format (DESIGN.md, data model): topic ``jouled/v1/<host>/markers``, a JSON object, QoS 1::

    {"time": 1700000000123456789, "host": "h", "run": "r1", "scope": "epoch", "event": "start",
     "epoch": 3, "phase": "train", "arch": "...", "gpus": ["gpu0"], "seq": 7, "attrs": {...},
     "sent": 1700000000123999999}

``time`` is accepted as an RFC 3339 string (with an offset, any number of fraction digits) or an
integer of ns since the Unix epoch, UTC; it is always emitted as integer ns. ``sent`` (optional,
integer ns) is when the client handed the marker to the broker: a marker spooled during a broker
outage arrives late by design, so the clock-skew check uses ``sent`` when present and otherwise only
rejects times in the future. Unknown fields are ignored, so newer clients can add fields.
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from jouled.model import EVENTS, SCOPES, Marker

TOPIC_PREFIX = "jouled/v1"
TOPIC_WILDCARD = f"{TOPIC_PREFIX}/+/markers"
QOS = 1

ErrorKind = Literal[
    "bad_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "bad_time",
    "unknown_scope",
    "unknown_event",
    "host_mismatch",
    "clock_skew",
    "duplicate_seq",
    "end_without_start",
    "start_while_open",
]

_NS_PER_S = 1_000_000_000
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:\d{2})$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MarkerError(ValueError):
    """A marker that cannot be accepted: ``kind`` says why, ``field`` names the offending field (or None)."""

    def __init__(self, kind: ErrorKind, field: str | None, message: str) -> None:
        self.kind: ErrorKind = kind
        self.field = field
        self.message = message
        where = f" field '{field}'" if field else ""
        super().__init__(f"marker{where}: {kind}: {message}")


def topic_for(host: str) -> str:
    """The topic a host's markers are published on."""
    if not host or any(c in host for c in "/+#\x00"):
        raise ValueError(f"host {host!r} cannot be an MQTT topic level (empty, or contains / + # NUL)")
    return f"{TOPIC_PREFIX}/{host}/markers"


def host_from_topic(topic: str) -> str | None:
    """The host level of ``jouled/v1/<host>/markers``, or None for any other topic."""
    parts = topic.split("/")
    if len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_PREFIX and parts[3] == "markers" and parts[2]:
        return parts[2]
    return None


def parse_time_ns(value: object, field: str = "time") -> int:
    """RFC 3339 string or integer ns since the epoch (UTC) → integer ns."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MarkerError("wrong_type", field, f"expected RFC 3339 string or integer ns, got {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise MarkerError("bad_time", field, f"negative time {value}")
        return value
    m = _RFC3339.match(value.strip())
    if m is None:
        raise MarkerError("bad_time", field, f"{value!r} is not RFC 3339 (e.g. 2024-05-01T12:00:00.5Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, off = m.group(7), m.group(8)
    if off in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if off[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    try:
        # a leap second (:60) is folded onto the next second, as most clocks do
        leap = second == 60
        dt = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=tz)
    except ValueError as e:
        raise MarkerError("bad_time", field, f"{value!r}: {e}") from None
    delta = dt - _EPOCH
    whole_s = delta.days * 86400 + delta.seconds + (1 if leap else 0)
    ns = whole_s * _NS_PER_S + (int(frac.ljust(9, "0")) if frac else 0)
    if ns < 0:
        raise MarkerError("bad_time", field, f"{value!r} is before 1970")
    return ns


def _req(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise MarkerError("missing_field", name, "required")
    return obj[name]


def _str(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise MarkerError("wrong_type", name, f"expected string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise MarkerError("bad_value", name, "empty string")
    return value


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MarkerError("wrong_type", name, f"expected integer, got {type(value).__name__}")
    if value < 0:
        raise MarkerError("bad_value", name, f"must be ≥ 0, got {value}")
    return value


def validate_marker(
    obj: Mapping[str, Any],
    *,
    topic_host: str | None = None,
    now_ns: int | None = None,
    max_skew_s: float | None = None,
) -> Marker:
    """Validate a decoded marker object (from JSON, CSV, …) into a Marker; raise MarkerError.

    The clock-skew check runs only when both ``now_ns`` and ``max_skew_s`` are given.
    """
    if not isinstance(obj, Mapping):
        raise MarkerError("not_object", None, f"expected a JSON object, got {type(obj).__name__}")
    time_ns = parse_time_ns(_req(obj, "time"))
    host_val = obj.get("host")
    if host_val is None:
        if topic_host is None:
            raise MarkerError("missing_field", "host", "required when the topic does not name the host")
        host = topic_host
    else:
        host = _str(host_val, "host")
        if topic_host is not None and host != topic_host:
            raise MarkerError("host_mismatch", "host", f"payload says {host!r}, topic says {topic_host!r}")
    run = _str(_req(obj, "run"), "run")
    scope = _str(_req(obj, "scope"), "scope")
    if scope not in SCOPES:
        raise MarkerError("unknown_scope", "scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
    event = _str(_req(obj, "event"), "event")
    if event not in EVENTS:
        raise MarkerError("unknown_event", "event", f"{event!r} is not one of {', '.join(EVENTS)}")
    seq = _nonneg_int(_req(obj, "seq"), "seq")

    epoch: int | None = None
    if scope in ("epoch", "phase"):
        epoch = _nonneg_int(_req(obj, "epoch"), "epoch")
    elif obj.get("epoch") is not None:
        epoch = _nonneg_int(obj["epoch"], "epoch")
    phase: str | None = None
    if scope == "phase":
        phase = _str(_req(obj, "phase"), "phase")
    elif obj.get("phase") is not None:
        phase = _str(obj["phase"], "phase")
    arch = _str(obj["arch"], "arch", allow_empty=True) if obj.get("arch") is not None else None
    gpus_val = obj.get("gpus")
    gpus: tuple[str, ...] = ()
    if gpus_val is not None:
        if not isinstance(gpus_val, list) or not all(isinstance(g, str) and g for g in gpus_val):
            raise MarkerError("wrong_type", "gpus", "expected a list of device names such as [\"gpu0\"]")
        gpus = tuple(gpus_val)
    attrs_val = obj.get("attrs")
    attrs: dict[str, Any] = {}
    if attrs_val is not None:
        if not isinstance(attrs_val, dict):
            raise MarkerError("wrong_type", "attrs", f"expected an object, got {type(attrs_val).__name__}")
        attrs = dict(attrs_val)

    if now_ns is not None and max_skew_s is not None:
        max_skew_ns = int(max_skew_s * _NS_PER_S)
        sent_val = obj.get("sent")
        if sent_val is not None:
            sent_ns = parse_time_ns(sent_val, "sent")
            if abs(sent_ns - now_ns) > max_skew_ns:
                raise MarkerError(
                    "clock_skew", "sent",
                    f"sender clock is {(sent_ns - now_ns) / _NS_PER_S:+.1f} s off ours (limit {max_skew_s:g} s)",
                )
            if time_ns - sent_ns > max_skew_ns:
                raise MarkerError("clock_skew", "time", "marker time is after the time it was sent")
        elif time_ns - now_ns > max_skew_ns:
            raise MarkerError(
                "clock_skew", "time",
                f"{(time_ns - now_ns) / _NS_PER_S:.1f} s in the future (limit {max_skew_s:g} s)",
            )
    return Marker(
        time_ns=time_ns, host=host, run=run, scope=scope, event=event, seq=seq,
        epoch=epoch, phase=phase, arch=arch, gpus=gpus, attrs=attrs,
    )


def parse_marker(payload: bytes, *, topic_host: str | None, now_ns: int, max_skew_s: float) -> Marker:
    """Decode and validate one MQTT payload; raise MarkerError naming the kind and the field."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MarkerError("bad_json", None, str(e)) from None
    if not isinstance(obj, dict):
        raise MarkerError("not_object", None, f"expected a JSON object, got {type(obj).__name__}")
    return validate_marker(obj, topic_host=topic_host, now_ns=now_ns, max_skew_s=max_skew_s)


def marker_to_dict(m: Marker, *, sent_ns: int | None = None) -> dict[str, Any]:
    """The wire object: integer ns time, optional fields only when set."""
    d: dict[str, Any] = {
        "time": m.time_ns, "host": m.host, "run": m.run, "scope": m.scope, "event": m.event, "seq": m.seq,
    }
    if m.epoch is not None:
        d["epoch"] = m.epoch
    if m.phase is not None:
        d["phase"] = m.phase
    if m.arch is not None:
        d["arch"] = m.arch
    if m.gpus:
        d["gpus"] = list(m.gpus)
    if m.attrs:
        d["attrs"] = m.attrs
    if sent_ns is not None:
        d["sent"] = sent_ns
    return d


def marker_to_json(m: Marker, *, sent_ns: int | None = None) -> bytes:
    """Compact UTF-8 JSON payload for MQTT (and the client's spool lines)."""
    return json.dumps(marker_to_dict(m, sent_ns=sent_ns), separators=(",", ":"), ensure_ascii=False).encode()


WindowKey = tuple[str, str, int | None, str | None]


def window_key(m: Marker) -> WindowKey:
    """What pairs a start with its end: (run, scope, epoch, phase)."""
    if m.scope == "run":
        return (m.run, "run", None, None)
    if m.scope == "epoch":
        return (m.run, "epoch", m.epoch, None)
    return (m.run, "phase", m.epoch, m.phase)


@dataclass(frozen=True, slots=True)
class TrackResult:
    """What the tracker made of one marker.

    ``status``: ``accepted`` (new: store it), ``redelivery`` (same (run, seq) and identical content:
    a QoS-1 redelivery or a spool replay; drop it) or ``rejected`` (same (run, seq), different content;
    drop it and report ``problem``). An accepted marker may still carry a ``problem``
    (``end_without_start``, ``start_while_open``): a warning, the marker is kept.
    """

    status: Literal["accepted", "redelivery", "rejected"]
    problem: MarkerError | None = None


class MarkerTracker:
    """Dedup by (run, seq) and start/end pairing, as a pure state machine (no clock, no I/O).

    Memory is bounded: at most ``max_runs`` runs are remembered (least recently seen forgotten first).
    After a daemon restart, feed the stored markers to ``seed`` so redeliveries and pairs are recognised.
    """

    def __init__(self, max_runs: int = 1000) -> None:
        self.max_runs = max_runs
        self._seen: OrderedDict[str, dict[int, Marker]] = OrderedDict()
        self._open: dict[WindowKey, Marker] = {}
        self.accepted = 0
        self.redeliveries = 0
        self.problems: Counter[str] = Counter()

    def _run_state(self, run: str) -> dict[int, Marker]:
        seqs = self._seen.get(run)
        if seqs is None:
            seqs = self._seen[run] = {}
            while len(self._seen) > self.max_runs:
                old_run, _ = self._seen.popitem(last=False)
                for key in [k for k in self._open if k[0] == old_run]:
                    del self._open[key]
        else:
            self._seen.move_to_end(run)
        return seqs

    def _pair(self, m: Marker) -> MarkerError | None:
        key = window_key(m)
        if m.event == "start":
            prev = self._open.get(key)
            self._open[key] = m
            if prev is not None:
                return MarkerError("start_while_open", "event", f"{key} started again (seq {prev.seq}) without an end")
            return None
        if self._open.pop(key, None) is None:
            return MarkerError("end_without_start", "event", f"end of {key} without a start")
        return None

    def seed(self, m: Marker) -> None:
        """Record a marker already stored (no counting, no problems)."""
        self._run_state(m.run)[m.seq] = m
        self._pair(m)

    def accept(self, m: Marker) -> TrackResult:
        seqs = self._run_state(m.run)
        prev = seqs.get(m.seq)
        if prev is not None:
            if prev == m:
                self.redeliveries += 1
                return TrackResult("redelivery")
            self.problems["duplicate_seq"] += 1
            return TrackResult(
                "rejected",
                MarkerError("duplicate_seq", "seq", f"run {m.run!r} seq {m.seq} already used by a different marker"),
            )
        seqs[m.seq] = m
        self.accepted += 1
        problem = self._pair(m)
        if problem is not None:
            self.problems[problem.kind] += 1
        return TrackResult("accepted", problem)

    def open_windows(self) -> list[Marker]:
        """Start markers still waiting for their end, oldest first."""
        return sorted(self._open.values(), key=lambda m: m.time_ns)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where an MQTT broker is, from a ``mqtt://`` or ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:pass]@]host[:port]`` (default port 1883) or ``mqtts://…`` (TLS, default 8883).

    Raise ValueError with a one-line message naming the URL and the expected form.
    """
    from urllib.parse import unquote, urlsplit

    form = "expected mqtt://host[:port] or mqtts://host[:port]"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"broker URL {url!r}: {e} — {form}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r}: unknown scheme {parts.scheme!r} — {form}")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r}: no host — {form}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"broker URL {url!r}: unexpected path or query — {form}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
