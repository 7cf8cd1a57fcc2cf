"""Read a text file the user named: every way the read can fail is one UserError line, with that file's own fix."""

from __future__ import annotations

from pathlib import Path

from jouled.errors import UserError


def read_user_text(
    path: Path,
    *,
    encoding: str,
    missing: str,
    not_utf8: str,
    unreadable: str,
    folder: str | None = None,
    denied: str | None = None,
) -> str:
    """The file's text. Each keyword is the whole one-line message for one way it can fail; the marks `{strerror}`
    (the OS's words) and `{byte}` (the offset of the first bad byte) are filled in — by replacement, not
    str.format, so braces in a path stay as they are. Without `folder` or `denied`, those cases get the
    `unreadable` message, as any other OSError does."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UserError(missing) from None
    except IsADirectoryError as e:
        raise UserError(_fill(folder or unreadable, strerror=e.strerror)) from None
    except PermissionError as e:
        raise UserError(_fill(denied or unreadable, strerror=e.strerror)) from None
    except UnicodeDecodeError as e:
        raise UserError(_fill(not_utf8, byte=str(e.start))) from None
    except OSError as e:
        raise UserError(_fill(unreadable, strerror=e.strerror)) from None


def _fill(message: str, **marks: str | None) -> str:
    for name, value in marks.items():
        message = message.replace("{" + name + "}", str(value))
    return message
