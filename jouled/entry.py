"""The `jouled` command's entry point: `jouled run` starts the daemon without loading the CLI framework.

`jouled run` is the process that stays: as a service it runs for months. Parsed by typer it would carry typer,
click, rich and pydantic (typer's adapters import it) for its whole life, about 10 MB of its RSS that it never
uses again. So a plain `jouled run [options]` is parsed here with argparse and runs the same body as the typer
command (`jouled.runcmd.run_daemon_command`); anything else (`--help`, an option it does not know, a value that
does not parse) goes to the typer CLI, which prints the usual help and errors.
"""

from __future__ import annotations

import argparse
import sys


def _fast_run_args(argv: list[str]) -> argparse.Namespace | None:
    """argv after `run` parsed as the typer command would, or None to leave it to typer (help, errors)."""
    if any(a in ("-h", "--help") for a in argv):
        return None
    p = argparse.ArgumentParser(prog="jouled run", add_help=False, exit_on_error=False, allow_abbrev=False)
    p.add_argument("--duration", type=float)
    p.add_argument("--rate", type=float)
    p.add_argument("--source", action="append")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--config")
    p.add_argument("--store")
    try:
        ns, rest = p.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None
    return None if rest else ns


def main() -> None:
    argv = sys.argv[1:]
    ns = _fast_run_args(argv[1:]) if argv[:1] == ["run"] else None
    if ns is None:
        from jouled.cli import main as cli_main

        cli_main()
        return
    from pathlib import Path

    from jouled.errors import UserError
    from jouled.runcmd import print_user_error, run_daemon_command

    try:
        run_daemon_command(duration=ns.duration, rate=ns.rate, source=ns.source, verbose=ns.verbose,
                           config=Path(ns.config) if ns.config else None, store=ns.store)
    except UserError as e:
        print_user_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # as click reports it
        print("Aborted!", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
