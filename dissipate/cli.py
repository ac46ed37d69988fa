"""The `dissipate` command line: a thin typer layer over the library's functions.

Bad input ends in one line on stderr and a non-zero exit code (DissipateError.exit_code), never a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Iterable, List, Optional, TypeVar

import pandas as pd
import typer

from . import __version__
from . import bound_check as checks
from . import report
from .analyses import ANALYSES, SEEDS, describe_plan, parse_jobs, parse_options, run_analyses
from ._io import os_error_reason, writable_directory
from .checkpoint import read_checkpoint, recorded_model
from .data import DATASETS, load_data
from .errors import DissipateError, InvalidArgumentError, Notice
from .models import external_source, get_model_entry, model_table, select_models
from .models.external import hub_weights
from .models.remedies import RepConv, reparameterize_model
from .plots import plot_bound_check, plot_probes
from .probe import METRICS, ProbeConfig, ProbeNotice, probe_model, read_probes, save_probe
from .probe import probe as run_probe
from .theory import MonteCarloConfig
from .train import OPTIMIZER_RECIPES, TrainConfig, read_resume_point
from .train import train as run_training

T = TypeVar("T")
TRAIN_DEFAULTS = TrainConfig(model="")  # the defaults that `dissipate train --help` shows
CLI_TO_CONFIG = {"model_args": "model_kwargs"}  # `dissipate train` options named otherwise in TrainConfig
# create_model arguments (and a ViT's image size) that --model-arg cannot set
SET_ELSEWHERE = {"name": "--model", "num_classes": "the data's classes", "in_chans": "the data's channels",
                 "image_size": "the data (see --image-size)", "img_size": "the data (see --image-size)"}


def _recipe(name: str) -> str:
    """A training setting's default under each optimizer: "0.1 with sgd, 0.001 with adamw"."""
    return ", ".join(f"{recipe[name]:g} with {optimizer}" for optimizer, recipe in OPTIMIZER_RECIPES.items())


