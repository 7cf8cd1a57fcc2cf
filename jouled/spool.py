"""The marker spool on disk, shared by marker clients and the daemon: folder, file format, locks, seq files.

A marker client appends every marker to its own spool file before publishing it and keeps the lines the broker has
not acknowledged; the daemon delivers the spools whose client is gone. Both sides use this module, so the daemon
never imports the trainer.

Layout of the spool folder (``default_spool_dir()``)::

    <host>-<pid>-<random>.jsonl         one client's spool: one marker per line (spool_line), flock'ed while it lives
    <host>-<pid>-<random>.jsonl.acked   how many leading lines the broker acknowledged (an integer; replaced atomically)
    seq/<run>.seq                       the next seq of a run (an integer; flock'ed while updated)

Names are ``safe_file_name``-escaped. A line is the marker's compact JSON without ``sent`` (jouled.markers'
marker_to_json); ``with_sent`` adds the time it is handed to the broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jouled.markers import marker_to_json, topic_for
from jouled.model import Marker
from jouled.secrets import make_private_dir


def default_spool_dir() -> Path:
    """``$JOULED_SPOOL_DIR``, else ``$XDG_STATE_HOME/jouled/spool``, else ``~/.local/state/jouled/spool``."""
    env = os.environ.get("JOULED_SPOOL_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jouled" / "spool"


def safe_file_name(name: str, max_len: int = 160) -> str:
    """``name`` as one file name: every byte but [A-Za-z0-9_.~-] percent-escaped (so no '/', no NUL, never '.' or
    '..' alone), and a long one cut and suffixed with a hash of the whole, under the file system's 255-byte limit."""
    q = quote(name, safe="", errors="surrogatepass")  # a lone surrogate is escaped too, never an error
    if q in ("", ".", ".."):
        q = q.replace(".", "%2E") or "%00empty"
    if len(q) > max_len:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        q = f"{q[: max_len - 17]}~{digest}"
    return q


def spool_line(m: Marker) -> bytes:
    """The spool line of a marker: its compact JSON, without ``sent`` (no newline)."""
    return marker_to_json(m)


def with_sent(line: bytes, sent_ns: int) -> bytes:
    """The MQTT payload of a spool line: the line with ``"sent": sent_ns`` added (the clock-skew check uses it)."""
    return line[:-1] + b',"sent":' + str(sent_ns).encode() + b"}"


def line_topic(line: bytes, default_host: str) -> str:
    """The topic a spool line is published on: its own host's (an adopted line may carry another host tag)."""
    try:
        return topic_for(str(json.loads(line).get("host") or default_host))
    except (ValueError, AttributeError):
        return topic_for(default_host)


class SeqAllocator:
    """Per-run sequence numbers persisted in ``<spool>/seq/<run>.seq`` (flock'ed: safe across processes)."""

    def __init__(self, spool_dir: Path) -> None:
        self.dir = Path(spool_dir) / "seq"

    def _path(self, run: str) -> Path:
        return self.dir / f"{safe_file_name(run)}.seq"

    def _update(self, run: str, fn: Any) -> int:
        make_private_dir(self.dir)
        fd = os.open(self._path(run), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 64).strip()
            current = int(raw) if raw else 0
            new, result = fn(current)
            if new != current:
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, f"{new}\n".encode())
            return int(result)
        finally:
            os.close(fd)

    def reserve(self, run: str, n: int = 1) -> int:
        """Reserve ``n`` consecutive seqs for ``run``; return the first."""
        return self._update(run, lambda cur: (cur + n, cur))

    def observe(self, run: str, seq: int) -> None:
        """An explicit seq was used: later reservations start after it."""
        self._update(run, lambda cur: (max(cur, seq + 1), cur))

    def peek(self, run: str) -> int:
        """The next seq a reservation would return."""
        return self._update(run, lambda cur: (cur, cur))


def _read_lines_after(path: Path, skip: int) -> list[bytes]:
    with path.open("rb") as f:
        lines = [ln.rstrip(b"\n") for ln in f if ln.strip()]
    return lines[skip:]


