"""Fault scenarios on real processes, shared by tests/faults and bench/faults.py: each returns its figures.

- ``sigkill_cycles``: a daemon (NVML shim, 100 Hz) SIGKILLed again and again, restarted each time: the log's
  integrity after each kill and the seconds of samples lost (kill time − last stored sample).
- ``broker_restarts``: MarkerClient at 100 markers/s through a real Mosquitto restarted for 2 s, twice, with a
  real `jouled run` subscribed: markers lost, and what the daemon says about the broker's session.
- ``meter_recovery``: a wall meter (WT310 protocol on a real TCP socket, read by pyvisa-py) unplugged and plugged
  back, and absent when the daemon starts: seconds from "answers again" to the first stored reading, and the
  estimate source's rate meanwhile.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from jouled.statusfile import status_candidates
from jouled.store.sqlite import SeriesKey, SqliteStore, sqlite_url

REPO = Path(__file__).resolve().parents[2]


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    """A child environment whose runtime and data dirs are inside ``tmp`` (no /run/jouled, no ~ touched)."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_STATE_HOME=str(tmp / "state"), PYTHONPATH=str(REPO), **extra)
    env.pop("RUNTIME_DIRECTORY", None)
    env.pop("JOULED_CONFIG", None)
    env.pop("JOULED_STORE", None)
    return env


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str = "", step_s: float = 0.05) -> float:
    """Seconds it took for ``pred`` to hold; TimeoutError after ``timeout_s``."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(what or "condition not met")
        time.sleep(step_s)
    return time.monotonic() - t0


def read_status(db: Path, env: dict[str, str]) -> dict[str, Any] | None:
    """The daemon's status file, looked up as `jouled status` does (in the child's environment)."""
    for p in status_candidates(db, env):
        try:
            return dict(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return None


def flushed_by(pid: int, db: Path, env: dict[str, str]) -> bool:
    """The daemon ``pid`` has written samples (its status says so). Read from the status, not the log: opening a
    log that the daemon is creating at that moment races its schema setup."""
    st = read_status(db, env) or {}
    return st.get("pid") == pid and st.get("store", {}).get("written", 0) > 0


def last_sample_ns(db: Path) -> int:
    """The newest sample time in the log (0: none)."""
    st = SqliteStore(db)
    try:
        tr = st.time_range()
        return 0 if tr is None else tr[1]
    finally:
        st.close()


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


# -- SIGKILL under load -----------------------------------------------------------------------------------------


def start_shim_daemon(db: Path, env: dict[str, str], devices: int, rate_hz: float, port: int = 0,
                      log_path: Path | None = None, flush_interval_s: float | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.faults.shim_daemon", "--store", str(db), "--devices", str(devices),
            "--rate", str(rate_hz), "--port", str(port)]
    if flush_interval_s is not None:
        argv += ["--flush-interval", str(flush_interval_s)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # closed below, the child keeps it
    try:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def sigkill_cycles(tmp: Path, kills: int, *, devices: int = 8, rate_hz: float = 100.0, run_s: tuple[float, float] = (1.5, 3.0),
                   seed: int = 1, flush_interval_s: float = 0.5) -> list[dict[str, Any]]:
    """Start, let it sample ``run_s`` (random within) after its first flush, SIGKILL, check; ``kills`` times.

    ``flush_interval_s`` is pinned (0.5 s, what bench/results/faults.json measured), not the config's default: the
    samples a kill loses are bounded by it."""
    rng = random.Random(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / "kill.db"
    env = env_for(tmp)
    out = []
    for i in range(kills):
        t_start = time.monotonic()
        p = start_shim_daemon(db, env, devices, rate_hz, log_path=tmp / "daemon.log", flush_interval_s=flush_interval_s)
        try:
            up_s = wait_until(partial(flushed_by, p.pid, db, env), 60, "the daemon's first flush", step_s=0.1)
            time.sleep(rng.uniform(*run_s))
            kill_ns = time.time_ns()
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        ok = integrity(db)
        last = last_sample_ns(db)
        out.append({"kill": i + 1, "integrity": ok, "lost_s": round((kill_ns - last) / 1e9, 3),
                    "first_flush_after_start_s": round(up_s, 2), "cycle_s": round(time.monotonic() - t_start, 2)})
    return out


# -- broker restarts -----------------------------------------------------------------------------------------------


def broker_restarts(tmp: Path, *, persistence: bool, restarts: int = 2, outage_s: float = 2.0, rate_hz: float = 100.0,
                    between_s: float = 3.0) -> dict[str, Any]:
    """`jouled run` subscribed to a real Mosquitto; MarkerClient sends at ``rate_hz`` while the broker is stopped
    for ``outage_s``, ``restarts`` times; returns sent, stored, lost and the daemon's view of the session."""
    from jouled.trainer.markers import MarkerClient
    from tests.brokers import start_mosquitto

    tmp.mkdir(parents=True, exist_ok=True)
    broker = start_mosquitto(persistence=persistence)
    db = tmp / "broker.db"
    env = env_for(tmp, JOULED_MQTT_URL=broker.url)
    daemon = subprocess.Popen([sys.executable, "-m", "jouled.cli", "run", "--source", "estimate", "--rate", "10",
                               "--store", sqlite_url(db)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "daemon.log", "wb"))
    client = MarkerClient(broker.url, host="faults", spool_path=tmp / "spool")
    run = f"restarts-{'p' if persistence else 'np'}"
    sent = 0
    stop = threading.Event()

    def sender() -> None:
        nonlocal sent
        period = 1.0 / rate_hz
        t_next = time.monotonic()
        while not stop.is_set():
            client.mark("epoch", "start" if sent % 2 == 0 else "end", run, epoch=sent // 2)
            sent += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))

    try:
        wait_until(lambda: (read_status(db, env) or {}).get("markers", {}).get("connected") is True, 60,
                   "daemon subscribed")
        th = threading.Thread(target=sender, daemon=True)
        th.start()
        for _ in range(restarts):
            time.sleep(between_s)
            broker.stop()  # orderly: a persistent Mosquitto saves its sessions and queued messages
            time.sleep(outage_s)
            broker.start()
        time.sleep(between_s)
        stop.set()
        th.join()
        delivered = client.flush(timeout_s=60)

        def stored() -> int:
            st = SqliteStore(db)
            try:
                return len({m.seq for m in st.read_markers(run)})
            finally:
                st.close()

        # everything the broker still holds for the daemon arrives within seconds; then the count stops moving
        last, still = -1, 0
        deadline = time.monotonic() + 60
        while still < 6 and time.monotonic() < deadline:
            n = stored()
            still = still + 1 if n == last else 0
            last = n
            if n == sent:
                break
            time.sleep(0.5)
        status = read_status(db, env) or {}
    finally:
        stop.set()
        client.close(timeout_s=5)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        broker.close()
    mk = status.get("markers", {})
    return {"persistence": persistence, "restarts": restarts, "outage_s": outage_s, "rate_hz": rate_hz,
            "sent": sent, "stored": last, "lost": sent - last, "client_delivered": delivered,
            "session": mk.get("session"), "session_present": mk.get("session_present"),
            "outages_seen": mk.get("outages"), "duplicates": mk.get("duplicates")}


