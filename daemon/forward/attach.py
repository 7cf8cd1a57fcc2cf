"""Build the forwarder from `[influx]` (credentials through jouled.secrets; a bad key is one line at start) and
plug it into the daemon: its thread, its status, its hold on maintenance, and the sources' `jouled_health` points."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jouled import influxproto as lp
from jouled.clock import CLOCK
from jouled.config import Config
from jouled.daemon.forward.forwarder import Forwarder
from jouled.daemon.forward.writers import V1Writer, V2Writer, Writer, target_id
from jouled.errors import UserError
from jouled.secrets import influx_password, influx_token, redact_url
from jouled.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from jouled.daemon.service import Daemon

log = logging.getLogger("jouled.forward")
FINAL_PASS_S = 5.0  # at shutdown: how long the last pass may take (what is left then goes at the next start)
# health points (jouled_health) every 10 s, Telegraf's default interval, or every ten status intervals when those are
# shorter (tests), 1 s at least. At every status interval (then 1 s) they were a second HTTP write a second beside the
# samples' (bench/observer.py --service); `jouled status` and /metrics stay live either way.
HEALTH_POINTS_EVERY = 10
HEALTH_POINTS_PERIOD_S = 10.0
FORWARD_POLL_FLUSHES = 5  # the forwarder's poll, in flush intervals (forward_poll_s)


def health_points_period_s(health_interval_s: float) -> float:
    return min(HEALTH_POINTS_PERIOD_S, max(HEALTH_POINTS_EVERY * health_interval_s, 1.0))


def forward_poll_s(flush_interval_s: float) -> float:
    """How long the forwarder waits for a nudge before it looks at the log anyway. The daemon nudges it after every
    commit of its own (`Daemon.logged`: each flush, each stored marker batch), so the poll only finds rows another
    process wrote into the log (a live search's allocations): within 10 s with the default 2 s flush. At the flush
    interval (1 s before) every other pass found nothing, after asking the log for each of its five streams."""
    return max(FORWARD_POLL_FLUSHES * flush_interval_s, 1.0)


def build_writer(cfg: Config) -> Writer:
    """The write client `[influx]` asks for; UserError naming the key when the config cannot work."""
    ic = cfg.influx
    parts = urlsplit(ic.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"[influx] url {redact_url(ic.url)!r}: not an http(s) URL — e.g. url = \"http://127.0.0.1:8086\"")
    if ic.api == "v2":
        from jouled.extras import require

        require("[influx] api = \"v2\"", "influx", "influxdb_client")
        token = influx_token(cfg)
        if not token:
            raise UserError("[influx] api = \"v2\" needs a token — set [influx] token_file, the systemd credential "
                            "influx-token or $JOULED_INFLUX_TOKEN")
        if not ic.org:
            raise UserError("[influx] api = \"v2\" needs [influx] org (and bucket)")
        return V2Writer(ic.url, ic.org, ic.bucket, token, timeout_s=ic.timeout_s)
    if not ic.database:
        raise UserError("[influx] database is empty — name the InfluxDB database to write to")
    password = influx_password(cfg) if ic.username else None
    return V1Writer(ic.url, ic.database, retention_policy=ic.retention_policy, username=ic.username,
                    password=password, timeout_s=ic.timeout_s)


def build_forwarder(cfg: Config, store: SqliteStore, **kw: object) -> Forwarder:
    """A forwarder for `store` with `[influx]`'s settings (keyword arguments override Forwarder's)."""
    ic = cfg.influx
    writer = build_writer(cfg)
    opts: dict[str, object] = {
        "batch_size": ic.batch_size, "max_retry_s": ic.max_retry_s, "poll_s": forward_poll_s(cfg.daemon.flush_interval_s),
        "health_period_s": health_points_period_s(cfg.daemon.health_interval_s), "host": cfg.daemon.host,
        "disk_budget_mb": ic.disk_budget_mb,
    }
    opts.update(kw)
    return Forwarder(store, writer, target=target_id(ic.url, ic.api, ic.database, ic.bucket), **opts)  # type: ignore[arg-type]


def source_health_lines(daemon: Daemon) -> list[str]:
    """`jouled_health` points of each source (rate, jitter, errors, missed, last sample age), now."""
    now = CLOCK.now_ns()
    out = []
    for h in daemon.sampler.health():
        line = lp.encode_health(daemon.host, str(h["name"]), {
            "rate_hz": h.get("achieved_rate_hz"), "jitter_s": (h.get("jitter_p99_ms") or 0.0) / 1e3,
            "errors": h.get("errors", 0), "missed": h.get("missed", 0), "last_sample_age_s": h.get("last_sample_age_s"),
        }, now)
        if line is not None:
            out.append(line)
    return out


def attach_forwarder(daemon: Daemon) -> Forwarder | None:
    """Add the forwarding task when `[influx] url` is set; None when it is not."""
    cfg = daemon.config
    if not cfg.influx.url.strip():
        return None
    fwd = build_forwarder(cfg, daemon.store, health_lines=lambda: source_health_lines(daemon))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per write request would flood the journal
    stop = threading.Event()

    async def forward(_: Daemon) -> None:
        try:
            await asyncio.to_thread(fwd.run, stop)
        finally:
            stop.set()  # cancelled at shutdown: the thread ends after its current write
            fwd.nudge()  # (or at once, when it was waiting for the next flush)

    async def forward_last_pass() -> None:
        await asyncio.to_thread(fwd.finish, FINAL_PASS_S)

    daemon.on_flush.append(fwd.nudge)  # a pass right after each flush: one pass a flush, and the least lag
    daemon.tasks.append(forward)
    daemon.after_final_flush.append(forward_last_pass)
    daemon.status_extras["forwarder"] = fwd.status
    daemon.maintain_max_id = fwd.chunk_cursor
    log.info("forwarder: %s into %s (api %s)", daemon.store.path, redact_url(cfg.influx.url), cfg.influx.api)
    return fwd
