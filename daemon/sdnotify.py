"""systemd notify protocol (READY, WATCHDOG, STOPPING, STATUS) over $NOTIFY_SOCKET; a no-op outside systemd."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send one sd_notify datagram. Returns False when not run by systemd (no NOTIFY_SOCKET)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(addr)
            s.sendall(state.encode())
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd asked for (WATCHDOG_USEC), the recommended ping period."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
