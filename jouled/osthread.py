"""Give the running thread its Python name at the OS level too, where `top -H`, `ps -L`, `pidstat -t` and
/proc/<pid>/task/*/comm show it (Python before 3.14 leaves every thread named after the process)."""

from __future__ import annotations

import sys
import threading

COMM_MAX = 15  # the kernel keeps 15 bytes of a thread's name (TASK_COMM_LEN 16, with its NUL)


def name_os_thread(name: str | None = None) -> bool:
    """Name the calling thread (default: its `threading` name, cut to 15 bytes); False where the OS did not take it.

    Linux only, through /proc/self/task/<tid>/comm (no ctypes, nothing loaded): a name is a convenience, so any
    failure (another OS, a read-only /proc in a sandbox) leaves the thread as it was."""
    if not sys.platform.startswith("linux"):
        return False
    text = (name if name is not None else threading.current_thread().name).encode("utf-8", "replace")[:COMM_MAX]
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as f:
            f.write(text)
    except OSError:
        return False
    return True
