"""`python -m jouled`: the same as the `jouled` command (how a command starts `jouled run` as a child)."""

from jouled.entry import main

main()
