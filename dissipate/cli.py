"""The `dissipate` command line: a thin typer layer over the library's functions.

Bad input ends in one line on stderr and a non-zero exit code (DissipateError.exit_code), never a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import sys
from typing import Callable, ContextManager, Iterable, List, Optional, Sequence, TypeVar

import pandas as pd
import typer

from . import __version__
from .errors import DissipateError
from .models import model_table, select_models

T = TypeVar("T")
app = typer.Typer(help="Measure how a network's input survives, layer by layer.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


class OutputFormat(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


def emit(frame: pd.DataFrame, fmt: OutputFormat, formatters: dict[str, Callable] | None = None) -> None:
    """Print `frame` as a readable table (with `formatters` per column), CSV or JSON records."""
    if fmt is OutputFormat.csv:
        typer.echo(frame.to_csv(index=False), nl=False)
    elif fmt is OutputFormat.json:
        typer.echo(frame.to_json(orient="records", indent=2))
    else:
        typer.echo(frame.to_string(index=False, formatters=formatters))


def progress(items: Sequence[T], label: str) -> ContextManager[Iterable[T]]:
    """A progress bar over `items` on stderr where it is a terminal; the bare items where it is not (pipes, logs)."""
    if sys.stderr.isatty():
        return typer.progressbar(items, label=label, file=sys.stderr)
    return contextlib.nullcontext(items)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"dissipate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Measure how a network's input survives, layer by layer."""


@app.command()
def models(
    names: Optional[List[str]] = typer.Argument(None, help="Model names or globs (e.g. 'pnnh*'); all when omitted."),
    num_classes: int = typer.Option(10, help="Classifier outputs."),
    in_chans: int = typer.Option(3, help="Input image channels."),
    stem: Optional[str] = typer.Option(None, help="cifar or imagenet; default: each family's own."),
    image_sizes: List[int] = typer.Option([32, 224], "--image-size", help="Image size for FLOPs (repeatable)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """The model registry: family, depth, parameters and forward FLOPs (at 32x32 and 224x224 by default)."""
    selected = select_models(names or ())
    with progress(selected, "Counting parameters and FLOPs") as names_:
        table = model_table(names_, num_classes=num_classes, in_chans=in_chans, stem=stem, image_sizes=image_sizes)
    if fmt is OutputFormat.table:
        typer.echo(f"num_classes={num_classes}, in_chans={in_chans}; FLOPs count 2 per multiply-add "
                   "(torch.utils.flop_counter), convs and linears only")
    flops = {column: (lambda v: f"{v / 1e9:.3f}G") for column in table.columns if column.startswith("flops_")}
    emit(table, fmt, {"params": lambda v: f"{v / 1e6:.2f}M", **flops})


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `dissipate` script: run a command, turning a DissipateError into one line and an exit code."""
    try:
        app(args=argv, prog_name="dissipate")
    except DissipateError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
