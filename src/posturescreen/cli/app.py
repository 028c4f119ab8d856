"""The command-line application: the Typer app every command registers on, and the one
place where a user-facing error becomes a message and exit code 2."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import click
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from posturescreen.config import StudyConfig, load_config
from posturescreen.errors import PostureScreenError

console = Console()
err_console = Console(stderr=True)


def print_table(title: str, rows: pd.DataFrame, *, caption: str | None = None,
                caption_justify: str = "center") -> None:
    """A table of text cells (e.g. `formatted_agreement`) on the console, its columns as is."""
    t = Table(title=title, title_justify="left", caption=caption,
              caption_justify=caption_justify)
    for col in rows.columns:
        t.add_column(col)
    for r in rows.itertuples(index=False):
        t.add_row(*r)
    console.print(t)


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


# the options every command that reads a study config shares
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="study YAML")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="override a config value, e.g. --set train.epochs=5 (repeat for several)")]
# a bundle is named --bundle everywhere; --model names a model of a study
BundleOption = Annotated[list[Path] | None, typer.Option(
    "--bundle", "-b", help="an exported bundle, folder or .zip (repeat for several)")]
OldModelOption = Annotated[list[Path] | None, typer.Option("--model", hidden=True)]


def study_config(config: Path | None, sets: list[str] | None) -> StudyConfig:
    """The config a command follows: defaults < the file < --set overrides."""
    return load_config(config, list(sets or []))


def bundle_paths(bundles: list[Path] | None, old_model: list[Path] | None) -> list[Path]:
    """The --bundle paths; `--model BUNDLE` (its old name) is refused with the new one: a
    model is a study's, a bundle its export."""
    if old_model:
        fail("--model names a model of a study; give bundles with --bundle "
             f"(e.g. --bundle {old_model[0]})")
    if not bundles:
        fail("give at least one bundle with --bundle (from `posturescreen export`)")
    return list(bundles)


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
