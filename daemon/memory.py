"""Keep a months-long daemon's resident memory flat: fewer glibc malloc arenas, and freed heap handed back to the OS.

CPython frees into glibc's heap, which keeps what it got: with a sampling thread per source, glibc gives each thread
its own arena (up to 8 per core), and their half-empty pages add up over days as slow RSS growth that is not a leak
of ours. Two arenas are enough for a handful of threads that mostly wait; ``malloc_trim`` after housekeeping returns
the free pages. Both are no-ops where the C library is not glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("jouled.daemon")

M_ARENA_MAX = -8  # glibc <malloc.h>
ARENAS = 2

_libc: ctypes.CDLL | None = None
_tried = False


def _glibc() -> ctypes.CDLL | None:
    global _libc, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                _libc = lib
        except OSError:
            _libc = None
    return _libc


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before the sampling threads start). True when it took effect."""
    lib = _glibc()
    return bool(lib is not None and lib.mallopt(M_ARENA_MAX, n) == 1)


def trim() -> bool:
    """Hand free heap pages back to the OS. True when memory was released."""
    lib = _glibc()
    return bool(lib is not None and lib.malloc_trim(0) == 1)
