"""`python -m posturescreen` = the `posturescreen` command."""

from posturescreen.cli import app

app(prog_name="posturescreen")
