"""read_user_text: each way a named file can fail is its own one line, marks filled, braces in paths kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.errors import UserError
from jouled.userfile import read_user_text

MSGS = dict(missing="M", not_utf8="U at {byte}", unreadable="R ({strerror})")


def test_each_failure_gets_its_message(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^M$"):
        read_user_text(tmp_path / "nope", encoding="utf-8", **MSGS)
    bad = tmp_path / "bad"
    bad.write_bytes(b"ok\xff")
    with pytest.raises(UserError, match=r"^U at 2$"):
        read_user_text(bad, encoding="utf-8", **MSGS)
    with pytest.raises(UserError, match=r"^R \(Is a directory\)$"):  # no folder message: the unreadable one
        read_user_text(tmp_path, encoding="utf-8", **MSGS)
    with pytest.raises(UserError, match=r"^F$"):
        read_user_text(tmp_path, encoding="utf-8", folder="F", **MSGS)


def test_braces_in_a_path_are_not_a_format_string(tmp_path: Path) -> None:
    p = tmp_path / "a{0}b{strerror"
    with pytest.raises(UserError) as e:
        read_user_text(p, encoding="utf-8", missing=f"{p}: gone", not_utf8="", unreadable="")
    assert e.value.message == f"{p}: gone"
    p.write_text("text")
    assert read_user_text(p, encoding="utf-8", **MSGS) == "text"
