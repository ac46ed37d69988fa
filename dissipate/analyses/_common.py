"""What the analyses share: each preset's training and probing recipe, and a Context that trains, probes and
computes each result once, caching it under the output folder so that a second `dissipate figures` reuses it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .._io import atomic_write, read_table, writable_directory
from ..checkpoint import read_checkpoint
from ..data import SYNTHETIC_VERSION, is_synthetic, load_data
from ..models import TRANSFORMER_FAMILIES, count_flops, create_model, get_model_entry, model_options
from ..errors import InvalidArgumentError, TrainingDiverged
from ..plots import FAMILY_LABELS
from ..probe import ProbeConfig, ProbeNotice, probe, probe_model, resolve_device
from ..train import (LOG_COLUMNS, OPTIMIZER_RECIPES, PROBE_FIELDS, PROBES_FILE, RUNTIME_FIELDS, TrainConfig,
                     family_optimizer, train)

PRESETS = ("smoke", "cpu", "gpu", "paper")
COMPARED = ("plain", "resnet", "pnnh")  # the families every figure compares
TRANSFORMERS = TRANSFORMER_FAMILIES  # and their transformer counterparts
COMPARED_DEPTHS = (20, 56, 110)  # the CIFAR-family depths the figures compare (He et al.'s, minus 32 and 44)
# a remedy's learning rate as a multiple of its optimizer's in the preset (SGD: the preset's lr; AdamW: the recipe's
# 1e-3), by family or, where a depth needs its own, by model: the best of a sweep over 5 epochs of 2048 Fashion-MNIST
# images where it beat that rate by more than 2 points (benchmarks/RESULTS.md, "The remedies' learning rates"). At
# depth 20 tat and repvgg train best at theirs, and iso's 3x, best at depth 20, collapsed iso56 to chance in epoch 2;
# tat56 trains best at a tenth of tat20's rate (55.6% against 23.7%)
RATE_SCALE = {"ll": 0.5, "dirac": 2.0, "tat56": 0.1}
# --seeds by default: how many seeds each comparison that decides a claim is run with (the others take seed 0 alone)
SEEDS = {"smoke": 3, "cpu": 3, "gpu": 3, "paper": 3}


@dataclass(frozen=True)
class Recipe:
    """How a preset trains and probes. Every analysis of a preset uses the same recipe, so they share its runs."""

    data: str  # the trained figures: what the nets train on, and whose test images probe them
    epochs: int
    batch_size: int
    lr: float
    warmup: float  # epochs
    subset: int | None  # training images (None: all)
    test_subset: int | None  # test images scored after each epoch (None: all)
    image_size: int | None = None  # training images resized to this (None: the dataset's own)
    channels_last: bool = False
    init_data: str = "synthetic"  # the at-initialisation figures
    init_image_size: int = 32
    probe_images: int = 256
    probe_metrics: tuple[str, ...] = ("survival", "moments", "rank", "cka", "recon", "theory")
    probe_every: int = 0  # epochs between the probes that a run takes as it trains (dissipation through training)
    train_probe_images: int = 128
    train_probe_metrics: str = "survival,rank,cka"

    def describe(self, data: str | None = None, optimizer: str | None = None, lr: float | None = None) -> str:
        """The recipe in words: a CNN's (SGD at this lr), a transformer's (`optimizer` "adamw": its own recipe), or
        both (`optimizer` None); `lr`: a run's own rate, where it is not the recipe's (RATE_SCALE)."""
        images = f"{self.subset} images" if self.subset else "all images"
        adamw = OPTIMIZER_RECIPES["adamw"]
        schedules = {"sgd": f"SGD lr {lr or self.lr:g} (warm-up {self.warmup} epochs, cosine)",
                     "adamw": f"AdamW lr {lr or adamw['lr']:g} (warm-up {adamw['warmup']:g} epochs or half the run, cosine, "
                              f"label smoothing {adamw['label_smoothing']:g})"}
        schedule = (schedules[optimizer] if optimizer else
                    f"{schedules['sgd']}; transformers {schedules['adamw']}")
        return f"{data or self.data}, {images}, {self.epochs} epochs, batch {self.batch_size}, {schedule}"


RECIPES = {
    # seconds: two CIFAR depths on tiny synthetic images
    "smoke": Recipe(data="synthetic", epochs=2, batch_size=32, lr=0.05, warmup=0.5, subset=256, test_subset=128,
                    image_size=16, probe_images=64, probe_every=1, train_probe_images=32),
    # about 65 minutes on two CPU cores: 5 short epochs of Fashion-MNIST (160 SGD steps of 64 images) at the CIFAR
    # recipe's lr 0.1 (the ViTs by their own recipe). The first PNNH diverged here at 0.05, which had lowered this
    # preset to 0.02 (docs/design.md)
    "cpu": Recipe(data="fashion-mnist", epochs=5, batch_size=64, lr=0.1, warmup=1.0, subset=2048, test_subset=1000,
                  probe_every=1),
    # the cpu preset's nets on all of Fashion-MNIST, to convergence on one GPU (resnet20 reached 93.1% in 10 epochs at
    # batch 512, lr 0.2 on an H200); about ten minutes on one H100 with --jobs auto (estimated: --dry-run)
    "gpu": Recipe(data="fashion-mnist", epochs=10, batch_size=512, lr=0.2, warmup=1.0, subset=None, test_subset=None,
                  channels_last=True, probe_images=1024, probe_every=1, train_probe_images=512),
    # He et al.'s CIFAR recipe, for a GPU
    "paper": Recipe(data="cifar10", epochs=200, batch_size=128, lr=0.1, warmup=1.0, subset=None, test_subset=None,
                    channels_last=True, probe_images=1024, probe_metrics=("survival", "moments", "rank", "cka",
                                                                           "recon", "dists", "theory"),
                    probe_every=10, train_probe_images=512),
}


# What the GPU presets' plans estimate their time from (--dry-run). Measured on an NVIDIA H200 (2026-11): resnet20
# trained on Fashion-MNIST at batch 512 at about 50,000 images/s as one run, and four small runs at once gave 2.85x
# one run's images/s. Other nets are scaled by their forward FLOPs: a rough guide, since small nets are bound by
# kernel launches and large ones use the GPU better.
REFERENCE_RUN = ("resnet20", 28, 1, 50_000.0)  # model, px, channels, training images/s of one run
CONCURRENT_GAIN = 2.85  # aggregate images/s of several runs at once (--jobs auto) over one run's
DATA_SHAPES = {"fashion-mnist": (60_000, 10_000, 28, 1), "cifar10": (50_000, 10_000, 32, 3),
               "cifar100": (50_000, 10_000, 32, 3)}  # training images, test images, px, channels


@functools.lru_cache(maxsize=None)
def _flops(model: str, image_size: int, in_chans: int, options: tuple = ()) -> int:
    with torch.device("meta"):
        net = create_model(model, in_chans=in_chans, image_size=image_size, **dict(options))
    return count_flops(net, image_size, in_chans)


def gpu_seconds(runs: list[tuple["Variant", str]], recipe: Recipe) -> float:
    """Estimated GPU seconds to train `runs` (variant, dataset) one after another by `recipe`: each epoch's training
    images at REFERENCE_RUN's rate scaled by the net's FLOPs, plus its test images at three times that (a forward
    pass only). Probes and figures are not counted."""
    model, size, chans, rate = REFERENCE_RUN
    reference = _flops(model, size, chans)
    total = 0.0
    for variant, data in runs:
        train_images, test_images, px, channels = DATA_SHAPES[data]
        px = recipe.image_size or px
        per_image = _flops(variant.model, px, channels, tuple(sorted(variant.options.items()))) / reference / rate
        images = (recipe.subset or train_images) + (recipe.test_subset or test_images) / 3
        total += recipe.epochs * images * per_image
    return total


@dataclass(frozen=True)
class Variant:
    """A model and its options, e.g. pnnh20 with coder_ratio=0.5, and the seed of its weights (and of its training
    run's data order)."""

    model: str
    options: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def label(self) -> str:
        """The net, whatever its seed: what the figures group the seeds of."""
        short = {"coder_ratio": "k/C", "learner_ratio": "learner"}
        return " ".join([self.model, *(f"{short.get(k, k)}={v}" for k, v in sorted(self.options.items()))])

    @property
    def run_label(self) -> str:
        """The label and, past seed 0, the seed: what names one run."""
        return self.label + (f" seed={self.seed}" if self.seed else "")

    @property
    def family(self) -> str:
        return get_model_entry(self.model).family

    @property
    def depth(self) -> int:
        return get_model_entry(self.model).depth


def variants(*models: str) -> tuple[Variant, ...]:
    return tuple(Variant(model) for model in models)


def seeded(variants: tuple[Variant, ...], seeds: int) -> tuple[Variant, ...]:
    """Each variant at seeds 0 to `seeds` - 1, in that order."""
    return tuple(dataclasses.replace(v, seed=seed) for v in variants for seed in range(seeds))


def family_models(families: tuple[str, ...], depths: tuple[int, ...]) -> tuple[Variant, ...]:
    """plain20, resnet20, pnnh20, plain56, ...: each depth's families side by side."""
    return variants(*(f"{family}{depth}" for depth in depths for family in families))


def block_outputs(frame: pd.DataFrame, by: tuple[str, ...] = ("state", "model")) -> pd.Series:
    """Whether each site of a probe table is its block's output: the last site under its parent module, within each
    probe (the rows of one value of the `by` columns): layer1.0.act2 of layer1.0's act1 and act2, and the stem's
    act1, which has no sibling. Inner sites are
    not comparable with outputs: a PNNH block's inner activation holds the learner's C channels and the code's 2k
    channels, half of them zero, so its rank per channel is 0.47 to 0.67 where its block's output is 0.83 to 0.91
    (pnnh20 at initialisation), and a curve through both zig-zags."""
    parent = frame["site"].str.rpartition(".")[0]
    return ~frame[list(by)].assign(parent=parent).duplicated(keep="last")


def check_seeds(seeds: int | None, preset: str) -> int:
    """`seeds`, or the preset's default (None); a count below 1 is refused."""
    if seeds is None:
        return SEEDS[preset]
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise InvalidArgumentError(f"--seeds must be a whole number of at least 1, not {seeds!r}")
    return seeds


def digest(settings: object) -> str:
    """A short stable hash of `settings` (JSON-able): what names a cached run or probe."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(frame.to_csv(index=False).encode()))


def damaged(path: Path, why: str, redo: Path | None = None) -> InvalidArgumentError:
    """The error for a file of the cache (or a result beside it) that is not what dissipate wrote. Each is written
    whole (atomic_write), so something else changed it: it is named and kept, not silently rebuilt over, since
    whoever changed it may want it; deleting `redo` (the file itself, or its run's directory) or --force redoes it."""
    return InvalidArgumentError(f"{path} is damaged ({why}); delete {redo or path} to compute it again, or "
                                "recompute everything with --force")


def read_cached(path: Path, columns: tuple[str, ...] = (), redo: Path | None = None) -> pd.DataFrame:
    """The CSV at `path`, which dissipate wrote, with `columns` (and its columns within their rules,
    `_io.read_table`); `damaged` when it is not."""
    return read_table(path, columns, lambda why: damaged(path, why, redo))


@dataclass
class Run:
    """A training run of a preset's recipe: its log, its final checkpoint, the epoch it diverged in (if it did, its
    checkpoint is None: the last good epoch is not a trained net), and the probes it took as it trained."""

    log: pd.DataFrame
    checkpoint: Path | None
    diverged: int | None = None
    probes: pd.DataFrame = field(default_factory=pd.DataFrame)


def finished(run: Path, config: TrainConfig) -> bool:
    """Whether the run in `run` is over: all its epochs logged, or recorded as diverged."""
    log = run / "log.csv"
    return (run / "diverged.txt").is_file() or (log.is_file() and len(read_cached(log, LOG_COLUMNS, run))
                                                 >= config.epochs)


def train_run(config: TrainConfig, run: Path) -> str | None:
    """Train `config` into `run`, resuming what is there. A run that diverges is a result too: it is recorded
    (diverged.txt) and kept, not retried; the note that says so is returned."""
    try:
        train(config, run, resume=(run / "latest.pt").is_file())
    except TrainingDiverged as error:
        run.mkdir(parents=True, exist_ok=True)
        note = f"{error.epoch}\n{error}\n".encode()
        atomic_write(run / "diverged.txt", lambda f: f.write(note))
        return f"{error}; the figures show it as diverged"
    return None


@dataclass
class Context:
    """One `dissipate figures` invocation: the preset, where results go, and the cache of runs and probes.

    Layout of `out`: NAME.csv and NAME.png per analysis; cache/PRESET/runs/ (training runs, resumable) and
    cache/PRESET/probes/ (probe frames); cache/NAME.json, the settings that NAME.csv was computed with. With `force`,
    everything an analysis needs is recomputed once in this invocation (a run shared by two analyses trains once).
    """

    preset: str
    out: Path
    force: bool = False
    device: str = "auto"
    data_dir: str | None = None
    say: Callable[[str], None] = print
    seeds: int | None = None  # the seeds of each decisive comparison (None: the preset's, SEEDS)
    recipe: Recipe = field(init=False)
    _fresh: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.recipe = RECIPES[self.preset]
        self.seeds = check_seeds(self.seeds, self.preset)
        self.cache = writable_directory(self.out / "cache", "the figures' cache")
        resolve_device(self.device)  # a device that is not here fails now, not at the first run
        atomic_write(self.cache / ".gitignore", lambda f: f.write(b"*\n"))  # runs hold checkpoints: never commit them

    def _stale(self, key: str, cached: Callable[[], bool]) -> bool:
        """Whether to compute `key`: --force asks and it was not redone in this invocation, or it is not cached
        (`cached()`, not asked under --force: a damaged cache is what --force redoes)."""
        if not (self.force and key not in self._fresh) and cached():
            return False
        self._fresh.add(key)
        return True

    # -- training ---------------------------------------------------------------------------------------------------

    def train_config(self, variant: Variant, data: str | None = None) -> TrainConfig:
        """The preset's recipe for `variant`: its lr and warm-up for a CNN (SGD); a transformer's own (AdamW); a
        remedy's rate scaled by RATE_SCALE (its model's entry, else its family's)."""
        r = self.recipe
        optimizer = family_optimizer(variant.model)
        sgd = optimizer == "sgd"
        lr = r.lr if sgd else None
        scale = RATE_SCALE.get(variant.model, RATE_SCALE.get(variant.family))
        if scale is not None:
            lr = (lr or OPTIMIZER_RECIPES[optimizer]["lr"]) * scale
        return TrainConfig(model=variant.model, data=data or r.data, epochs=r.epochs, batch_size=r.batch_size,
                           lr=lr, warmup=r.warmup if sgd else None, subset=r.subset,
                           test_subset=r.test_subset,
                           image_size=r.image_size, model_kwargs=dict(variant.options), data_dir=self.data_dir,
                           device=self.device, channels_last=r.channels_last, probe_every=r.probe_every,
                           probe_images=r.train_probe_images, probe_metrics=r.train_probe_metrics, seed=variant.seed)

    def run_dir(self, config: TrainConfig) -> Path:
        """cache/PRESET/runs/MODEL-DATA-HASH: the hash covers everything that decides the result (the probe settings
        only for a run that probes as it trains)."""
        ignored = (*RUNTIME_FIELDS, "data_dir", *(PROBE_FIELDS if not config.probe_every else ()))
        decides = {k: v for k, v in dataclasses.asdict(config).items() if k not in ignored}
        decides["model_kwargs"] = model_options(config.model, config.model_kwargs)  # defaults too: they may change
        if config.optimizer == "sgd":  # runs from before the optimizer was a setting were all SGD's: keep their names
            del decides["optimizer"]
        if is_synthetic(config.data):
            decides["synthetic_version"] = SYNTHETIC_VERSION
        return self.cache / self.preset / "runs" / f"{config.model}-{config.data.partition(':')[0]}-{digest(decides)}"

    def trained(self, variant: Variant, data: str | None = None) -> Run:
        """`variant` trained by the preset's recipe: read from the cache, resumed where it stopped, or trained. A run
        that diverges is a result too: it is recorded (diverged.txt) and kept, not retried."""
        config = self.train_config(variant, data)
        run = self.run_dir(config)
        log, diverged = run / "log.csv", run / "diverged.txt"
        if self._stale(str(run), lambda: finished(run, config)):
            if self.force:
                shutil.rmtree(run, ignore_errors=True)
            resume = (run / "latest.pt").is_file()
            self.say(f"{'resuming' if resume else 'training'} {variant.run_label}: "
                     f"{self.recipe.describe(config.data, config.optimizer, config.lr)}")
            note = train_run(config, run)
            if note:
                self.say(f"{variant.run_label}: {note}")
        history = read_cached(log, LOG_COLUMNS, run) if log.is_file() else pd.DataFrame(columns=list(LOG_COLUMNS))
        probes = read_cached(run / PROBES_FILE, ("epoch",), run) if (run / PROBES_FILE).is_file() else pd.DataFrame()
        if diverged.is_file():
            epoch = diverged.read_text(errors="replace").split()[:1]
            if not epoch or not epoch[0].isdecimal():
                raise damaged(diverged, "it does not start with the epoch the run diverged in", run)
            return Run(history, None, int(epoch[0]), probes)
        return Run(history, run / "latest.pt", probes=probes)

    # -- probes -----------------------------------------------------------------------------------------------------

    def probe_data(self, state: str, data: str | None = None) -> str:
        """The dataset a probe of `state` reads: the init data at initialisation, else what the net trained on."""
        return self.recipe.init_data if state == "init" else data or self.recipe.data

    def probed(self, variant: Variant, state: str, data: str | None = None) -> pd.DataFrame | None:
        """The probe frame of `variant` at initialisation ("init", on the preset's init data) or trained ("trained",
        on the test images of what it trained on), cached as CSV; None for a run that diverged."""
        r = self.recipe
        data = self.probe_data(state, data)
        # what decides the frame: the images and metrics, and for a trained net its run (named by its settings)
        source = r.init_image_size if state == "init" else self.run_dir(self.train_config(variant, data)).name
        if is_synthetic(data):  # the generator's version names its images too
            source = [source, SYNTHETIC_VERSION]
        options = model_options(variant.model, variant.options)
        settings = [variant.model, options, state, data, source, r.probe_images, r.probe_metrics]
        key = digest(settings + [variant.seed] if variant.seed and state == "init" else settings)
        path = self.cache / self.preset / "probes" / f"{variant.model}-{state}-{data.partition(':')[0]}-{key}.csv"
        if not self._stale(str(path), path.is_file):
            return read_cached(path, ("site", "depth"))
        if state == "init":
            images = load_data(data, image_size=r.init_image_size, length=r.probe_images, root=self.data_dir)
            net = probe_model(variant.model, images, seed=variant.seed, **variant.options)
        else:
            checkpoint = self.trained(variant, data).checkpoint
            if checkpoint is None:
                return None
            saved = read_checkpoint(checkpoint)
            images = load_data(data, image_size=r.image_size, in_chans=saved["in_chans"], root=self.data_dir)
            net = probe_model(variant.model, images, saved, str(checkpoint))
        self.say(f"probing {variant.run_label} ({'at initialisation' if state == 'init' else 'trained'}) on {data}")
        config = ProbeConfig(metrics=r.probe_metrics, num_images=r.probe_images, device=self.device,
                             calibrate_bn=state == "init")
        with warnings.catch_warnings(record=True) as notices:
            warnings.simplefilter("always", ProbeNotice)
            frame = probe(net, images, config)
        for notice in dict.fromkeys(str(n.message) for n in notices if issubclass(n.category, ProbeNotice)):
            self.say(f"note: {notice}")
        write_csv(frame, path)
        return frame

    def probe_table(self, variant: Variant, state: str, data: str | None = None) -> pd.DataFrame | None:
        """The probe frame with the tidy columns that name what was probed: preset, dataset, state, model, family,
        model_depth; the probe's `depth` (the site's position) is `layer`. None for a run that diverged."""
        frame = self.probed(variant, state, data)
        if frame is None:
            return None
        frame = frame.rename(columns={"depth": "layer"})
        data = self.probe_data(state, data)
        identity = {"preset": self.preset, "dataset": data, "state": state, "model": variant.label,
                    "family": variant.family, "model_depth": variant.depth, "seed": variant.seed}
        return pd.concat([pd.DataFrame(identity, index=frame.index), frame], axis=1)

    # -- results ----------------------------------------------------------------------------------------------------

    def result(self, analysis) -> tuple[pd.DataFrame, bool]:
        """(analysis's result frame, whether it came from the cache): NAME.csv when it was computed with these
        settings and columns, and from the same results of the analyses it reads (its INPUTS), else computed now
        (from the cached runs and probes) and written."""
        path, stamp = self.out / f"{analysis.NAME}.csv", self.cache / f"{analysis.NAME}.json"
        stamped = {"preset": self.preset, "recipe": dataclasses.asdict(self.recipe), "rate_scale": RATE_SCALE,
                   "settings": dataclasses.asdict(analysis.PRESETS[self.preset]),
                   "columns": analysis.COLUMNS}  # a table of an older layout is recomputed
        if getattr(analysis, "SEEDED", False):  # one whose runs or rows depend on --seeds
            stamped["seeds"] = self.seeds
        if getattr(analysis, "INPUTS", ()):  # a table joined from others is stale when they change
            stamped["inputs"] = {i.NAME: digest(self.result(i)[0].to_csv(index=False)) for i in analysis.INPUTS}
        settings = json.dumps(stamped, sort_keys=True, default=str)
        # a stamp that is not these settings, junk included, marks a result to compute again (and to stamp anew)
        cached = path.is_file() and stamp.is_file() and stamp.read_bytes() == settings.encode()
        if not self._stale(analysis.NAME, lambda: cached):
            return read_cached(path), True
        frame = analysis.compute(self)
        write_csv(frame, path)
        atomic_write(stamp, lambda f: f.write(settings.encode()))
        return frame, False


# -- what the figures share --------------------------------------------------------------------------------------------

# a family whose net, at its defaults, computes another family's function: drawn, its series lie on the other's
SAME_FUNCTION = {"pnnh": "resnet", "pnnhvit": "vit"}
_TWIN_NAMES = {"resnet": ("ResNet", "ResNet's"), "vit": ("the ViT", "the ViT's")}  # as a caption names them
# the classes of each dataset that a preset trains on (dissipate.data.load_data): what chance accuracy is
DATASET_CLASSES = {"synthetic": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100}


def identical_families(frame: pd.DataFrame, keys: tuple[str, ...], columns: tuple[str, ...],
                       atol: float = 1e-3) -> list[tuple[str, str]]:
    """The (family, twin) pairs of SAME_FUNCTION whose rows in `frame` measure alike: every row of `family` that has a
    row of its twin with the same `keys` has the twin's value (within `atol`, NaN where the twin's is NaN) in every
    one of `columns`, and at least one row does. Their drawn series lie one on the other."""
    pairs = []
    for family, twin in SAME_FUNCTION.items():
        mine, theirs = frame[frame["family"] == family], frame[frame["family"] == twin]
        joined = mine.merge(theirs, on=list(keys), suffixes=("", "_twin"))
        if len(joined) and all(np.allclose(joined[c].to_numpy(float), joined[f"{c}_twin"].to_numpy(float), rtol=0,
                                           atol=atol, equal_nan=True) for c in columns):
            pairs.append((family, twin))
    return pairs


def identical_note(pairs: list[tuple[str, str]], marks: str = "lines", under: str = "") -> str:
    """What a caption says of `pairs` (identical_families): that one family's `marks` cover its twin's, and how the
    twin is drawn to show from under them (`under`, e.g. "the wide line"); "" for no pairs."""
    notes = []
    for family, twin in pairs:
        name, possessive = _TWIN_NAMES[twin]
        notes.append(f"{FAMILY_LABELS[family]} at its defaults computes {possessive} function, so its {marks} cover "
                     f"{possessive}" + (f"; {name}: {under}" if under else ""))
    return "; ".join(notes)


def chance_accuracy(frame: pd.DataFrame) -> float | None:
    """The accuracy of a guess, 1 / classes: from the frame's `num_classes` where it has one, else from its dataset
    (DATASET_CLASSES); None where the frame's rows disagree or their dataset's classes are not known here (a folder)."""
    if "num_classes" in frame and frame["num_classes"].notna().any():
        classes = set(frame["num_classes"].dropna().astype(int))
    else:
        classes = {DATASET_CLASSES.get(str(d).partition(":")[0]) for d in frame["dataset"].dropna()}
    return 1 / classes.pop() if len(classes) == 1 and None not in classes else None


def mark_chance(axis, chance: float | None, scale: float = 100.0, reach: float = 0.5, span: float = 10.0):
    """A dotted line at chance accuracy (`chance` times `scale`: percent by default), gid "chance", labelled for a
    legend. Where the line would stretch the panel's drawn range by more than `reach` of it (a zoomed panel), only its
    legend entry, which says where chance lies. A panel that spans less than `span` (nets at chance, 10.0% to 10.8%)
    is widened upwards to it, so that noise about chance reads as the flat line at chance it is, not as structure.
    The line (None for no `chance`)."""
    if chance is None:
        return None
    level, (low, high) = chance * scale, axis.get_ylim()
    label = f"chance ({level:g}%: 1 of {round(1 / chance)} classes)"
    style = dict(color="0.25", linestyle=":", linewidth=1.1, gid="chance")
    if low <= level <= high or max(low - level, level - high) <= reach * (high - low):
        line = axis.axhline(level, zorder=1.5, label=label, **style)
        low, high = axis.get_ylim()
        if high - low < span:
            axis.set_ylim(low, low + span)
        return line
    where = "below" if level < low else "above"
    return axis.plot([], [], label=f"{label[:-1]}, {where} this panel)", **style)[0]
