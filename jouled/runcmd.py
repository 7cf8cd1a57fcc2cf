"""The body of `jouled run` and what it needs from the CLI, free of typer/click/rich (see jouled/entry.py)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jouled.errors import UserError

if TYPE_CHECKING:
    from jouled.config import Config


@dataclass
class Context:
    config: Config
    store_url: str


def context(config: Path | None, store: str | None) -> Context:
    """Resolve --config and --store: the command line wins over the environment, which wins over the file."""
    from jouled.config import load_config
    from jouled.store.url import sqlite_url

    cfg = load_config(config)
    url = store or os.environ.get("JOULED_STORE") or sqlite_url(cfg.store_path())
    return Context(cfg, url)


def print_user_error(err: UserError) -> None:
    """The one line a user sees for an error they can fix."""
    print(f"Error: {err.message}", file=sys.stderr)


def setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from jouled.secrets import install_log_redaction

    install_log_redaction()  # URL passwords, tokens and every secret jouled read are masked in every log line


def run_daemon_command(
    *, duration: float | None, rate: float | None, source: list[str] | None, verbose: bool, config: Path | None,
    store: str | None,
) -> dict[str, Any] | None:
    """`jouled run`: the daemon in the foreground until stopped (or for `duration` s); with a duration, its status
    table is printed at the end."""
    from jouled.daemon.app import build_daemon, run_daemon

    if duration is not None and not duration > 0:  # 0, negative or NaN would stop at once, having sampled nothing
        raise UserError(f"--duration {duration:g}: must be > 0 seconds — or leave it out to run until stopped")
    setup_logging(verbose)
    ctx = context(config, store)
    from jouled.spool import default_spool_dir

    # the daemon also records markers that marker clients on this host left spooled (broker down, client gone)
    daemon = build_daemon(
        ctx.config, ctx.store_url, rate_hz=rate, source_names=source or None, spool_dir=default_spool_dir()
    )
    final = run_daemon(daemon, duration)
    if duration is not None:
        from jouled.cli import _print_status_table  # the daemon has stopped: the table's imports cost nothing now

        _print_status_table(final)
    return final
