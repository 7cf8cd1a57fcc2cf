"""The daemon's live status on a Unix socket beside its status file: `jouled status` connects, the daemon answers.

A connection gets the daemon's `status()` as one JSON document, built at that moment on the event loop (it reads
only memory), and is closed; the client sends nothing. Nobody asking costs nothing: the loop waits on the listening
socket with the rest of its file descriptors. The status file stays, rewritten every `[daemon] health_interval_s`,
for readers that cannot reach the socket (another mount namespace, a hung loop) and for the last status after exit.
Why: a status file rewritten every second was about a tenth of an idle daemon's CPU (a JSON dump, a write and a
rename; `bench/observer.py`), and `jouled status` read figures up to a second old; the socket answers with the
daemon's state at the moment it is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from jouled.statusfile import SOCKET_MODE, SOCKET_PATH_MAX_BYTES, socket_path_fits, status_socket_path

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.daemon")

ANSWER_TIMEOUT_S = 5.0  # a client that does not read its answer is dropped after this


async def serve_status(daemon: Daemon) -> None:
    """Serve `daemon.status()` on the socket beside its status file until cancelled; the socket is removed at the end.

    Never stops the daemon: a socket that cannot be made (a path too long for AF_UNIX, a read-only folder) is one
    log line, and `jouled status` reads the file instead."""
    path = status_socket_path(daemon.status_path)
    if not socket_path_fits(path):
        log.info("status socket %s: the path is longer than a Unix socket allows (%d bytes); `jouled status` reads "
                 "the status file instead — set [daemon] status_path to a shorter path for live status", path,
                 SOCKET_PATH_MAX_BYTES)
        return
    try:
        server = await _listen(path, daemon)
    except OSError as e:
        log.warning("status socket %s: cannot listen (%s); `jouled status` reads the status file instead", path,
                    e.strerror or e)
        return

    try:
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(OSError):
            if path.is_socket():
                path.unlink()


async def _listen(path: Path, daemon: Daemon) -> asyncio.AbstractServer:
    from jouled.secrets import make_private_dir

    make_private_dir(path.parent)
    # a socket left by a daemon that was killed: this daemon holds the log's lock, so no live daemon owns it
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(daemon.status(), default=str).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), ANSWER_TIMEOUT_S)
        except (TimeoutError, OSError):  # the client went away: nothing to tell it
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), ANSWER_TIMEOUT_S)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        # owner and group may connect (the group that may read the status file, 0640, may ask for it live); a
        # connect needs write permission on the socket
        os.chmod(path, SOCKET_MODE)
        sock.listen(8)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return await asyncio.start_unix_server(answer, sock=sock)
