"""Command line: `posturescreen study | validate | agreement | synth | demo | explain |
report | export | predict | serve | annotate`. Each command calls the same library functions
a notebook user would. The app and its error handling live in `app`; the commands in `studies`,
`agreeing`, `screening` and `annotating`, imported here so they register."""

from posturescreen.cli import agreeing, annotating, screening, studies
from posturescreen.cli.app import app

__all__ = ["agreeing", "annotating", "app", "main", "screening", "studies"]


def main() -> None:
    app()
