"""Threads named at the OS level: what `top -H` and /proc/<pid>/task/*/comm show for the daemon's threads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from jouled.daemon.storethread import StoreThread
from jouled.errors import SourceUnavailable
from jouled.osthread import COMM_MAX, name_os_thread
from jouled.sampler import Sampler

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names through /proc (Linux)")


def _comm() -> str:
    """The calling thread's name as the kernel holds it."""
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def _comm_in_thread(fn: object) -> str:
    got: list[str] = []

    def body() -> None:
        fn()  # type: ignore[operator]
        got.append(_comm())

    t = threading.Thread(target=body, name="jouled-a-rather-long-thread-name")
    t.start()
    t.join()
    return got[0]


def test_a_thread_takes_its_python_name_cut_to_what_the_kernel_keeps() -> None:
    assert _comm_in_thread(name_os_thread) == "jouled-a-rather-long-thread-name"[:COMM_MAX]
    assert _comm_in_thread(lambda: name_os_thread("jouled-x")) == "jouled-x"


def test_no_proc_leaves_the_thread_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert name_os_thread("x") is False


class _Probe:
    """A source whose open, run in the sampling thread, notes that thread's OS name and gives up for good."""

    name = "probe"
    kind = "measured"
    blocking = False
    open_retry_s = None

    def __init__(self) -> None:
        self.comm = ""

    def open(self) -> None:
        self.comm = _comm()
        raise SourceUnavailable("probe: nothing to sample")

    def read(self) -> list[object]:
        return []

    def close(self) -> None:
        pass


def test_the_sampling_and_store_threads_name_themselves() -> None:
    probe = _Probe()
    sampler = Sampler([(probe, 0.1)])  # type: ignore[list-item]
    sampler.start()
    sampler.threads[0].join(10)  # the probe gives up for good, so the thread ends by itself
    sampler.stop()
    assert probe.comm == "jouled-sources"
    st = StoreThread()
    st.start()
    try:
        assert st.submit(_comm).result(timeout=10) == "jouled-store"
    finally:
        st.stop(10)
