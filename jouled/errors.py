"""User-facing errors: one line naming the input and the fix, exit code 2."""

from __future__ import annotations

import click

try:  # recent typer vendors its own click (typer._click) and catches only that ClickException
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # older typer runs on click itself
    _ClickException = click.ClickException  # type: ignore[misc,assignment]


class UserError(_ClickException):
    """An error the user can fix; its message is one line that names the input and the fix.

    A ClickException, so typer prints it as one line and exits 2 both from the console
    script and under typer's CliRunner, without a traceback.
    """

    exit_code = 2  # type: ignore[misc]  # typer's base declares it per instance

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\n", " "))


class SourceUnavailable(Exception):
    """A source cannot run on this machine; the message says why and how to fix it."""
