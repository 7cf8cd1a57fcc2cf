"""Options every command shares (--config, --store) and how they resolve to a config and a store URL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from jouled.errors import UserError

# re-exported: every command resolves its config and store, and prints its errors, the way `jouled run` does
from jouled.runcmd import Context as Context
from jouled.runcmd import context as context
from jouled.runcmd import print_user_error as print_user_error

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="FILE",
        help="TOML config (default $JOULED_CONFIG, then /etc/jouled/jouled.toml, else built-in defaults)",
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", metavar="URL",
        help="sqlite:///abs/path.db | influx://host:8086/db | influx2://host:8086?org=O&bucket=B "
        "(default $JOULED_STORE, else the config's store)",
    ),
]
# for commands that read no store: still accepted (scripts pass --store to every command), hidden from help
UnusedStoreOpt = Annotated[str | None, typer.Option("--store", metavar="URL", hidden=True, help="not used by this command")]


def ignore_store(store: str | None, command: str) -> None:
    """Say once that a --store given to a command that reads no store changes nothing."""
    if store:
        print(f"warning: {command} reads no store — --store {store} is ignored", file=sys.stderr)


FormatOpt = Annotated[str, typer.Option("--format", metavar="FORMAT", help="table | json")]
WideOpt = Annotated[bool, typer.Option("--wide", help="show every column, even when wider than the terminal")]


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}



class JouledGroup(TyperGroup):
    """A command group that turns a UserError raised anywhere below it into one line on stderr and exit 2, and
    click's own usage errors (a value that is not a number, an unknown option, a missing one) too: one line naming
    the option and where its help is, instead of click's usage block."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            print_user_error(e)
            raise typer.Exit(e.exit_code) from None
        except _USAGE_ERROR as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                raise  # a group given no command: its help, as click shows it
            err: Any = e
            where = err.ctx.command_path if err.ctx is not None else ctx.command_path
            print(f"Error: {err.format_message().rstrip('.')} — see `{where} -h`", file=sys.stderr)
            raise typer.Exit(err.exit_code) from None


# click's UsageError as typer raises it: typer 0.29 carries its own copy of click (typer._click, private), whose one
# public class here is BadParameter; its base is the UsageError that a missing option or an unknown one raises too
_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def make_app(**kwargs: Any) -> typer.Typer:
    """A typer app with jouled's conventions: one-line errors (exit 2) whether mounted in `jouled` or run alone,
    `-h` as well as `--help`, no tracebacks dressed in boxes."""
    kwargs.setdefault("no_args_is_help", True)
    kwargs.setdefault("context_settings", HELP_OPTIONS)
    kwargs.setdefault("cls", JouledGroup)
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, **kwargs)


