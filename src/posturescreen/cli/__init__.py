"""Command line: `posturescreen study | validate | agreement | synth | demo | explain |
report | export | predict | serve | annotate`. Each command calls the same library functions
a notebook user would. The app and its error handling live in `app`; the commands in `studies`,
`screening` and `annotating`, imported here so they register."""

from posturescreen.cli import annotating, screening, studies
from posturescreen.cli.app import app

__all__ = ["annotating", "app", "main", "screening", "studies"]


def main() -> None:
    app()