# -- a wall meter that goes away -----------------------------------------------------------------------------------


class LoopbackMeter:
    """A WT310 answering on a real TCP socket (pyvisa-py SOCKET resource) that can be unplugged and plugged back.

    Unplugged: the listening socket and every connection are closed (connection refused, reads fail), as when a
    LAN meter loses power. ``plugged_at`` is when it last started listening (time.time_ns()).
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.plugged_at_ns = 0
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def resource(self) -> str:
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"

    def reserve_port(self) -> int:
        """Pick a free port without listening on it yet (a meter absent at start)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        return self.port

    def plug(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        self.port = s.getsockname()[1]
        s.listen(4)
        s.settimeout(0.1)
        self._sock = s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(s, self._stop), daemon=True)
        self._thread.start()
        self.plugged_at_ns = time.time_ns()

    def unplug(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _serve(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            threading.Thread(target=self._session, args=(conn, stop), daemon=True).start()

    @staticmethod
    def _session(conn: socket.socket, stop: threading.Event) -> None:
        replies = {"*IDN?": "YOKOGAWA,WT310,LOOP0001,F1.03", ":STATus:EESR?": "1",
                   ":NUMeric:NORMal:VALue?": "1.2000E+02,1.0000E-03"}
        serve_scpi_queries(conn, stop, lambda cmd: replies.get(cmd, "0"))


def _visa_config(tmp: Path, resource: str, rate_hz: float) -> Path:
    cfg = tmp / "meter.toml"
    cfg.write_text(
        f'[daemon]\nhost = "faults"\nflush_interval_s = 0.2\nhealth_interval_s = 0.5\n'
        f'[sources.visa]\nenabled = true\nresource = "{resource}"\nmodel = "wt310"\nbackend = "@py"\n'
        f"timeout_ms = 300\nrate_hz = {rate_hz}\nupdate_interval_s = 0.1\n"
        f"[sources.estimate]\nenabled = true\nrate_hz = 100\n"
        "[sources.nvml]\nenabled = false\n[sources.rapl]\nenabled = false\n[sources.smi]\nenabled = false\n"
    )
    return cfg


def _first_meter_sample_after(db: Path, t_ns: int) -> int | None:
    st = SqliteStore(db)
    try:
        t = st.read_series(SeriesKey("faults", "visa", "wall"), start_ns=t_ns).time_ns
        return int(t[0]) if len(t) else None
    finally:
        st.close()


def _meter_read_after(db: Path, t_ns: int) -> bool:
    return _first_meter_sample_after(db, t_ns) is not None


def _wait_logged(db: Path, t_ns: int) -> None:
    """Until the daemon's watermark says every reading before t_ns is in the log."""
    from jouled.query import wait_complete

    st = SqliteStore(db, readonly=True)
    try:
        wait_complete(st, t_ns, 30, host="faults", neighbours=False)
    finally:
        st.close()


def _rate(db: Path, source: str, device: str, t0_ns: int, t1_ns: int) -> float:
    st = SqliteStore(db)
    try:
        n = len(st.read_series(SeriesKey("faults", source, device), start_ns=t0_ns, end_ns=t1_ns).time_ns)
    finally:
        st.close()
    return n / ((t1_ns - t0_ns) / 1e9)


def meter_recovery(tmp: Path, *, outages: int = 2, outage_s: float = 6.0, absent_s: float = 4.0,
                   meter_rate_hz: float = 10.0) -> dict[str, Any]:
    """`jouled run` with a LAN meter (absent at start, then unplugged ``outages`` times) and the estimate source.

    Recovery = first stored meter reading after the meter listens again − the moment it did (the goal: ≤ 5 s).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    meter = LoopbackMeter()
    meter.reserve_port()
    cfg = _visa_config(tmp, meter.resource, meter_rate_hz)
    db = tmp / "meter.db"
    from tests.brokers import free_port

    env = env_for(tmp, JOULED_MQTT_EMBEDDED_PORT=str(free_port()))
    daemon = subprocess.Popen([sys.executable, "-m", "jouled.cli", "run", "--config", str(cfg), "--store",
                               sqlite_url(db)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "daemon.log", "wb"))
    result: dict[str, Any] = {"outage_s": outage_s, "absent_at_start_s": absent_s}
    try:
        wait_until(lambda: flushed_by(daemon.pid, db, env), 60, "the daemon's first flush", step_s=0.1)
        time.sleep(absent_s)
        st = read_status(db, env) or {}
        visa: dict[str, Any] = next((s for s in st.get("sources", []) if s["name"] == "visa"), {})
        result["absent_state"] = {"state": visa.get("state"), "next_try_s": visa.get("next_try_s"),
                                  "reason": (visa.get("reason") or "")[:120]}
        meter.plug()
        t = meter.plugged_at_ns
        wait_until(lambda: _first_meter_sample_after(db, t) is not None, 30, "the meter's first reading")
        result["absent_at_start_recovery_s"] = round((_first_meter_sample_after(db, t) - t) / 1e9, 3)  # type: ignore[operator]
        recoveries, estimate_rates, retry_states = [], [], []
        for _ in range(outages):
            time.sleep(3.0)
            meter.unplug()
            t_down = time.time_ns()
            time.sleep(outage_s / 2)
            st = read_status(db, env) or {}
            visa = next((s for s in st.get("sources", []) if s["name"] == "visa"), {})
            retry_states.append({"state": visa.get("state"), "next_try_s": visa.get("next_try_s"),
                                 "last_error": (visa.get("last_error") or "")[:120]})
            time.sleep(outage_s / 2)
            meter.plug()
            back = meter.plugged_at_ns
            wait_until(partial(_meter_read_after, db, back), 30, "the meter's reading after replug")
            recoveries.append(round((_first_meter_sample_after(db, back) - back) / 1e9, 3))  # type: ignore[operator]
            _wait_logged(db, back)  # the estimate's samples of the outage are in the log
            estimate_rates.append(round(_rate(db, "estimate", _estimate_device(db), t_down, back), 1))
        result.update(recovery_s=recoveries, recovery_max_s=max(recoveries), estimate_rate_during_outage_hz=estimate_rates,
                      retrying_status=retry_states)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        meter.unplug()
    return result


def _estimate_device(db: Path) -> str:
    st = SqliteStore(db)
    try:
        return next(k.device for k in st.series() if k.source == "estimate")
    finally:
        st.close()


def serve_scpi_queries(conn: socket.socket, stop: threading.Event, reply: Callable[[str], str]) -> None:
    """Answer each newline-terminated SCPI query on `conn` with `reply(query)` (commands, no `?`, get nothing) until
    `stop`, EOF or a socket error: the loop of the fake meters that tests reach over a real TCP socket."""
    conn.settimeout(0.1)
    buf = b""
    while not stop.is_set():
        try:
            data = conn.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode(errors="replace").strip()
            if not cmd.endswith("?"):
                continue
            try:
                conn.sendall(reply(cmd).encode() + b"\n")
            except OSError:
                return
