"""Hypothesis strategies and per-case checks shared by the fuzz tests and bench/fuzz_markers.py.

Each ``check_*`` runs one fuzzed input through the real code and raises AssertionError (or lets an
unexpected exception out) when the input crashed a component or left the store unable to write.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from jouled.clock import CLOCK
from jouled.config import Config
from jouled.daemon.recorder import MarkerRecorder
from jouled.daemon.service import Daemon
from jouled.importers import Parsed, parse_markers, parse_samples
from jouled.markers import MarkerError, parse_marker
from jouled.store.sqlite import ChunkBatch, MarkerRowError, SeriesKey, SqliteStore

TOPIC = "jouled/v1/fuzzhost/markers"
FIELDS = ["time", "host", "run", "scope", "event", "epoch", "phase", "arch", "gpus", "seq", "attrs", "sent"]


def fuzz_examples(default: int = 300) -> int:
    """CI runs a few hundred cases per target; JOULED_FUZZ_EXAMPLES=10000 (nightly) runs the full size."""
    return int(os.environ.get("JOULED_FUZZ_EXAMPLES", str(default)))


# -- strategies ----------------------------------------------------------------------------------

nasty_ints = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 18446744073709551616, 9223372036854775808, 0, -1]),
    st.integers(min_value=1, max_value=5000).map(lambda n: int("9" * min(n, 4000))),  # huge (json can still write it)
)
nasty_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -0.0, 1e308])
)
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(lambda s: "r" + s),
    st.sampled_from(["", " ", "r\ud800", "\x00", "run", "epoch", "phase", "start", "end", "fuzzhost", "a" * 300]),
    st.integers(min_value=200, max_value=6000).map(lambda n: "x" * n),
)
scalars = st.one_of(st.none(), st.booleans(), nasty_ints, nasty_floats, nasty_text)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)), max_leaves=20
)


def _deep(depth: int) -> Any:
    v: Any = 1
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


field_values = st.one_of(
    scalars, json_values, st.integers(min_value=0, max_value=60).map(_deep),
    st.sampled_from(["run", "epoch", "phase"]), st.sampled_from(["start", "end"]),
    st.integers(min_value=0, max_value=2**63 - 1), st.just(CLOCK.now_ns()),
)


@st.composite
def marker_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly-plausible marker objects with one or more fields replaced by hostile values."""
    obj: dict[str, Any] = {
        "time": CLOCK.now_ns(), "host": "fuzzhost", "run": draw(st.sampled_from(["r1", "r2"])),
        "scope": draw(st.sampled_from(["run", "epoch", "phase"])), "event": draw(st.sampled_from(["start", "end"])),
        "seq": draw(st.integers(0, 50)), "epoch": draw(st.integers(0, 5)), "phase": "train",
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        obj[name] = draw(field_values)
    extra = draw(st.dictionaries(nasty_text, json_values, max_size=3))
    for k, v in extra.items():
        obj.setdefault(k, v)
    return obj


def encode(obj: Any, mode: int) -> bytes:
    """JSON in a few spellings: ASCII escapes (lone surrogates as \\udXXX), raw UTF-8 (surrogatepass), NaN literals."""
    if mode == 0:
        return json.dumps(obj).encode()
    if mode == 1:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


deep_payloads = st.integers(min_value=1, max_value=100_000).map(
    lambda n: b'{"time":1,"run":"r","scope":"run","event":"start","seq":1,"attrs":{"x":' + b"[" * n + b"]" * n + b"}}"
)
huge_int_payloads = st.integers(min_value=20, max_value=200_000).map(
    lambda n: b'{"time":1,"run":"r","scope":"run","event":"start","seq":' + b"7" * n + b"}"
)
payloads = st.one_of(
    st.binary(max_size=512),
    st.tuples(marker_objects(), st.integers(0, 2)).map(lambda t: encode(*t)),
    deep_payloads,
    huge_int_payloads,
)

csv_cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "nan", "inf", "-1", "1e999", "9" * 30, "2024-05-01T00:00:00Z", "9999-12-31T23:59:59Z",
                     "epoch", "run", "phase", "start", "end", "train", "gpu0 gpu1", '"', "\r", "\x00"]),
    st.integers(-(2**70), 2**70).map(str),
)


