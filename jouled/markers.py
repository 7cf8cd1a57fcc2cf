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

``mono_ns`` and ``boot_id`` (optional, additive): the sender's CLOCK_MONOTONIC (``time.monotonic_ns()``) at
``time`` and ``/proc/sys/kernel/random/boot_id``. The daemon of the same host and boot maps ``mono_ns`` onto its
own monotonic-anchored clock (``LocalClock``): the stored time is then immune to NTP steps of the sender's wall
clock, and the sender's ``time`` is kept in attrs as ``client_time_ns``. From another host or boot, or without
``mono_ns``, ``time`` is trusted as it is.

Hostile or broken input is refused before it can reach the store, each refusal a named kind (counted by
the daemon): payloads over MAX_PAYLOAD_BYTES (before parsing), invalid UTF-8 or lone surrogates
(``bad_encoding``), nesting deeper than MAX_DEPTH (``too_deep``, checked on the raw bytes, so the JSON
parser never recurses deeply), integers outside int64 or with more digits than int64 can hold
(``out_of_range``), NaN/Infinity (``not_finite``), over-long strings (``too_long``), too many attrs keys
or unknown fields (``too_many_fields``), attrs over MAX_ATTRS_BYTES (``too_large``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, Protocol, TypeVar

from jouled.model import EVENTS, SCOPES, Marker
from jouled.mqtturl import BrokerAddress as BrokerAddress  # the broker URL's home is jouled.mqtturl: re-exported
from jouled.mqtturl import parse_broker_url as parse_broker_url
from jouled.timefmt import TimeFormatError, parse_rfc3339_ns

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
    "end_before_start",
    "too_large",
    "too_deep",
    "out_of_range",
    "not_finite",
    "bad_encoding",
    "too_long",
    "too_many_fields",
    "unstorable",
]

MAX_PAYLOAD_BYTES = 64 * 1024  # a marker is a few hundred bytes; this bounds the parser's work and memory
MAX_DEPTH = 8  # containers nested (the marker object itself is level 1)
MAX_STR_LEN = 256  # host, run, scope, event, phase, each gpu name
MAX_ARCH_LEN = 4096  # architecture strings (NAS genotypes) are longer than names
MAX_GPUS = 1024
MAX_ATTRS_KEYS = 128
MAX_ATTRS_BYTES = 16 * 1024  # attrs as compact JSON
MAX_UNKNOWN_FIELDS = 32  # fields this version does not know (newer clients may add some)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KNOWN_FIELDS = frozenset(
    {"time", "host", "run", "scope", "event", "epoch", "phase", "arch", "gpus", "seq", "attrs", "sent", "mono_ns", "boot_id"}
)
CLIENT_TIME_ATTR = "client_time_ns"  # attrs key of a mapped marker: the time its sender's wall clock said
_INT64_DIGITS = 19
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# a JSON string (an unterminated one runs to the end, so the scan stays linear on hostile input) or a bracket
_DEPTH_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)

_NS_PER_S = 1_000_000_000


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
        if value > INT64_MAX:
            raise MarkerError("out_of_range", field, "beyond int64 nanoseconds (after 2262)")
        return value
    try:
        ns = parse_rfc3339_ns(value)  # the one ns-exact parser: offsets, t/z, leap seconds (jouled.timefmt)
    except TimeFormatError as e:
        raise MarkerError("bad_time", field, str(e)) from None
    if ns < 0:
        raise MarkerError("bad_time", field, f"{value!r} is before 1970")
    return ns


