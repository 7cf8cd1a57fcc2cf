"""Fuzz the marker parser, the recorder → store path and the importers (hypothesis; JOULED_FUZZ_EXAMPLES sets the size)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from jouled.store.sqlite import SqliteStore
from tests.reliability.fuzzing import RecorderRig, check_import, check_parse, fuzz_examples, marker_texts, payloads, sample_texts

FUZZ = settings(max_examples=fuzz_examples(), deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def rig() -> Iterator[RecorderRig]:
    with tempfile.TemporaryDirectory() as d:
        r = RecorderRig(Path(d))
        yield r
        r.close()


@pytest.fixture(scope="module")
def import_store() -> Iterator[SqliteStore]:
    with tempfile.TemporaryDirectory() as d:
        s = SqliteStore(Path(d) / "imports.db")
        yield s
        s.close()


@FUZZ
@given(payloads)
def test_parse_marker_only_raises_marker_error(payload: bytes) -> None:
    check_parse(payload)


@FUZZ
@given(payloads)
def test_recorder_to_store_never_wedges(rig: RecorderRig, payload: bytes) -> None:
    rig.check(payload)


@FUZZ
@given(sample_texts())
def test_sample_importer_never_raises(import_store: SqliteStore, text: str) -> None:
    check_import(text, "samples", import_store)


@FUZZ
@given(marker_texts())
def test_marker_importer_never_raises(import_store: SqliteStore, text: str) -> None:
    check_import(text, "markers", import_store)