@st.composite
def sample_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        header = draw(st.sampled_from(["time,host,source,device,power_w,energy_j", "time,source,device,power_w", "time,x"]))
        n = header.count(",") + 1
        rows = draw(st.lists(st.lists(csv_cells, min_size=n - 1, max_size=n + 1), max_size=6))
        return header + "\n" + "\n".join(",".join(c.replace("\n", " ") for c in r) for r in rows)
    lines = draw(st.lists(st.one_of(
        st.text(max_size=60),
        st.tuples(csv_cells, csv_cells, csv_cells, csv_cells).map(
            lambda t: f"power,source={t[0]},device={t[1]} power_w={t[2]} {t[3]}".replace("\n", " ")),
    ), max_size=6))
    return "\n".join(lines)


@st.composite
def marker_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        header = draw(st.sampled_from(["time,host,run,scope,event,epoch,phase,arch,gpus", "time,run,scope,event,epoch"]))
        n = header.count(",") + 1
        rows = draw(st.lists(st.lists(csv_cells, min_size=n - 1, max_size=n + 1), max_size=6))
        return header + "\n" + "\n".join(",".join(c.replace("\n", " ") for c in r) for r in rows)
    lines = draw(st.lists(st.one_of(
        st.text(max_size=60),
        st.tuples(csv_cells, csv_cells, csv_cells, csv_cells, csv_cells).map(
            lambda t: f"marker,run={t[0]},scope={t[1]},event={t[2]} epoch={t[3]}i {t[4]}".replace("\n", " ")),
    ), max_size=6))
    return "\n".join(lines)


# -- targets -------------------------------------------------------------------------------------


def check_parse(payload: bytes) -> str:
    """parse_marker raises only MarkerError; whatever it accepts the store can hold. Returns 'ok' or the kind."""
    try:
        parse_marker(payload, topic_host="fuzzhost", now_ns=CLOCK.now_ns(), max_skew_s=300.0)
    except MarkerError as e:
        return e.kind
    return "ok"


class RecorderRig:
    """A real MarkerRecorder wired to a real daemon object and SqliteStore (no broker: handle() is the entry)."""

    def __init__(self, folder: Path) -> None:
        cfg = Config()
        cfg.daemon.host = "fuzzhost"
        self.store = SqliteStore(folder / "fuzz.db")
        self.daemon = Daemon(config=cfg, sources=[], store=self.store, status_path=folder / "status.json")
        self.rec = MarkerRecorder(self.daemon)
        self.loop = asyncio.new_event_loop()
        self.valid_seq = 0
        self.t_ns = CLOCK.now_ns()

    def close(self) -> None:
        self.loop.close()
        self.store.close()

    def check(self, payload: bytes) -> None:
        """One fuzzed message, then a valid marker and a sample batch must still be stored."""
        stats = self.rec.stats
        before = (stats.received, sum(stats.rejected.values()), stats.stored, stats.duplicates, stats.pending)
        self.loop.run_until_complete(self.rec.handle(TOPIC, payload))
        after = (stats.received, sum(stats.rejected.values()), stats.stored, stats.duplicates, stats.pending)
        assert after[0] == before[0] + 1
        # every message is accounted for: rejected (by kind), stored, a duplicate — nothing vanishes
        assert sum(a - b for a, b in zip(after[1:], before[1:], strict=True)) == 1, (before, after, stats.as_dict())
        assert stats.failed == 0 and stats.store_errors == 0, stats.as_dict()
        self.valid_seq += 1
        good = {"time": CLOCK.now_ns(), "host": "fuzzhost", "run": "control", "scope": "run", "event": "start",
                "seq": self.valid_seq}
        m = self.loop.run_until_complete(self.rec.handle(TOPIC, json.dumps(good).encode()))
        assert m is not None and m.seq == self.valid_seq, f"valid marker not stored after {payload[:200]!r}: {stats.as_dict()}"
        self.t_ns += 1000
        t = np.arange(5, dtype=np.int64) + self.t_ns
        n = self.store.write_batches([ChunkBatch(SeriesKey("fuzzhost", "fuzz", "d0"), t, np.ones(5), np.ones(5))])
        assert n == 5


def check_import(text: str, kind: str, store: SqliteStore) -> int:
    """The importer returns rows and row errors (never raises); the rows it returns can be stored. Returns #errors."""
    parsed: Parsed[Any] = (
        parse_samples(text, default_host="h") if kind == "samples" else parse_markers(text, default_host="h")
    )
    if kind == "samples":
        store.write_samples(parsed.items)
    else:
        try:
            store.write_markers(parsed.items)
        except MarkerRowError as e:
            raise AssertionError(f"importer accepted markers the store cannot hold: {e}") from None
    return len(parsed.errors)