def _req(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise MarkerError("missing_field", name, "required")
    return obj[name]


def _str(value: Any, name: str, *, allow_empty: bool = False, max_len: int = MAX_STR_LEN) -> str:
    if not isinstance(value, str):
        raise MarkerError("wrong_type", name, f"expected string, got {type(value).__name__}")
    if len(value) > max_len:
        raise MarkerError("too_long", name, f"{len(value)} characters (limit {max_len})")
    if _SURROGATE.search(value):
        raise MarkerError("bad_encoding", name, "contains a lone surrogate (not valid Unicode text)")
    if not allow_empty and not value.strip():
        raise MarkerError("bad_value", name, "empty string")
    return value


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MarkerError("wrong_type", name, f"expected integer, got {type(value).__name__}")
    if value < 0:
        raise MarkerError("bad_value", name, f"must be ≥ 0, got {value}")
    if value > INT64_MAX:
        raise MarkerError("out_of_range", name, "beyond int64")
    return value


def check_json_value(value: Any, field: str | None, *, depth: int = 1) -> None:
    """Refuse what cannot be stored or bounded: deep nesting, non-int64 ints, NaN/inf, surrogates, non-JSON types.

    Iterative, so a deeply nested Python object cannot exhaust the stack either.
    """
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise MarkerError("bad_encoding", field, "contains a lone surrogate (not valid Unicode text)")
        elif v is None or isinstance(v, bool):
            continue
        elif isinstance(v, int):
            if not INT64_MIN <= v <= INT64_MAX:
                raise MarkerError("out_of_range", field, "integer beyond int64")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise MarkerError("not_finite", field, f"{v} is not a finite number")
        elif isinstance(v, dict | list):
            if d > MAX_DEPTH:
                raise MarkerError("too_deep", field, f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(v, dict):
                for k, x in v.items():
                    if not isinstance(k, str):
                        raise MarkerError("wrong_type", field, f"object key {k!r} is not a string")
                    if _SURROGATE.search(k):
                        raise MarkerError("bad_encoding", field, "a key contains a lone surrogate")
                    stack.append((x, d + 1))
            else:
                stack.extend((x, d + 1) for x in v)
        else:
            raise MarkerError("wrong_type", field, f"{type(v).__name__} is not a JSON value")


def json_depth(payload: bytes) -> int:
    """How deep brackets nest in raw JSON, strings skipped: checked before parsing, so json never recurses deeply."""
    depth = deepest = 0
    for b in _DEPTH_TOKEN.findall(payload):
        if b[:1] == b'"':
            continue
        if b in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


@dataclass(frozen=True, slots=True)
class LocalClock:
    """The receiving daemon's time base: its host tag, boot id and monotonic anchor (``jouled.clock.Clock``)."""

    host: str
    boot_id: str | None
    anchor_wall_ns: int
    anchor_mono_ns: int

    def maps(self, m: Marker) -> bool:
        """Whether ``m``'s monotonic reading is ours to trust: same host tag, same boot (so the same CLOCK_MONOTONIC)."""
        return m.mono_ns is not None and self.boot_id is not None and m.boot_id == self.boot_id and m.host == self.host


def to_local_time(m: Marker, local: LocalClock) -> Marker:
    """``m`` with its time taken from its monotonic reading on ``local``'s base (pure); unchanged if not ``maps``.

    The sender's wall time goes to attrs ``client_time_ns``, so a difference (an NTP step, a skewed clock) stays
    visible; ``marker_digest`` reads it back, so a redelivery is recognised whatever the anchor of the daemon.
    """
    if not local.maps(m) or m.mono_ns is None:
        return m
    t = local.anchor_wall_ns + (m.mono_ns - local.anchor_mono_ns)
    if t < 0 or t > INT64_MAX:
        return m  # a monotonic reading no clock of this boot can have given: keep the sender's wall time
    return replace(m, time_ns=t, attrs={**m.attrs, CLIENT_TIME_ATTR: m.time_ns})


def validate_marker(
    obj: Mapping[str, Any],
    *,
    topic_host: str | None = None,
    now_ns: int | None = None,
    max_skew_s: float | None = None,
    local: LocalClock | None = None,
) -> Marker:
    """Validate a decoded marker object (from JSON, CSV, …) into a Marker; raise MarkerError.

    The clock-skew check runs only when both ``now_ns`` and ``max_skew_s`` are given. With ``local``, a marker
    of that host and boot carrying ``mono_ns`` is mapped onto it (``to_local_time``) and its sender's wall clock
    is not judged (an NTP step there does not matter any more).
    """
    if not isinstance(obj, Mapping):
        raise MarkerError("not_object", None, f"expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in KNOWN_FIELDS]
    if len(unknown) > MAX_UNKNOWN_FIELDS:
        raise MarkerError("too_many_fields", None, f"{len(unknown)} unknown fields (limit {MAX_UNKNOWN_FIELDS})")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise MarkerError("wrong_type", None, f"field name {k!r} is not a string")
        name = k if k in KNOWN_FIELDS else None
        if _SURROGATE.search(k):
            raise MarkerError("bad_encoding", None, "a field name contains a lone surrogate")
        check_json_value(v, name, depth=2)
    time_ns = parse_time_ns(_req(obj, "time"))
    host_val = obj.get("host")
    if host_val is None:
        if topic_host is None:
            raise MarkerError("missing_field", "host", "required when the topic does not name the host")
        host = _str(topic_host, "host")
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
    arch = (
        _str(obj["arch"], "arch", allow_empty=True, max_len=MAX_ARCH_LEN) if obj.get("arch") is not None else None
    )
    gpus_val = obj.get("gpus")
    gpus: tuple[str, ...] = ()
    if gpus_val is not None:
        if not isinstance(gpus_val, list) or not all(isinstance(g, str) and g for g in gpus_val):
            raise MarkerError("wrong_type", "gpus", "expected a list of device names such as [\"gpu0\"]")
        if len(gpus_val) > MAX_GPUS:
            raise MarkerError("too_many_fields", "gpus", f"{len(gpus_val)} devices (limit {MAX_GPUS})")
        gpus = tuple(_str(g, "gpus") for g in gpus_val)
    attrs_val = obj.get("attrs")
    attrs: dict[str, Any] = {}
    if attrs_val is not None:
        if not isinstance(attrs_val, dict):
            raise MarkerError("wrong_type", "attrs", f"expected an object, got {type(attrs_val).__name__}")
        if len(attrs_val) > MAX_ATTRS_KEYS:
            raise MarkerError("too_many_fields", "attrs", f"{len(attrs_val)} keys (limit {MAX_ATTRS_KEYS})")
        size = len(json.dumps(attrs_val, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_ATTRS_BYTES:
            raise MarkerError("too_large", "attrs", f"{size} bytes as JSON (limit {MAX_ATTRS_BYTES})")
        attrs = dict(attrs_val)
    mono_ns = _nonneg_int(obj["mono_ns"], "mono_ns") if obj.get("mono_ns") is not None else None
    boot = _str(obj["boot_id"], "boot_id") if obj.get("boot_id") is not None else None
    m = Marker(
        time_ns=time_ns, host=host, run=run, scope=scope, event=event, seq=seq,
        epoch=epoch, phase=phase, arch=arch, gpus=gpus, attrs=attrs, mono_ns=mono_ns, boot_id=boot,
    )
    if local is not None and local.maps(m):
        mapped = to_local_time(m, local)
        if mapped is not m:
            if now_ns is not None and max_skew_s is not None and mapped.time_ns - now_ns > int(max_skew_s * _NS_PER_S):
                raise MarkerError("clock_skew", "mono_ns", "monotonic time is ahead of this host's clock")
            return mapped

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
    return m


def parse_marker(
    payload: bytes, *, topic_host: str | None, now_ns: int, max_skew_s: float, local: LocalClock | None = None
) -> Marker:
    """Decode and validate one MQTT payload; raise MarkerError naming the kind and the field."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MarkerError("too_large", None, f"{len(payload)} bytes (limit {MAX_PAYLOAD_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MarkerError("bad_encoding", None, f"not UTF-8: {e}") from None
    if json_depth(payload) > MAX_DEPTH:
        raise MarkerError("too_deep", None, f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except json.JSONDecodeError as e:
        raise MarkerError("bad_json", None, str(e)) from None
    except MarkerError:  # from the number hooks: out_of_range, not_finite
        raise
    except RecursionError:  # the depth pre-scan should make this unreachable; never let it reach the catch-all
        raise MarkerError("too_deep", None, f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # e.g. an integer the int() conversion refuses
        raise MarkerError("bad_json", None, str(e).splitlines()[0][:200]) from None
    if not isinstance(obj, dict):
        raise MarkerError("not_object", None, f"expected a JSON object, got {type(obj).__name__}")
    return validate_marker(obj, topic_host=topic_host, now_ns=now_ns, max_skew_s=max_skew_s, local=local)


def _json_int(s: str) -> int:
    if len(s.lstrip("-")) > _INT64_DIGITS:  # before int(): 4,300+ digits would raise, millions would be slow
        raise MarkerError("out_of_range", None, f"integer with {len(s)} digits is beyond int64")
    v = int(s)
    if not INT64_MIN <= v <= INT64_MAX:
        raise MarkerError("out_of_range", None, "integer beyond int64")
    return v


def _json_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise MarkerError("not_finite", None, f"{s[:40]} overflows a float")
    return v


def _json_constant(s: str) -> float:
    raise MarkerError("not_finite", None, f"{s} is not a finite number (and not standard JSON)")


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
        d["attrs"] = _finite(m.attrs)
    if m.mono_ns is not None:
        d["mono_ns"] = m.mono_ns
    if m.boot_id is not None:
        d["boot_id"] = m.boot_id
    if sent_ns is not None:
        d["sent"] = sent_ns
    return d


def _finite(value: Any) -> Any:
    """attrs as standard JSON: a NaN/inf value (a diverged loss) becomes the string "nan"/"inf"/"-inf".

    The daemon rejects non-finite numbers (not_finite), and an epoch's end marker must not be lost
    because the loss it carries blew up.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def marker_to_json(m: Marker, *, sent_ns: int | None = None) -> bytes:
    """Compact UTF-8 JSON payload for MQTT (and the client's spool lines)."""
    return json.dumps(marker_to_dict(m, sent_ns=sent_ns), separators=(",", ":"), ensure_ascii=False).encode()


WindowKey = tuple[str, str, int | None, str | None]


def window_key(m: Marker | Tracked) -> WindowKey:
    """What pairs a start with its end: (run, scope, epoch, phase)."""
    if m.scope == "run":
        return (m.run, "run", None, None)
    if m.scope == "epoch":
        return (m.run, "epoch", m.epoch, None)
    return (m.run, "phase", m.epoch, m.phase)


PairProblemKind = Literal["start_while_open", "end_without_start", "end_before_start", "start_without_end", "bad_event"]


class Pairable(Protocol):
    """What pairing reads of a marker (a `Marker`, or the tracker's compact `Tracked`)."""

    @property
    def event(self) -> str: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def seq(self) -> int: ...


P = TypeVar("P", bound=Pairable)


@dataclass(frozen=True, slots=True)
class PairProblem(Generic[P]):
    """A marker that did not pair: ``marker`` is the one this is about, ``other`` the open start it met (if any).

    - ``start_while_open``: a start while the same window was open — the open one (``other``) is abandoned;
    - ``end_without_start``: an end with no open start;
    - ``end_before_start``: an end stamped before its start (``other``) — both are dropped;
    - ``start_without_end``: a start still open when pairing finished (``WindowPairer.finish``);
    - ``bad_event``: neither start nor end.
    """

    kind: PairProblemKind
    marker: P
    other: P | None = None


class WindowPairer(Generic[P]):
    """Start/end pairing by window key, in arrival (seq) order: the one implementation behind the daemon's live
    check of each marker (`MarkerTracker`) and the energy windows read from the log (`energy.windows_from_markers`).

    Pure state: ``push`` returns the (start, end) pair it closed or the problem it found; ``open`` holds the starts
    still waiting, by key. The key is the caller's: ``window_key(m)``, with the host in front where markers of
    several hosts meet.
    """

    def __init__(self) -> None:
        self.open: dict[Hashable, P] = {}

    def push(self, key: Hashable, m: P) -> tuple[P, P] | PairProblem[P] | None:
        if m.event == "start":
            prev = self.open.get(key)
            self.open[key] = m
            return None if prev is None else PairProblem("start_while_open", m, prev)
        if m.event != "end":
            return PairProblem("bad_event", m)
        start = self.open.pop(key, None)
        if start is None:
            return PairProblem("end_without_start", m)
        if m.time_ns < start.time_ns:
            return PairProblem("end_before_start", m, start)
        return (start, m)

    def finish(self) -> list[PairProblem[P]]:
        """The starts still open, as ``start_without_end`` problems, oldest first (the state is left as it was)."""
        return [PairProblem("start_without_end", m) for m in sorted(self.open.values(), key=lambda m: m.time_ns)]


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


@dataclass(frozen=True, slots=True)
class Tracked:
    """What the tracker keeps of a marker: what pairing needs, plus a digest of the whole for dedup (no attrs)."""

    run: str
    scope: str
    epoch: int | None
    phase: str | None
    event: str
    seq: int
    time_ns: int
    digest: bytes  # 8 bytes of BLAKE2b over the whole marker: a redelivery matches, a different marker does not


def marker_digest(m: Marker) -> bytes:
    """A fingerprint of every field (attrs included, keys sorted): equal markers, equal digests.

    As the sender sent it: its wall time (``client_time_ns`` of a mapped marker), without the monotonic reading —
    the mapped time depends on the receiving daemon's anchor, which a restart renews.
    """
    d = marker_to_dict(m)
    d.pop("mono_ns", None)
    d.pop("boot_id", None)
    attrs = d.get("attrs")
    if isinstance(attrs, dict) and isinstance(attrs.get(CLIENT_TIME_ATTR), int):
        d["time"] = attrs[CLIENT_TIME_ATTR]
        rest = {k: v for k, v in attrs.items() if k != CLIENT_TIME_ATTR}
        if rest:
            d["attrs"] = rest
        else:
            del d["attrs"]
    return hashlib.blake2b(json.dumps(d, sort_keys=True, default=str).encode(), digest_size=8).digest()


_CANON = {s: s for s in (*SCOPES, *EVENTS)}
MAX_CANON_PHASES = 1024  # phase names shared between tracked markers (a hostile client cannot grow this further)


# Bytes one tracked marker and one run cost in memory (CPython 3.11, tracemalloc: ~235 B per marker — the record,
# its digest, the dict slot; its strings are shared — and ~700 B per run). Rounded up.
TRACKED_BYTES = 260
RUN_BYTES = 800
DEFAULT_BUDGET_BYTES = 32 * 1024 * 1024  # ~130,000 markers: months of epochs for the runs a host does at once


@dataclass(slots=True)
class _RunState:
    name: str  # the one copy of the run's name every tracked marker of it points to
    seqs: dict[int, Tracked]
    bytes: int


class MarkerTracker:
    """Dedup by (run, seq) and start/end pairing, as a pure state machine (no clock, no I/O).

    Memory is bounded in bytes: a tracked marker keeps only what pairing needs and a digest (never its attrs),
    and when the estimate passes ``budget_bytes`` (or more than ``max_runs`` runs are known) whole runs are
    forgotten, least recently seen first (a redelivery of a forgotten run is stored again, a late end of one
    is kept with an ``end_without_start`` warning). After a daemon restart, feed the stored markers to ``seed``
    so redeliveries and pairs are recognised.
    """

    def __init__(self, max_runs: int = 1000, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.max_runs = max_runs
        self.budget_bytes = budget_bytes
        self._seen: OrderedDict[str, _RunState] = OrderedDict()
        self._pairer: WindowPairer[Tracked] = WindowPairer()
        self._phases: dict[str, str] = {}
        self.bytes = 0  # the estimate of what the tracked state holds
        self.evicted_runs = 0
        self.accepted = 0
        self.redeliveries = 0
        self.problems: Counter[str] = Counter()

    def _run_state(self, run: str) -> _RunState:
        st = self._seen.get(run)
        if st is None:
            st = self._seen[run] = _RunState(run, {}, RUN_BYTES + len(run))
            self.bytes += st.bytes
            self._evict(keep=run)
        else:
            self._seen.move_to_end(run)
        return st

    def _evict(self, keep: str) -> None:
        """Forget least recently seen runs (never ``keep``) until within max_runs and the byte budget."""
        while len(self._seen) > 1 and (len(self._seen) > self.max_runs or self.bytes > self.budget_bytes):
            old_run = next(iter(self._seen))
            if old_run == keep:
                self._seen.move_to_end(old_run)
                continue
            self.bytes -= self._seen.pop(old_run).bytes
            self.evicted_runs += 1
            open_ = self._pairer.open
            for key in [k for k in open_ if k[0] == old_run]:  # type: ignore[index]  # keys are window_key()s
                del open_[key]

    def _track(self, st: _RunState, m: Marker) -> Tracked:
        """The compact record, its strings shared with the run and the other markers (one copy each)."""
        phase = m.phase
        if phase is not None:
            phase = self._phases.get(phase, phase)
            if len(self._phases) < MAX_CANON_PHASES:
                self._phases.setdefault(phase, phase)
        return Tracked(st.name, _CANON.get(m.scope, m.scope), m.epoch, phase, _CANON.get(m.event, m.event), m.seq,
                       m.time_ns, marker_digest(m))

    def _remember(self, st: _RunState, t: Tracked) -> None:
        if t.seq not in st.seqs:
            st.bytes += TRACKED_BYTES
            self.bytes += TRACKED_BYTES
        st.seqs[t.seq] = t
        if self.bytes > self.budget_bytes:
            self._evict(keep=t.run)

    def _pair(self, t: Tracked) -> MarkerError | None:
        got = self._pairer.push(window_key(t), t)
        if not isinstance(got, PairProblem):
            return None
        key = window_key(t)
        if got.kind == "start_while_open":
            seq = got.other.seq if got.other is not None else "?"
            return MarkerError("start_while_open", "event", f"{key} started again (seq {seq}) without an end")
        if got.kind == "end_before_start":
            seq = got.other.seq if got.other is not None else "?"
            return MarkerError("end_before_start", "time", f"end of {key} is stamped before its start (seq {seq})")
        return MarkerError("end_without_start", "event", f"end of {key} without a start")

    def seed(self, m: Marker) -> None:
        """Record a marker already stored (no counting, no problems)."""
        st = self._run_state(m.run)
        t = self._track(st, m)
        self._remember(st, t)
        self._pair(t)

    def check(self, m: Marker) -> TrackResult:
        """What ``accept`` would say, without remembering anything: ``accepted`` means new (pairing not judged yet).

        The daemon checks, stores, and only then ``ack``s: a marker whose write failed is not remembered,
        so its redelivery is stored rather than dropped as a duplicate.
        """
        st = self._seen.get(m.run)
        prev = None if st is None else st.seqs.get(m.seq)
        if prev is None:
            return TrackResult("accepted")
        if prev.digest == marker_digest(m):
            return TrackResult("redelivery")
        return TrackResult(
            "rejected",
            MarkerError("duplicate_seq", "seq", f"run {m.run!r} seq {m.seq} already used by a different marker"),
        )

    def ack(self, m: Marker) -> MarkerError | None:
        """Remember a marker that is now stored; returns its pairing warning, if any."""
        st = self._run_state(m.run)
        t = self._track(st, m)
        prev = st.seqs.get(m.seq)
        if prev is not None and prev.digest == t.digest:  # acknowledged twice: nothing new
            return None
        self._remember(st, t)
        self.accepted += 1
        problem = self._pair(t)
        if problem is not None:
            self.problems[problem.kind] += 1
        return problem

    def accept(self, m: Marker) -> TrackResult:
        """check + ack in one step (callers that store nothing, or store synchronously)."""
        res = self.check(m)
        if res.status == "redelivery":
            self._run_state(m.run)
            self.redeliveries += 1
            return res
        if res.status == "rejected":
            self.problems["duplicate_seq"] += 1
            return res
        return TrackResult("accepted", self.ack(m))

    def open_windows(self) -> list[Tracked]:
        """Start markers still waiting for their end, oldest first."""
        return [p.marker for p in self._pairer.finish()]

