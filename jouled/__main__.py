"""`python -m jouled`: the same as the `jouled` command (how a command starts `jouled run` as a child)."""

from jouled.cli import main

main()
