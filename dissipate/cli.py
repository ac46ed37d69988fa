"""The `dissipate` command line: a thin typer layer over the library's functions.

Bad input ends in one line on stderr and a non-zero exit code (DissipateError.exit_code), never a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import math
import sys
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Iterable, List, Optional, TypeVar

import pandas as pd
import typer

from . import __version__
from .checkpoint import read_checkpoint
from .data import DATASETS, load_data
from .errors import DissipateError, InvalidArgumentError
from .models import get_model_entry, model_table, select_models
from .probe import METRICS, ProbeConfig, ProbeNotice, probe_model, save_probe
from .probe import probe as run_probe

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
        typer.echo(frame.to_string(index=False, formatters=formatters, na_rep="n/a"))


def progress(items: Iterable[T], length: int | None = None, label: str = "") -> ContextManager[Iterable[T]]:
    """A progress bar over `items` on stderr where it is a terminal; the bare items where it is not (pipes, logs)."""
    if sys.stderr.isatty():
        return typer.progressbar(items, length=length, label=label, file=sys.stderr)
    return contextlib.nullcontext(items)


def parse_model_args(items: Iterable[str]) -> dict[str, object]:
    """{"coder_ratio": 0.5, ...} from ["coder_ratio=0.5", ...]: ints, floats and true/false as such, else strings."""
    parsed: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"--model-arg expects KEY=VALUE (e.g. downsample_block=original), got {item!r}")
        value: object = {"true": True, "false": False}.get(text.lower(), text)
        for number in (int, float):
            try:
                value = number(text)
                break
            except ValueError:
                pass
        parsed[key.strip()] = value
    return parsed


def _number(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


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
    with progress(selected, len(selected), "Counting parameters and FLOPs") as names_:
        table = model_table(names_, num_classes=num_classes, in_chans=in_chans, stem=stem, image_sizes=image_sizes)
    if fmt is OutputFormat.table:
        typer.echo(f"num_classes={num_classes}, in_chans={in_chans}; FLOPs count 2 per multiply-add "
                   "(torch.utils.flop_counter), convs and linears only")
    flops = {column: (lambda v: f"{v / 1e9:.3f}G") for column in table.columns if column.startswith("flops_")}
    emit(table, fmt, {"params": lambda v: f"{v / 1e6:.2f}M", **flops})


PROBE_TABLE_COLUMNS = ("site", "depth", "kind", "channels", "surviving", "dead", "erank", "srank", "cka_input",
                       "recon_r2", "ssim_input", "dists_input")


@app.command()
def probe(
    model: str = typer.Option(..., "--model", "-m", help="Model name (see `dissipate models`)."),
    model_args: List[str] = typer.Option([], "--model-arg", help="A model option as KEY=VALUE, repeatable (e.g. "
                                                                 "downsample_block=original, act=gelu, stem=cifar)."),
    checkpoint: Optional[Path] = typer.Option(None, help="A dissipate checkpoint, or a bare state_dict of --model; "
                                                         "without one the model is probed at initialisation."),
    data: str = typer.Option("synthetic", help=f"One of: {', '.join(DATASETS)}."),
    data_dir: Optional[Path] = typer.Option(None, help="Data dir [default: $DISSIPATE_DATA or ~/.cache/dissipate]."),
    image_size: Optional[int] = typer.Option(None, help="Resize images to this size [default: the dataset's own; "
                                                        "32 for synthetic]."),
    num_images: int = typer.Option(256, help="Probe images (half fit the linear read-out, half score it)."),
    batch_size: int = typer.Option(64, help="Images per forward pass (and per minibatch of the CKA)."),
    metrics: List[str] = typer.Option(list(METRICS), "--metrics", help="Metric families, comma-separated or "
                                                                       "repeated."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    out: Path = typer.Option(Path("probe-out"), help="Directory for probe.csv, probe.json and probe.png."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format on stdout."),
    seed: int = typer.Option(0, help="The initial weights (without --checkpoint), which images of a real dataset, "
                                     "and the DISTS noise reference."),
) -> None:
    """How much of the input survives at every activation site: one row per site, printed and saved in --out."""
    config = ProbeConfig(metrics=tuple(metrics), num_images=num_images, batch_size=batch_size, device=device,
                         seed=seed, calibrate_bn=checkpoint is None)
    options = parse_model_args(model_args)
    get_model_entry(model)  # an unknown name fails here, with suggestions, before any data is loaded
    saved = read_checkpoint(checkpoint) if checkpoint else None
    images = load_data(data, image_size=image_size, in_chans=saved.get("in_chans") if saved else None,
                       length=num_images, root=data_dir, seed=seed)
    net = probe_model(model, images, saved, str(checkpoint), seed, **options)

    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always", ProbeNotice)
        frame = run_probe(net, images, config, progress=progress)
    for notice in {str(n.message) for n in notices if issubclass(n.category, ProbeNotice)}:
        typer.echo(f"note: {notice}", err=True)
    save_probe(frame, out, title=f"{model} ({'checkpoint' if checkpoint else 'init'}) on {images.name}",
               model_kwargs=net.spec.kwargs, checkpoint=str(checkpoint) if checkpoint else None,
               image_size=images.image_size)

    if fmt is OutputFormat.table:
        frame = frame[[c for c in PROBE_TABLE_COLUMNS if c in frame]]
    numeric = {c: _number for c in frame.columns if frame[c].dtype.kind == "f"}
    emit(frame, fmt, numeric)
    if fmt is OutputFormat.table:
        typer.echo(f"all columns in {out / 'probe.csv'}; figure in {out / 'probe.png'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `dissipate` script: run a command, turning a DissipateError into one line and an exit code."""
    try:
        app(args=argv, prog_name="dissipate")
    except DissipateError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
