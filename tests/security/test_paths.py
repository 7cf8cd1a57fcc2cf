"""Run names and host tags never reach a path unescaped: the marker spool and seq files, and `jouled export -o`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jouled.cli import app
from jouled.model import Marker, Sample
from jouled.store.sqlite import SqliteStore, batches_from_samples, sqlite_url
from jouled.trainer.markers import MarkerClient, SeqAllocator, safe_file_name
from tests.brokers import free_port

# NUL-free names an attacker or a careless script could choose
WEIRD = [
    "../../etc/x", "/etc/passwd", "..", ".", "", "a/../../b", "-rf", "~root", "$(touch pwned)", "a\nb", "a\\b",
    "%2e%2e%2fescape", "con", "ü" * 120, "x" * 256, "\ud800-lone-surrogate", " ", "*", "a:b",
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name", WEIRD)
def test_safe_file_name_is_one_plain_component(name: str) -> None:
    n = safe_file_name(name)
    assert "/" not in n and "\0" not in n and n not in ("", ".", "..")
    assert len(n.encode()) <= 200  # leaves room for ".seq"/"-pid-uuid.jsonl" under the 255-byte limit
    assert safe_file_name(name) == n  # stable: the same run always maps to the same seq file


def test_distinct_names_distinct_files() -> None:
    names = [n for n in WEIRD] + ["x" * 255, "x" * 257, "%2E%2E", "%00empty"]
    assert len({safe_file_name(n) for n in names}) == len(set(names))


def test_seq_files_stay_in_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "a" / "spool"
    alloc = SeqAllocator(spool)
    for name in WEIRD:
        assert alloc.reserve(name) == 0
        assert alloc.reserve(name) == 1  # the same file again
    made = _files(tmp_path)
    assert all(p == tmp_path / "a" or p.is_relative_to(spool) for p in made), sorted(made)
    assert {p.parent for p in made if p.is_file()} == {spool / "seq"}
    assert len([p for p in made if p.is_file()]) == len(WEIRD)


def test_marker_client_spool_with_weird_run_and_host(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    before = _files(tmp_path)
    for host in ("..", "~root", "a\\..\\b"):  # a host with "/" is refused as a topic level already
        c = MarkerClient(f"mqtt://127.0.0.1:{free_port()}", host=host, spool_path=spool, connect_timeout_s=0.2)
        for name in ("../../etc/x", "a/../../b", "..", "/abs/run"):
            c.mark("run", "start", name)
        time.sleep(0.1)
        c.close(0.1)
    new = _files(tmp_path) - before
    assert new and all(p.is_relative_to(spool) for p in new), sorted(new)
    assert not (tmp_path.parent / "etc").exists() and not Path("/abs/run").exists()
    jsonl = [p for p in new if p.suffix == ".jsonl"]
    assert jsonl and all(p.parent == spool for p in jsonl)


def test_export_writes_only_where_o_says(tmp_path: Path) -> None:
    db = tmp_path / "store" / "log.db"
    st = SqliteStore(db)
    t0 = time.time_ns()
    run = "../../etc/x"
    st.write_batches(batches_from_samples([Sample(t0 + i * 10**8, "h", "fake", "dev0", 100.0, i * 10.0, {}) for i in range(20)]))
    st.write_markers([Marker(t0, "h", run, "run", "start", 0), Marker(t0 + 10**9, "h", run, "run", "end", 1)])
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.csv"
    before = _files(tmp_path)
    res = CliRunner().invoke(app, ["export", "samples", "--run", run, "--store", sqlite_url(db), "-o", str(out)])
    assert res.exit_code == 0, res.output
    created = _files(tmp_path) - before
    assert created == {out}, sorted(created)
    assert out.read_text().splitlines()[0] == "time,host,source,device,power_w,energy_j"
    # to stdout: no file at all
    before = _files(tmp_path)
    res = CliRunner().invoke(app, ["export", "samples", "--run", run, "--store", sqlite_url(db), "--format", "line-protocol"])
    assert res.exit_code == 0 and "power," in res.output
    assert _files(tmp_path) - before == set()
