"""User-facing errors: one line naming the input and the fix, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message is one line that names the input and the fix.

    A plain exception of the project: the command groups (`jouled.cli_common.make_app`) and `jouled.cli.main`
    print it as `Error: <message>` on stderr and exit 2, without a traceback.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        self.message = " ".join(message.split("\n"))
        super().__init__(self.message)


class NothingFound(UserError):
    """The command ran but found nothing to give (an export that matched no sample, a run with no epoch to assess):
    one line, exit 1."""

    exit_code = 1


class MissingExtra(UserError):
    """An optional part was asked for but its extra is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(f"{what} needs {module!r}, which is not installed — pip install 'jouled[{extra}]'")
        self.extra = extra


class SourceUnavailable(Exception):
    """A source cannot run on this machine; the message says why and how to fix it."""
