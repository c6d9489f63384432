"""`python -m imagebot ...`: the same as the `imagebot` command."""

from imagebot.cli import app

app(prog_name="imagebot")