app = typer.Typer(help="Measure how a network's input survives, layer by layer.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


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
    """{"coder_ratio": 0.5, ...} from ["coder_ratio=0.5", ...]: ints, floats and true/false as such, else strings.
    A key given twice is refused: which of its values was meant is not for us to guess."""
    parsed: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"--model-arg expects KEY=VALUE (e.g. downsample_block=original), got {item!r}")
        if key.strip() in SET_ELSEWHERE:
            raise InvalidArgumentError(f"--model-arg {key.strip()} is not a model option here: it follows "
                                       f"{SET_ELSEWHERE[key.strip()]}")
        if key.strip() in parsed:
            raise InvalidArgumentError(f"--model-arg {key.strip()} is given twice; give each option once")
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
    flops: bool = typer.Option(False, "--flops", help="Count forward FLOPs too (at 32x32 and 224x224 unless "
                                                      "--image-size says; about 0.5 s a model)."),
    image_sizes: List[int] = typer.Option([], "--image-size", help="Image size for FLOPs (repeatable; implies "
                                                                   "--flops)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """The model registry: family, depth and parameters, and with --flops the forward FLOPs."""
    selected = select_models(names or ())
    sizes = image_sizes or ([32, 224] if flops else [])
    with progress(selected, len(selected), "Counting parameters" + (" and FLOPs" if sizes else "")) as names_:
        table = model_table(names_, num_classes=num_classes, in_chans=in_chans, stem=stem, image_sizes=sizes)
    if fmt is OutputFormat.table:
        typer.echo(f"num_classes={num_classes}, in_chans={in_chans}; FLOPs count 2 per multiply-add "
                   "(torch.utils.flop_counter), convs, linears and attention only")
    flops = {column: (lambda v: f"{v / 1e9:.3f}G") for column in table.columns if column.startswith("flops_")}
    emit(table, fmt, {"params": lambda v: f"{v / 1e6:.2f}M", **flops})


# options that the probe and the bound-check share
MODEL_ARGS = typer.Option([], "--model-arg", help="A model option as KEY=VALUE, repeatable (e.g. "
                                                  "downsample_block=original, act=gelu, stem=cifar).")
DATA = typer.Option("synthetic", help=f"One of: {', '.join(DATASETS)}.")
DATA_DIR = typer.Option(None, help="Data dir [default: $DISSIPATE_DATA or ~/.cache/dissipate].")
IMAGE_SIZE = typer.Option(None, help="Resize images to this size [default: the dataset's own; 32 for synthetic].")
BATCH_SIZE = typer.Option(64, help="Images per forward pass (and per minibatch of the CKA).")
DEVICE = typer.Option("auto", help="auto, cpu or cuda.")
FORMAT = typer.Option(OutputFormat.table, "--format", help="Output format on stdout.")
WEIGHTS = typer.Option(None, help="Weights of a torchvision:, timm: or module: model: a state_dict file (read with "
                                  "weights_only), or a torchvision weight name (IMAGENET1K_V1, DEFAULT) whose file is "
                                  "in torch's hub cache [default: at initialisation].")
DEPLOY = typer.Option(False, "--deploy", help="Fuse a RepVGG net's branches into one 3x3 conv per layer first: the "
                                             "net as deployed, truly plain.")
MODEL_HELP = ("Model: a name from `dissipate models`, torchvision:NAME, timm:NAME or module:PACKAGE.MODULE:FACTORY; "
              "a dissipate checkpoint names its own.")


def weights_file(model: str | None, checkpoint: Path | None, weights: str | None) -> Path | None:
    """The file of --checkpoint, or of --weights (a file, or a torchvision weight name found in the hub cache)."""
    if weights is None:
        return checkpoint
    if checkpoint is not None:
        raise InvalidArgumentError("give --checkpoint (a dissipate checkpoint) or --weights, not both")
    if model is None or not external_source(model):
        raise InvalidArgumentError("--weights is for torchvision:, timm: and module: models; dissipate's own take "
                                   "--checkpoint")
    return Path(weights) if Path(weights).is_file() else hub_weights(model, weights)


def load_model_and_data(model: str | None, model_args: Iterable[str], checkpoint: Path | None, data: str,
                        data_dir: Path | None, image_size: int | None, num_images: int, seed: int,
                        deploy: bool = False):
    """(model, ImageData) for a probe: the data first (shaped by the checkpoint's channels, and a ViT's image size),
    then the model shaped for it. `model` may be omitted for a dissipate checkpoint, which names its own. `deploy`
    fuses a RepVGG net's branches into one conv per layer, as it is deployed."""
    saved = read_checkpoint(checkpoint) if checkpoint else None
    if model is None:  # the checkpoint's own, which may not be a `module:` factory: only the user's name runs code
        if saved is None or saved["format"] is None:
            raise InvalidArgumentError("name a model with --model (or give a dissipate checkpoint, which names its "
                                       "own)")
        model = recorded_model(saved, str(checkpoint))
    options = parse_model_args(model_args)
    if not external_source(model):
        get_model_entry(model)  # an unknown name fails here, with suggestions, before any data is loaded
    if image_size is None and saved and saved["format"] is not None:
        image_size = saved["model_kwargs"].get("img_size")  # a ViT takes the size it was trained at
    images = load_data(data, image_size=image_size, in_chans=saved.get("in_chans") if saved else None,
                       length=num_images, root=data_dir, seed=seed)
    net = probe_model(model, images, saved, str(checkpoint), seed, **options)
    if deploy:
        if not any(isinstance(m, RepConv) for m in net.modules()):
            raise InvalidArgumentError(f"--deploy fuses a RepVGG net's branches, and {net.spec.name} has none")
        if saved is None:
            raise InvalidArgumentError("--deploy folds a trained RepVGG net's BN statistics into its convs; give its "
                                       "--checkpoint (at initialisation it has none to fold)")
        reparameterize_model(net)
    return net, images


@app.command()
def probe(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    model_args: List[str] = MODEL_ARGS,
    checkpoint: Optional[Path] = typer.Option(None, help="A dissipate checkpoint, or a bare state_dict of --model; "
                                                         "without one the model is probed at initialisation."),
    weights: Optional[str] = WEIGHTS,
    data: str = DATA,
    data_dir: Optional[Path] = DATA_DIR,
    image_size: Optional[int] = IMAGE_SIZE,
    num_images: int = typer.Option(256, help="Probe images (half fit the linear read-out, half score it)."),
    batch_size: int = BATCH_SIZE,
    metrics: List[str] = typer.Option(list(METRICS), "--metrics", help="Metric families, comma-separated or "
                                                                       "repeated."),
    device: str = DEVICE,
    deploy: bool = DEPLOY,
    out: Path = typer.Option(Path("probe-out"), help="Directory for probe.csv, probe.json and probe.png."),
    fmt: OutputFormat = FORMAT,
    seed: int = typer.Option(0, help="The initial weights (without --checkpoint), which images of a real dataset, "
                                     "and the DISTS noise reference."),
) -> None:
    """How much of the input survives at every activation site: one row per site, printed and saved in --out."""
    checkpoint = weights_file(model, checkpoint, weights)
    config = ProbeConfig(metrics=tuple(metrics), num_images=num_images, batch_size=batch_size, device=device,
                         seed=seed, calibrate_bn=checkpoint is None)
    writable_directory(out, "--out")  # before the probe's minutes, not after
    net, images = load_model_and_data(model, model_args, checkpoint, data, data_dir, image_size, num_images, seed,
                                      deploy)

    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always", ProbeNotice)
        frame = run_probe(net, images, config, progress=progress)
    for notice in {str(n.message) for n in notices if issubclass(n.category, ProbeNotice)}:
        typer.echo(f"note: {notice}", err=True)
    save_probe(frame, out, title=f"{net.spec.name} ({'checkpoint' if checkpoint else 'init'}) on {images.name}",
               model_kwargs=net.spec.kwargs, checkpoint=str(checkpoint) if checkpoint else None,
               image_size=images.image_size)

    shown = report.view(frame) if fmt is OutputFormat.table else frame
    emit(shown, fmt, {c: _number for c in shown.columns if shown[c].dtype.kind == "f"})
    if fmt is OutputFormat.table:
        typer.echo("\n".join(["", *report.legend(shown), "", *report.summary(frame, net.spec.name),
                               f"all columns in {out / 'probe.csv'}; figure in {out / 'probe.png'}"]))


@app.command("bound-check")
def bound_check(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Check this model's sites (level 2, at "
                                                                    "initialisation); without it, the Monte Carlo "
                                                                    "level. " + MODEL_HELP),
    model_args: List[str] = MODEL_ARGS,
    checkpoint: Optional[Path] = typer.Option(None, help="Check a trained network (level 3): its violations are "
                                                         "findings and leave the exit code at 0."),
    weights: Optional[str] = WEIGHTS,
    data: str = DATA,
    data_dir: Optional[Path] = DATA_DIR,
    image_size: Optional[int] = IMAGE_SIZE,
    num_images: int = typer.Option(256, help="Images the sites are measured on."),
    batch_size: int = BATCH_SIZE,
    device: str = DEVICE,
    deploy: bool = DEPLOY,
    samples: int = typer.Option(1000, help="Monte Carlo: independent draws of input and weights per layer."),
    width: List[int] = typer.Option([256], help="Monte Carlo: layer width, repeatable."),
    seed: int = typer.Option(0, help="The initial weights, which images of a real dataset, the Monte Carlo draws."),
    out: Optional[Path] = typer.Option(None, help="Write a figure of surviving fraction against the bound per site "
                                                  "(.png or .pdf)."),
    fmt: OutputFormat = FORMAT,
) -> None:
    """Theorem 3.2's moments and Theorem 3.3's bound against measurement. Exit 0 when every bound that must hold
    holds (Monte Carlo, and networks at initialisation), 1 when one does not, 2 on bad usage."""
    checkpoint = weights_file(model, checkpoint, weights)
    if out is not None:
        if out.suffix.lower() not in (".png", ".pdf"):
            raise InvalidArgumentError(f"--out names the figure to write, a .png or .pdf file, got {out}")
        writable_directory(out.parent, "the directory of --out")
    if model is None and checkpoint is None:
        frame = checks.check_monte_carlo(MonteCarloConfig(widths=tuple(width), samples=samples, seed=seed))
        title = f"Monte Carlo: {samples} draws per layer"
    else:
        config = ProbeConfig(num_images=num_images, batch_size=batch_size, device=device, seed=seed,
                             calibrate_bn=checkpoint is None)
        net, images = load_model_and_data(model, model_args, checkpoint, data, data_dir, image_size, num_images, seed,
                                          deploy)
        frame = checks.check_network(net, images, config, progress=progress)  # the level: what the net is
        title = f"{net.spec.name} ({frame['level'].iloc[0]}) on {images.name}"
    if out is not None:
        plot_bound_check(frame, out, title)

    shown = frame
    reasons = checks.inapplicable(frame)
    inapplicable = reasons.ne("")
    if fmt is OutputFormat.table:
        verdicts = checks.verdicts(frame).astype(object).fillna("n/a").mask(inapplicable, "not applicable")
        shown = frame[list(checks.COLUMNS)].assign(holds=verdicts)
    emit(shown, fmt, {c: _number for c in shown.columns if shown[c].dtype.kind == "f"})
    if fmt is OutputFormat.table:
        typer.echo("\n".join(["", *checks.legend()]))
    failed, found = checks.failures(frame), checks.findings(frame)

    def measured(row) -> str:
        return (f"surviving {row.surv_meas:.3f}, bound {row.surv_bound:.3f}, mean {row.mu_meas:.4g} vs "
                f"{row.mu_pred:.4g} predicted, variance {row.var_meas:.4g} vs {row.var_pred:.4g}")

    for row in found.itertuples():
        typer.echo(f"finding: at {row.site} {measured(row)} (the trained network no longer meets the theorems' "
                   "assumptions)", err=True)
    for row in failed.itertuples():
        typer.echo(f"FAILED: {row.model} {row.site} ({row.level}): {measured(row)}", err=True)
    if "level_reason" in frame.attrs:
        typer.echo(f"level {frame['level'].iloc[0]}: {frame.attrs['level_reason']}", err=True)
    predicted = frame[checks.verdicts(frame).notna()]
    must_hold, trained = predicted["level"].isin(checks.MUST_HOLD).sum(), (predicted["level"] == "trained").sum()
    for reason, rows in frame[inapplicable].groupby(reasons[inapplicable], sort=False):
        typer.echo(f"{len(rows)} sites ({', '.join(rows['kind'].unique())}) are not applicable: {reason}", err=True)
    if len(predicted) + inapplicable.sum() < len(frame):
        typer.echo(f"{len(frame) - len(predicted) - inapplicable.sum()} sites have no prediction (their blocks "
                   "declare no parts, as a plain layer's do)", err=True)
    if must_hold:
        typer.echo(f"{len(failed)} of {must_hold} bounds that must hold do not" if len(failed) else
                   f"all {must_hold} bounds that must hold hold", err=True)
    if trained:
        typer.echo(f"{len(found)} of {trained} bounds on the trained network do not hold (findings, not errors)"
                   if len(found) else f"all {trained} bounds on the trained network hold", err=True)
    if len(failed):
        raise typer.Exit(code=1)


