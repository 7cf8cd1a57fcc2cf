"""Where the daemon's status file lives (a runtime dir, not the store's filesystem) and how `jouled status` finds it.

The status must stay writable when the store's disk is full — that is when it matters most — so it lives in a
runtime directory: ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=jouled``), else ``$XDG_RUNTIME_DIR/jouled``,
else ``/run/jouled`` for root, else the state dir (``$XDG_STATE_HOME/jouled``). One file per log, named after it
(``<store stem>-<hash of its path>.status.json``), so two daemons on two logs never share one.

The daemon also keeps a copy beside the log (``<store>.status.json``, where it always was) while that disk takes
it. `jouled status` may run in another environment than the daemon (a user's shell vs the service), so it looks in
every place a daemon could have written and reads the freshest file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUNTIME_SUBDIR = "jouled"


def _state_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / RUNTIME_SUBDIR


def runtime_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Every folder a daemon could keep its status in (this environment's own first; /run/jouled is the service's)."""
    env = os.environ if environ is None else environ
    out = [runtime_dir(env)]
    if env.get("RUNTIME_DIRECTORY"):
        out.append(Path(env["RUNTIME_DIRECTORY"].split(":")[0]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / RUNTIME_SUBDIR)
    out += [Path("/run") / RUNTIME_SUBDIR, _state_dir(env)]
    return list(dict.fromkeys(out))


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder this environment's daemon writes its status to."""
    env = os.environ if environ is None else environ
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / RUNTIME_SUBDIR
    if os.geteuid() == 0:
        return Path("/run") / RUNTIME_SUBDIR
    return _state_dir(env)


def status_file_name(store_path: Path) -> str:
    """``<stem>-<8 hex of the log's absolute path>.status.json``: one per log, recognisable by its name."""
    digest = hashlib.sha1(str(Path(store_path).expanduser().resolve()).encode()).hexdigest()[:8]
    return f"{Path(store_path).stem}-{digest}.status.json"


def default_status_path(store_path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where the daemon logging to ``store_path`` writes its status (no [daemon] status_path set)."""
    return runtime_dir(environ) / status_file_name(store_path)


def beside_store_path(store_path: Path) -> Path:
    """The copy beside the log (where the status always was): ``<store>.status.json``."""
    return Path(store_path).with_suffix(".status.json")


def status_candidates(store_path: Path, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Every file a daemon on ``store_path`` may have written, this environment's own first."""
    name = status_file_name(store_path)
    first = default_status_path(store_path, environ)
    rest = [d / name for d in runtime_dirs(environ)]
    return list(dict.fromkeys([first, *rest, beside_store_path(store_path)]))


def freshest(paths: list[Path]) -> Path | None:
    """The most recently written of the files that exist (None: none does)."""
    best: tuple[int, Path] | None = None
    for p in paths:
        try:
            mtime = p.stat().st_mtime_ns
        except OSError:
            continue
        if best is None or mtime > best[0]:
            best = (mtime, p)
    return None if best is None else best[1]


# -- the live status: a Unix socket beside the status file (daemon/statussock.py serves it) -------------------------

SOCKET_MODE = 0o660  # owner and group may connect: the group that may read the status file may ask for it live
SOCKET_PATH_MAX_BYTES = 107  # Linux's sun_path holds 108 bytes, the terminating NUL included
LIVE_TIMEOUT_S = 2.0


def status_socket_path(status_path: Path) -> Path:
    """The live-status socket beside a status file: ``<name>.status.json`` → ``<name>.status.sock``."""
    name = Path(status_path).name
    return Path(status_path).with_name((name[:-5] if name.endswith(".json") else name) + ".sock")


def socket_path_fits(path: Path) -> bool:
    """Whether ``path`` is short enough to bind or connect a Unix socket to."""
    return len(os.fsencode(path)) <= SOCKET_PATH_MAX_BYTES


def read_live(status_path: Path, timeout_s: float = LIVE_TIMEOUT_S) -> tuple[dict[str, Any] | None, str]:
    """The daemon's status as it is now, asked on the socket beside ``status_path``: (status, "") when it answered,
    else (None, why not) — "" when there is simply no daemon listening there (no socket, or a socket left by one that
    died), a reason worth telling when one is there but the answer failed (permission, a timeout)."""
    import json
    import socket

    path = status_socket_path(status_path)
    if not socket_path_fits(path):
        return None, ""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        return None, ""
    except TimeoutError:
        return None, f"status socket {path}: no answer within {timeout_s:g} s"
    except OSError as e:
        return None, f"status socket {path}: {e.strerror or e}"
    finally:
        sock.close()
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as e:
        return None, f"status socket {path}: not a status ({e})"
    if not isinstance(data, dict):
        return None, f"status socket {path}: not a status"
    return data, ""
