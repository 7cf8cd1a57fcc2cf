"""Options every command shares (--config, --store) and how they resolve to a config and a store URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from jouled.config import Config, load_config
from jouled.store.sqlite import sqlite_url

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config (default $JOULED_CONFIG, then /etc/jouled/jouled.toml, else built-in defaults)"),
]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="sqlite:///abs/path.db | influx://host:8086/db | influx2://host:8086?org=O&bucket=B"),
]
FormatOpt = Annotated[str, typer.Option("--format", help="table | json")]


@dataclass
class Context:
    config: Config
    store_url: str


def context(config: Path | None, store: str | None) -> Context:
    """Resolve --config and --store: the command line wins over the environment, which wins over the file."""
    cfg = load_config(config)
    url = store or os.environ.get("JOULED_STORE") or sqlite_url(cfg.store_path())
    return Context(cfg, url)
