"""daemon/memory.py: the glibc calls that keep RSS flat answer (glibc here) and never raise."""

from __future__ import annotations

import platform

from jouled.daemon import memory


def test_arena_cap_and_trim_work_on_glibc() -> None:
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert memory.limit_arenas() is on_glibc
    blob = [bytearray(4096) for _ in range(10_000)]  # 40 MB freed below: trim has pages to give back
    del blob
    assert isinstance(memory.trim(), bool)
