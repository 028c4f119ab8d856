"""The command-line application: the Typer app every command registers on, and the one
place where a user-facing error becomes a message and exit code 2."""

from __future__ import annotations

import warnings

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from posturescreen.errors import PostureScreenError

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print one error on stderr and exit with code 2 (paths printed intact, no markup)."""
    err_console.print("[bold red]error:[/bold red] ", end="")
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class _Commands(TyperGroup):
    """Every command runs here: a user-facing error (any PostureScreenError) becomes one
    clear message and exit code 2, in this one place."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PostureScreenError as e:
            fail(str(e))


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="Posture-photo deep-learning studies with subject-grouped CV and "
    "honest confidence intervals.",
)


def _short_warning(message, category, filename, lineno, line=None) -> str:
    # users need the message (e.g. "NSP/resnet50 fold 2: NPV undefined"), not our source line
    return f"warning: {message}\n"


warnings.formatwarning = _short_warning