def _read_cursor(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


class Spool:
    """One client's append-only spool file plus its acked-lines cursor (written by the client's background thread).

    The file is locked (flock) while its client lives; a spool whose lock is free is an orphan, adopted by the next
    client (``adopt_orphans``) or delivered by the daemon (``OrphanSpool``).
    """

    def __init__(self, spool_dir: Path, host: str) -> None:
        self.dir = spool_dir
        make_private_dir(self.dir)
        name = f"{safe_file_name(host, 64)}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = self.dir / name
        self.cursor_path = self.dir / f"{name}.acked"
        self.f = self.path.open("ab")
        fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # our own new file: never contended
        self.lines = 0  # lines in the file
        self.acked = 0  # leading lines acknowledged by the broker
        self.unsynced = False
        self.cursor_written = 0

    def adopt_orphans(self) -> list[bytes]:
        """Unacked lines of spools whose owner is gone (lock free), oldest file first; copied into ours."""
        out: list[bytes] = []
        candidates = sorted(
            (p for p in self.dir.glob("*.jsonl") if p != self.path), key=lambda p: (p.stat().st_mtime_ns, p.name)
        )
        for p in candidates:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live client owns it
                if os.fstat(fd).st_nlink == 0:
                    continue  # adopted and removed by someone else meanwhile
                cursor = Path(f"{p}.acked")
                lines = _read_lines_after(p, _read_cursor(cursor))
                if lines:
                    self.append(lines)
                    self.sync()  # ours is durable before theirs goes
                out.extend(lines)
                p.unlink(missing_ok=True)
                cursor.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return out

    def append(self, lines: Iterable[bytes]) -> None:
        n = 0
        for ln in lines:
            self.f.write(ln + b"\n")
            n += 1
        if n:
            self.lines += n
            self.unsynced = True

    def sync(self) -> None:
        if self.unsynced:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.unsynced = False
        if self.acked and self.acked == self.lines:
            # everything delivered: start the file afresh so it never grows without bound
            self.f.truncate(0)
            self.f.seek(0)
            self.lines = self.acked = 0
        if self.acked != self.cursor_written:
            tmp = self.cursor_path.with_suffix(".tmp")
            tmp.write_text(str(self.acked))
            os.replace(tmp, self.cursor_path)
            self.cursor_written = self.acked

    def close(self, *, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)
            self.cursor_path.unlink(missing_ok=True)
        self.f.close()  # releases the lock: a spool left behind is adopted by the next client


class OrphanSpool:
    """A spool file whose client is gone, locked by us: its unacknowledged lines, to deliver another way.

    The daemon reads these (``jouled.daemon.spool``) so markers spooled while no broker answered reach the
    log without waiting for the next marker client. ``remove()`` once they are recorded; ``release()`` to
    leave the file for a later try. The lock is the same one clients take in ``Spool.adopt_orphans``, so
    a file is delivered by one of them, never by two at once.
    """

    def __init__(self, path: Path, fd: int, lines: list[bytes]) -> None:
        self.path, self._fd, self.lines = path, fd, lines
        self.removed = False  # remove() deleted the file (its markers are delivered)
        # remove() may run on a worker thread while release() runs on another (the daemon's loop, a cancelled
        # delivery): the descriptor is taken and closed under this lock, so it is closed once, never after its number
        # went to another file or socket of this process
        self._lock = threading.Lock()

    @classmethod
    def claim(cls, path: Path) -> OrphanSpool | None:
        """Lock ``path`` if no live client holds it; None when one does, or the file is gone."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink == 0:  # adopted and removed by someone else meanwhile
                raise BlockingIOError
            lines = _read_lines_after(path, _read_cursor(Path(f"{path}.acked")))
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, lines)

    @staticmethod
    def candidates(spool_dir: Path) -> list[Path]:
        """Spool files in ``spool_dir``, oldest first (live ones included: ``claim`` skips them)."""
        try:
            paths = list(Path(spool_dir).glob("*.jsonl"))
        except OSError:
            return []
        out = []
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                out.append((p.stat().st_mtime_ns, p.name, p))
        return [p for *_, p in sorted(out)]

    def remove(self) -> None:
        """Delivered: delete the file and its cursor, then drop the lock (nothing once released: no longer ours)."""
        with self._lock:
            if self._fd < 0:
                return
            self.path.unlink(missing_ok=True)
            Path(f"{self.path}.acked").unlink(missing_ok=True)
            self.removed = True
            self._close()

    def release(self) -> None:
        """Drop the lock, leaving the file for a later try; safe to call again, and from any thread."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
