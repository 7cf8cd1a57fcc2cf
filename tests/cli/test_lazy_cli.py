"""`jouled` mounts its component commands lazily: the root's help, --version, status and sources import none of
the stacks they do not use (httpx and the carbon providers, the scheduler, the trainer, torch), and the one-line
help the root lists for a lazy command is the command's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from jouled.cli import COMMAND_ORDER, LAZY_COMMANDS, LazyCommands, app

# what no command that only lists, prints a version or reads the status file may load
NEVER_FOR_LISTING = ("httpx", "jouled.scheduler", "jouled.trainer", "torch", "amqtt", "paho", "aiomqtt", "jouled.energy",
                     "jouled.query", "jouled.daemon", "numpy", "pydantic")
# `status` reads the config (pydantic) and the status file, not the store; `sources` probes the daemon's sources
NEVER_FOR_STATUS = ("httpx", "jouled.scheduler", "jouled.trainer", "torch", "amqtt", "paho", "aiomqtt", "jouled.energy",
                    "jouled.query", "jouled.daemon", "numpy", "jouled.store.sqlite")
NEVER_FOR_SOURCES = ("httpx", "jouled.scheduler", "jouled.trainer", "torch", "amqtt", "jouled.energy", "jouled.query")

# runs jouled's main() and reports on stderr which modules it imported, whatever way it exits
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["jouled", *json.loads(sys.argv[1])]
from jouled.cli import main
main()
"""


def _modules(tmp_path: Path, args: list[str], extra_env: dict[str, str] | None = None) -> tuple[set[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOULED_")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_RUNTIME_DIR=str(tmp_path / "run"), COLUMNS="80",
               **(extra_env or {}))
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    line = next(x for x in res.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES "))), res.stdout if res.stdout else res.stderr


def _loaded(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], []])
def test_listing_imports_no_component(tmp_path: Path, args: list[str]) -> None:
    modules, out = _modules(tmp_path, args)
    assert _loaded(modules, NEVER_FOR_LISTING) == []
    assert "jouled" in out  # no arguments: the help, on stderr (exit 2)


def test_status_imports_no_component(tmp_path: Path) -> None:
    modules, _ = _modules(tmp_path, ["status"])  # no daemon ran: exit 2, no status file
    assert _loaded(modules, NEVER_FOR_STATUS) == []


def test_sources_imports_only_the_sources(tmp_path: Path) -> None:
    modules, out = _modules(tmp_path, ["sources", "--format", "json"])
    assert "estimate" in out
    assert _loaded(modules, NEVER_FOR_SOURCES) == []


def test_completing_a_command_name_imports_no_component(tmp_path: Path) -> None:
    modules, out = _modules(tmp_path, [], {"_JOULED_COMPLETE": "complete_bash", "COMP_WORDS": "jouled ", "COMP_CWORD": "1"})
    assert out.split() == list(COMMAND_ORDER)
    assert _loaded(modules, NEVER_FOR_LISTING[:-1]) == []  # typer's completion itself loads pydantic


def test_running_a_lazy_command_imports_only_its_component(tmp_path: Path) -> None:
    modules, out = _modules(tmp_path, ["carbon", "--help"])
    assert "now" in out and "jouled.carbon_cli" in modules
    assert _loaded(modules, ("jouled.trainer", "torch", "jouled.scheduler.lamoo")) == []


def test_static_help_is_each_commands_own() -> None:
    """The table `jouled --help` lists from, against the real commands (every lazy one is loaded here)."""
    root = typer.main.get_command(app)
    commands = root.commands  # type: ignore[attr-defined]
    assert isinstance(commands, LazyCommands)
    assert list(commands) == list(COMMAND_ORDER)
    assert set(LAZY_COMMANDS) <= set(COMMAND_ORDER)
    for name, (_, help_line) in LAZY_COMMANDS.items():
        real = commands[name]
        assert type(real).__name__ in ("TyperGroup", "TyperCommand", "JouledGroup"), (name, type(real))
        assert real.get_short_help_str(10_000) == help_line, f"LAZY_COMMANDS[{name!r}] help differs from the command's own"


def test_lazy_commands_run_through_the_root() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["nas", "-h"], env={"COLUMNS": "80"})
    assert res.exit_code == 0 and "simulate" in res.output and "search" in res.output
    res = runner.invoke(app, ["ener"], env={"COLUMNS": "80"})
    assert res.exit_code == 2 and "Did you mean 'energy'?" in res.output
    res = runner.invoke(app, ["energy", "runs", "--store", "sqlite:////nonexistent/dir/x.db"], env={"COLUMNS": "80"})
    assert res.exit_code == 2 and "Traceback" not in res.output  # a lazy group still turns UserError into one line