@app.command()
def train(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (see `dissipate models`); with "
                                                                    "--resume, the run's own."),
    model_args: List[str] = MODEL_ARGS,
    data: str = typer.Option(TRAIN_DEFAULTS.data, help=f"One of: {', '.join(DATASETS)}."),
    data_dir: Optional[Path] = DATA_DIR,
    image_size: Optional[int] = IMAGE_SIZE,
    epochs: int = typer.Option(TRAIN_DEFAULTS.epochs, help="Epochs."),
    batch_size: int = typer.Option(TRAIN_DEFAULTS.batch_size, help="Global batch size (split over the processes of "
                                                                   "a torchrun job)."),
    optimizer: Optional[str] = typer.Option(None, help="sgd (nesterov) or adamw [default: the family's: adamw for "
                                                       "the transformers and tatN, isoN, sgd otherwise]."),
    lr: Optional[float] = typer.Option(None, help=f"Peak learning rate [default: {_recipe('lr')}]."),
    momentum: float = typer.Option(TRAIN_DEFAULTS.momentum, help="SGD momentum, or AdamW's beta1."),
    wd: Optional[float] = typer.Option(None, help=f"Weight decay [default: {_recipe('wd')}; AdamW's on weight "
                                                  "matrices only]."),
    warmup: Optional[float] = typer.Option(None, help="Epochs of linear warm-up before the cosine decay, at most half "
                                                      f"the run [default: {_recipe('warmup')}]."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the loss [default: "
                                                               f"{_recipe('label_smoothing')}]."),
    augment: bool = typer.Option(TRAIN_DEFAULTS.augment, help="Random crop (padding 4) and horizontal flip."),
    subset: Optional[int] = typer.Option(None, help="Train on this many training images (a seeded random choice)."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on this many test images [default: all]."),
    seed: int = typer.Option(TRAIN_DEFAULTS.seed, help="Initial weights, data order and augmentation."),
    out: Optional[Path] = typer.Option(None, help="Run directory: log.csv, latest.pt, best.pt [default: "
                                                  "runs/MODEL-DATA]."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run that --out already holds."),
    device: str = DEVICE,
    amp: bool = typer.Option(TRAIN_DEFAULTS.amp, help="bf16 autocast on CUDA."),
    channels_last: bool = typer.Option(TRAIN_DEFAULTS.channels_last, "--channels-last", help="channels_last memory "
                                                                                             "format."),
    compile: bool = typer.Option(TRAIN_DEFAULTS.compile, "--compile", help="torch.compile the model."),
    workers: int = typer.Option(TRAIN_DEFAULTS.workers, help="Data-loader workers for folders and ImageNet."),
    probe_every: int = typer.Option(TRAIN_DEFAULTS.probe_every, show_default=False,
                                    help="Probe fixed test images at epoch 0 and every K epochs, into probes.csv "
                                         "[default: 0, never]."),
    probe_images: int = typer.Option(TRAIN_DEFAULTS.probe_images, help="Test images of each probe."),
    probe_metrics: str = typer.Option(TRAIN_DEFAULTS.probe_metrics, help="Metric families of each probe, "
                                                                         "comma-separated."),
) -> None:
    """Train a plain, residual or PNNH net (CNN or transformer), each family by its standard recipe unless told
    otherwise: one log row per epoch (log.csv) and atomic checkpoints in --out.
    Several GPUs or machines: torchrun --nproc_per_node=N -m dissipate train ..."""
    if out is None:
        if model is None:
            raise InvalidArgumentError("name the model with --model, or the run to resume with --out")
        out = Path("runs") / f"{model.replace(':', '-')}-{data.partition(':')[0]}"
    if model is None:
        if not resume:
            raise InvalidArgumentError("name the model to train with --model")
        model = recorded_model(read_resume_point(out), str(out / "latest.pt"))
    if not external_source(model):
        get_model_entry(model)  # an unknown name fails here, with suggestions, before any data is loaded
    config = TrainConfig(model=model, data=data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         momentum=momentum, wd=wd,
                         warmup=warmup, label_smoothing=label_smoothing, augment=augment, subset=subset,
                         test_subset=test_subset, image_size=image_size, model_kwargs=parse_model_args(model_args),
                         data_dir=str(data_dir) if data_dir else None, seed=seed, device=device, amp=amp,
                         channels_last=channels_last, compile=compile, workers=workers, probe_every=probe_every,
                         probe_images=probe_images, probe_metrics=probe_metrics)

    def show(row: dict) -> None:
        typer.echo(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                   f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}  lr {row['lr']:.4g}  "
                   f"{row['images_per_s']:.0f} img/s  {row['peak_mem_mb']:.0f} MiB  {row['epoch_s']:.1f} s")

    given = {CLI_TO_CONFIG.get(name, name) for name in ctx.params  # what the user typed, defaults or not
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    history = run_training(config, out, resume=resume, progress=progress, on_epoch=show, overwrite=overwrite,
                           given=given)
    if history and int(os.environ.get("RANK", "0")) == 0:
        best = max(history, key=lambda row: row["test_acc"])
        typer.echo(f"best test accuracy {best['test_acc']:.4f} at epoch {best['epoch']}; log and checkpoints in {out}")


@app.command()
def plot(
    probes: List[Path] = typer.Argument(..., help="probe.csv files (dissipate probe) or probes.csv files (dissipate "
                                                  "train --probe-every: one line per epoch)."),
    out: Path = typer.Option(Path("plot-out") / "probes.png", help="The figure to write (.png or .pdf); its folder "
                                                                   "is made if needed."),
) -> None:
    """Overlay several probes on the probe figure's axes, one colour each: models, checkpoints or epochs."""
    if out.suffix.lower() not in (".png", ".pdf"):
        raise InvalidArgumentError(f"--out names the figure to write, a .png or .pdf file, got {out}")
    writable_directory(out.parent, "the directory of --out")
    series = read_probes(probes)
    plot_probes(series, out)
    typer.echo(f"{len(series)} probes ({'; '.join(series)}) drawn in {out}")


@app.command()
def figures(
    preset: str = typer.Option("cpu", help="smoke (seconds), cpu (about 65 minutes on 2 cores), gpu (about ten "
                                           "minutes on one GPU with --jobs auto) or paper (a GPU, hours)."),
    only: List[str] = typer.Option([], "--only", help="Analyses to run, comma-separated or repeated [default: all]: "
                                                      + ", ".join(ANALYSES) + "."),
    out: Path = typer.Option(Path("figures-out"), help="Folder for the figures and CSVs; the cache of runs and "
                                                       "probes goes in OUT/cache. The repository's committed figures "
                                                       "are regenerated with --out figures."),
    force: bool = typer.Option(False, "--force", help="Recompute instead of reusing cached runs, probes and results."),
    pdf: bool = typer.Option(False, "--pdf", help="Write each figure as PDF too."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (runs, epochs, probes, outputs) and exit."),
    jobs: str = typer.Option("1", help="Training runs at once: a number, or auto (on CUDA, as many per GPU as the "
                                       "first run's peak memory allows, over every visible GPU; one on a CPU)."),
    launcher: str = typer.Option("processes", help="processes (here, --jobs at once), slurm (one Slurm job per run, "
                                                   "through submitit; the cache must be on a shared disk) or local "
                                                   "(submitit's local executor, to try the Slurm path)."),
    slurm: List[str] = typer.Option([], "--slurm", help="A submitit parameter for --launcher slurm, KEY=VALUE, "
                                                        "repeatable (slurm_partition=gpu, timeout_min=120, "
                                                        "gpus_per_node=1)."),
    seeds: Optional[int] = typer.Option(None, help="Seeds of each comparison that decides a claim (claims.md); the "
                                                   "other runs take seed 0 alone [default: "
                                                   + ", ".join(f"{p} {n}" for p, n in SEEDS.items()) + "]."),
    device: str = DEVICE,
    data_dir: Optional[Path] = DATA_DIR,
) -> None:
    """Run the analyses (reusing cached results in --out) and render the figure set (docs/design.md, section 6)."""
    formats = ("png", "pdf") if pdf else ("png",)
    if dry_run:
        typer.echo("\n".join(describe_plan(only, preset, out, formats, seeds)))
        return
    reports = run_analyses(only, preset, out, force=force, formats=formats, device=device,
                           data_dir=str(data_dir) if data_dir else None, progress=progress,
                           say=lambda message: typer.echo(message, err=True), jobs=parse_jobs(jobs),
                           launcher=launcher, launcher_options=parse_options(slurm), seeds=seeds)
    typer.echo(f"preset {preset}: {len(reports)} analyses, written to {out}/")
    for analysis in reports:
        source = "from the cache" if analysis.cached else f"computed in {analysis.seconds:.0f} s"
        typer.echo(f"  {analysis.name} ({source}): {', '.join(p.name for p in analysis.paths)}")
        for line in analysis.headline:
            typer.echo(f"      {line}")


class Interrupted(BaseException):
    """Ctrl-C (SIGINT) or SIGTERM (`signum`), raised past typer, which turns a KeyboardInterrupt into a silent exit
    130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOPPED_BY = (signal.SIGINT, signal.SIGTERM)  # handled alike: SIGTERM is how kill, Slurm and systemd stop a command


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _show_notice(message, category, filename, lineno, file=None, line=None, _shown=warnings.showwarning) -> None:
    """A Notice as one "note:" line on stderr; any other warning as Python shows it."""
    if issubclass(category, Notice):
        typer.echo(f"note: {message}", err=True)
    else:
        _shown(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> None:
    """Run a command (`dissipate.__main__.run`, the `dissipate` script, calls this), turning a DissipateError into one
    line and an exit code, and SIGINT or SIGTERM into a line and exit 128 + the signal's number."""
    in_main_thread = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOPPED_BY} if in_main_thread else {}
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`): the output would be lost without a word
            raise InvalidArgumentError("stdout is closed, so the output would be lost; redirect it to a file (or to "
                                       "/dev/null to discard it)")
        with warnings.catch_warnings():
            warnings.showwarning = _show_notice
            app(args=argv, prog_name="dissipate")
    except DissipateError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except MemoryError as error:
        typer.echo(f"error: out of memory ({str(error).splitlines()[0][:100] if str(error) else 'MemoryError'}); "
                   "use fewer or smaller images, a smaller --batch-size or a smaller model", err=True)
        sys.exit(1)
    except OSError as error:  # the machine's, not the input's: a disk that filled, a file that vanished
        culprit = error.filename
        if culprit is None:  # typer.echo's writes to stdout name no file: a full disk behind `> FILE`, a closed pipe
            frame = list(traceback.walk_tb(error.__traceback__))[-1][0]  # where it was raised
            culprit = "stdout" if frame.f_code is typer.echo.__code__ and not frame.f_locals.get("err") else "a file"
        typer.echo(f"error: cannot write or read {culprit}: {os_error_reason(error)}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted) as error:
        signum = getattr(error, "signum", signal.SIGINT)
        if in_main_thread:
            for stop in STOPPED_BY:  # a second signal does not cut this message short
                signal.signal(stop, signal.SIG_IGN)
        typer.echo(f"{'interrupted' if signum == signal.SIGINT else 'terminated'}; files already written are complete "
                   "(a training run resumes with --resume)", err=True)
        sys.exit(128 + signum)  # what a shell reports for a command killed by the signal: 130 (SIGINT), 143 (SIGTERM)
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler that C code installed, which Python cannot put back
                signal.signal(signum, handler)
