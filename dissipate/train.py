"""Training (docs/design.md, section 5): one loop for every model and dataset, on the CPU, one GPU or many (DDP).

A linear warm-up then a cosine decay to 0, stepped per batch, and optional label smoothing. Each family has its
standard recipe (OPTIMIZER_RECIPES), which any setting overrides and the checkpoint records:
- CNNs: SGD with nesterov momentum 0.9, lr 0.1, weight decay 5e-4, 1 epoch of warm-up, no label smoothing (He et
  al.'s CIFAR ResNet recipe), batch 128, 200 epochs;
- transformers (plainvitN, vitN, pnnhvitN): AdamW (beta1 = `momentum`), lr 1e-3, weight decay 0.05 on weight
  matrices only (not on biases, norms and the position embedding), 5 epochs of warm-up and label smoothing 0.1, as
  small ViTs are trained from scratch.

CIFAR-sized data (cifar10, cifar100, fashion-mnist, synthetic) sits on the device as uint8, and the random crop
(zero padding 4) and the horizontal flip are done there, a batch at a time, so no data loader limits throughput.
Folders and ImageNet are read by torchvision's loaders with workers, and get the same crop and flip on the device.

A run is reproducible. Epoch e's order and augmentation come from a generator seeded with (seed, e), and the
checkpoint of epoch e holds the weights, the optimizer's state and the log. So a resumed run gives the same result
as one that never stopped. Under torchrun, every rank draws the same global batches as a single process with the
same batch size, and each rank takes its share. Only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import fcntl
import hashlib
import io
import math
import os
import reprlib
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ._io import atomic_write, os_error_reason, read_table, writable_directory
from .checkpoint import load_state_dict, non_finite_keys, read_checkpoint, save_checkpoint, saved_options
from .data import MAX_IMAGE_SIZE, DeadLeaves, ImageData, load_data, loader_batches, seeded_choice
from .errors import (CheckpointError, DissipateError, InvalidArgumentError, Notice, OutOfMemory, TrainingDiverged,
                     UnknownModelError, WriteFailed)
from .models import TRANSFORMER_FAMILIES, check_options, create_model, get_model_entry
from .probe import ProbeConfig, Progress, check_device, no_progress, parse_metrics, probe, resolve_device

ON_DEVICE = ("synthetic", "cifar10", "cifar100", "fashion-mnist")  # small enough to sit on the device as uint8
SYNTHETIC_LENGTH = {True: 10_000, False: 2_000}  # images in the synthetic train and test splits
SYNTHETIC_BATCH = 4096  # synthetic images drawn at once
CROP_PADDING = 4
LOG_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s", "peak_mem_mb",
               "epoch_s")
RUNTIME_FIELDS = ("device", "amp", "channels_last", "compile", "workers")  # how to run, not what to compute
# what the run probes as it trains: never a change to its weights; checkpoints from before they existed lack them
PROBE_FIELDS = ("probe_every", "probe_images", "probe_metrics")
PROBES_FILE = "probes.csv"
LATER_FIELDS = (*PROBE_FIELDS, "optimizer")  # fields that older checkpoints lack (their optimizer was SGD)
# each optimizer's standard recipe: what lr, wd, warmup and label_smoothing are when a config leaves them None
OPTIMIZER_RECIPES = {"sgd": {"lr": 0.1, "wd": 5e-4, "warmup": 1.0, "label_smoothing": 0.0},
                     "adamw": {"lr": 1e-3, "wd": 0.05, "warmup": 5.0, "label_smoothing": 0.1}}


# the families whose standard recipe is AdamW's: the transformers, and the remedies without normalisation, which SGD
# did not train here (tat20 and iso20, Fashion-MNIST, 2048 images, 5 epochs: diverged at lr 0.1 and 0.02, and tat20
# stayed at chance at 0.005; AdamW at 1e-3 reached 66.4% and 70.8%, plain20 with SGD at 0.1 75.6%). Their papers
# train with K-FAC (TAT) or SGD over 100 epochs and more (ISONet), neither practical here.
ADAMW_FAMILIES = (*TRANSFORMER_FAMILIES, "tat", "iso")


def family_optimizer(model: str) -> str:
    """The optimizer of a model's standard recipe: AdamW for ADAMW_FAMILIES, SGD for everything else (the CNNs with
    normalisation, and other libraries' models, whatever they are)."""
    try:
        return "adamw" if get_model_entry(model).family in ADAMW_FAMILIES else "sgd"
    except UnknownModelError:  # another library's model, or a name create_model refuses later with suggestions
        return "sgd"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in its checkpoints, so `resume` continues it as it was."""

    model: str
    data: str = "cifar10"
    epochs: int = 200
    batch_size: int = 128  # the global batch: split across the ranks of a distributed run
    optimizer: str | None = None  # "sgd" (nesterov) or "adamw"; None: the model family's (family_optimizer)
    lr: float | None = None  # peak learning rate, reached after the warm-up; None (here and below): the optimizer's
    # recipe (OPTIMIZER_RECIPES)
    momentum: float = 0.9  # SGD's momentum, or AdamW's beta1
    wd: float | None = None
    warmup: float | None = None  # epochs of linear warm-up from 0 (at most half the run)
    label_smoothing: float | None = None
    augment: bool = True  # random crop (zero padding 4) and horizontal flip
    subset: int | None = None  # train on a seeded random choice of this many training images
    test_subset: int | None = None  # evaluate on this many test images (all by default)
    image_size: int | None = None  # resize the images (default: the dataset's own)
    model_kwargs: dict = field(default_factory=dict)
    data_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (the CPU computes in float32 either way)
    channels_last: bool = False
    compile: bool = False
    workers: int = 4  # data-loader workers for folders and ImageNet
    probe_every: int = 0  # probe fixed test images at epoch 0 and every this many epochs into probes.csv (0: never)
    probe_images: int = 256
    probe_metrics: str = "survival,rank,cka"  # metric families, comma-separated

    def __post_init__(self) -> None:
        wrong = [f"{f.name}={reprlib.repr(getattr(self, f.name))}" for f in dataclasses.fields(self)
                 if not _of_type(getattr(self, f.name), f.type)]
        if wrong:
            raise InvalidArgumentError(f"TrainConfig has values of the wrong type: {', '.join(wrong)}")
        optimizer = self.optimizer or family_optimizer(self.model)  # resolved, so that checkpoints record it
        if optimizer not in OPTIMIZER_RECIPES:
            raise InvalidArgumentError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_RECIPES)}")
        object.__setattr__(self, "optimizer", optimizer)
        for name, value in OPTIMIZER_RECIPES[optimizer].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        checks = [("epochs", self.epochs >= 1, "at least 1"), ("batch_size", self.batch_size >= 1, "at least 1"),
                  ("lr", self.lr > 0, "positive"), ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("wd", self.wd >= 0, "non-negative"), ("warmup", self.warmup >= 0, "non-negative"),
                  ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                  ("subset", self.subset is None or self.subset >= 1, "at least 1"),
                  ("test_subset", self.test_subset is None or self.test_subset >= 1, "at least 1"),
                  ("workers", self.workers >= 0, "non-negative"),
                  ("probe_every", self.probe_every >= 0, "non-negative"),
                  ("probe_images", self.probe_images >= 2, "at least 2 (half fit the read-out, half score it)"),
                  ("seed", 0 <= self.seed < 2 ** 63, "in [0, 2^63)"),
                  ("image_size", self.image_size is None or 1 <= self.image_size <= MAX_IMAGE_SIZE,
                   f"from 1 to {MAX_IMAGE_SIZE}")]
        for name, valid, rule in checks:
            value = getattr(self, name)
            if not valid or (isinstance(value, float) and not math.isfinite(value)):
                raise InvalidArgumentError(f"{name} must be {rule}, got {value}")
        check_device(self.device)
        check_options(self.model_kwargs, "model_kwargs")
        parse_metrics([self.probe_metrics])
        if self.augment and self.image_size is not None and self.image_size < 2 * CROP_PADDING:  # datasets: >= 28 px
            raise InvalidArgumentError(f"augmentation crops {self.image_size} px images out of a {CROP_PADDING} px "
                                       f"zero padding, which needs images of at least {2 * CROP_PADDING} px (most "
                                       "crops would be padding); use --no-augment or a larger --image-size")


_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,), "None": (type(None),)}


def _of_type(value: object, annotation: str) -> bool:
    """Whether `value` fits a TrainConfig field's annotation ("int | None", "float", ...); a bool is no number."""
    allowed = tuple(t for part in annotation.split("|") for t in _TYPES[part.strip()])
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up to `lr` over `warmup` epochs (at most half
    the run), then cosine decay to 0."""
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup * steps_per_epoch), total // 2)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# -- data ------------------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """One split of a dataset, ready to batch: uint8 images on the device (CIFAR-sized data), or a dataset of
    [0, 1] float images read by a DataLoader (folders)."""

    data: ImageData
    labels: torch.Tensor  # (N,) on the device
    images: torch.Tensor | None = None  # (N, C, H, W) uint8 on the device, or None for loader-read data
    indices: list[int] | None = None  # the dataset indices a loader reads (a subset), else all

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A hash of what the split holds: its labels, and its images (on the device) or the files a loader reads
        (class and name). A resume refuses data that changed under the run."""
        digest = hashlib.sha256(self.labels.cpu().numpy().tobytes())
        if self.images is not None:
            digest.update(self.images.cpu().numpy().tobytes())
        else:
            dataset = self.data.dataset
            samples, indices = (dataset.dataset.samples, dataset.indices) if isinstance(dataset, Subset) else \
                (dataset.samples, range(len(dataset.samples)))
            for i in indices if self.indices is None else [indices[j] for j in self.indices]:
                digest.update("/".join(Path(samples[i][0]).parts[-2:]).encode() + b"\0")
        return digest.hexdigest()[:16]

    def batches(self, order: list[torch.Tensor], workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images as float in [0, 1], labels) on the device for each index batch in `order` (positions in the
        split)."""
        if self.images is not None:
            for batch in order:
                batch = batch.to(self.labels.device)
                yield self.images[batch].float().div_(255), self.labels[batch]
            return
        positions = [batch.tolist() for batch in order]
        dataset = self.data.dataset if self.indices is None else torch.utils.data.Subset(self.data.dataset,
                                                                                         self.indices)
        loader = DataLoader(dataset, batch_sampler=positions, num_workers=workers,
                            pin_memory=self.labels.device.type == "cuda", persistent_workers=False)
        for images, labels in loader_batches(loader):
            yield (images.to(self.labels.device, non_blocking=True),
                   labels.to(self.labels.device, non_blocking=True))


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.mul(255).round_().to(torch.uint8)


def load_split(config: TrainConfig, train: bool, device: torch.device) -> Split:
    """The training or test split of `config.data`, on `device` where it fits there (ON_DEVICE)."""
    count = config.subset if train else config.test_subset
    name = config.data.partition(":")[0]
    length = count or SYNTHETIC_LENGTH[train]
    data = load_data(config.data, train=train, image_size=config.image_size, length=length, root=config.data_dir,
                     seed=config.seed)
    what = f"the {'training' if train else 'test'} split of {data.name}"
    chosen = seeded_choice(len(data.dataset), count, config.seed, what)
    if name not in ON_DEVICE:
        targets = torch.as_tensor(data.dataset.targets)
        labels = targets if chosen is None else targets[chosen]
        return Split(data, labels.to(device), indices=chosen)
    raw = data.dataset
    if isinstance(raw, DeadLeaves):  # drawn on the run's device, a batch at a time
        drawn = [raw.draw(range(start, min(start + SYNTHETIC_BATCH, len(raw))), device)
                 for start in range(0, len(raw), SYNTHETIC_BATCH)]
        images, labels = _as_uint8(torch.cat([d[0] for d in drawn])), torch.cat([d[1] for d in drawn])
    else:  # torchvision's CIFAR (N, H, W, C) arrays and Fashion-MNIST (N, H, W) tensors
        images = torch.as_tensor(np.asarray(raw.data))
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(raw.targets))
        if chosen is not None:
            images, labels = images[chosen], labels[chosen]
        if data.image_size != images.shape[-1]:
            images = _as_uint8(F.interpolate(images.float() / 255, size=data.image_size, mode="bilinear",
                                             antialias=True, align_corners=False).clamp_(0, 1))
    return Split(data, labels.long().to(device), images.contiguous().to(device))


def epoch_plan(size: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True, drop_last: bool = True,
               augment: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """(positions, crop offsets (B, 2), flips (B,)) of each global batch of epoch `epoch`, from a generator seeded
    with (seed, epoch) alone: every rank, and every resumed run, draws the same."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    stop = size - size % batch_size if drop_last else size
    plan = []
    for start in range(0, stop, batch_size):
        positions = order[start:start + batch_size]
        offsets = flips = None
        if augment:
            offsets = torch.randint(2 * CROP_PADDING + 1, (len(positions), 2), generator=generator)
            flips = torch.rand(len(positions), generator=generator) < 0.5
        plan.append((positions, offsets, flips))
    return plan


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crops of the zero-padded images (offsets in [0, 2 * padding]) and horizontal flips, on the images'
    device, by two gathers (rows, then columns)."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (CROP_PADDING,) * 4)
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    columns = torch.arange(width, device=images.device).expand(batch, width)
    columns = torch.where(flips[:, None], columns.flip(1), columns) + offsets[:, 1, None]  # (B, W)
    gather_rows = torch.gather(padded, 2, rows[:, None, :, None].expand(-1, images.shape[1], -1, padded.shape[3]))
    return torch.gather(gather_rows, 3, columns[:, None, None, :].expand(-1, images.shape[1], height, -1))


# -- the run ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch."""
        per_rank = len(batch) // self.world
        return batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(values)
        return values

    def share_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BN statistics) on every rank: each rank updated its own in the last training step."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)


@contextlib.contextmanager
def distributed_from_environment(device: str) -> Iterator[Distributed]:
    """Join the torchrun job that the environment describes (WORLD_SIZE > 1): NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Distributed()
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size(), local_rank)
    finally:
        dist.destroy_process_group()


class RunningTotals:
    """Summed loss and correct predictions, kept on the device (no host sync per step), and the count."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, device=device, dtype=torch.float64)
        self.count = 0

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.sums += torch.stack([loss_sum.double(), (logits.argmax(1) == labels).sum().double()])
        self.count += len(labels)

    def result(self, ranks: Distributed) -> tuple[float, float, int]:
        """(loss sum, correct, count) over every rank."""
        count = torch.tensor([self.count], device=self.sums.device, dtype=torch.float64)
        loss_sum, correct, total = ranks.all_sum(torch.cat([self.sums, count])).tolist()
        return loss_sum, correct, int(total)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)


def _write_log(path: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def _resumed_config(config: TrainConfig, saved: dict, source: Path, given: Iterable[str] | None) -> TrainConfig:
    """The saved run's config, with this call's runtime fields. A setting that this call gives (`given`: the names
    set explicitly; None: every one that differs from its default) and that differs from the saved run's is refused,
    since it would not continue the same run."""
    if given is None:
        defaults = TrainConfig(model=saved["model"])
        given = [name for name in saved if getattr(config, name) != getattr(defaults, name)]
    conflicts = [f"{name}={saved[name]!r}, not {getattr(config, name)!r}" for name in saved
                 if name in given and name not in RUNTIME_FIELDS and name != "model"
                 and getattr(config, name) != saved[name]]
    if config.model != saved["model"]:
        conflicts.insert(0, f"model={saved['model']!r}, not {config.model!r}")
    if conflicts:
        raise InvalidArgumentError(f"--resume continues the run in {source.parent} as it was set up; it has "
                                   f"{'; '.join(conflicts)}")
    return TrainConfig(**{**saved, **{name: getattr(config, name) for name in RUNTIME_FIELDS}})


def read_resume_point(out: Path) -> dict:
    """The latest checkpoint in `out`, which `resume` continues from."""
    path = out / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint to resume in {out} (expected {path.name}); "
                              "start the run without --resume")
    return _training_checkpoint(path)


def _training_checkpoint(path: Path) -> dict:
    """The training checkpoint at `path` (latest.pt or best.pt), checked: its config, history and optimizer state."""
    saved = read_checkpoint(path)
    if saved["format"] is None or "optimizer" not in saved or "train_config" not in saved:
        raise CheckpointError(f"--resume: {path} is not a training checkpoint of dissipate (it has no optimizer "
                              "state or training config)")
    damaged = _damage(saved)
    if damaged:
        raise CheckpointError(f"--resume: {path} is damaged: {damaged}; start the run again with --overwrite")
    return saved


def _damage(saved: dict) -> str | None:
    """What is wrong with a training checkpoint's config, history and optimizer state, or None."""
    config, history, optimizer = saved["train_config"], saved.get("history"), saved["optimizer"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(config, dict) or set(config) - fields or fields - set(config) - set(LATER_FIELDS):
        return "its training config is not a dict of TrainConfig's fields"
    try:
        TrainConfig(**config)
    except (DissipateError, TypeError, ValueError) as error:
        return f"its training config does not hold ({str(error).splitlines()[0] if str(error) else error!r})"
    if config["model"] != saved["model"]:
        return f"its training config names model {config['model']!r}, its weights {saved['model']!r}"
    rows_ok = isinstance(history, list) and all(
        isinstance(row, dict) and set(LOG_COLUMNS) <= set(row) and row["epoch"] == epoch
        and all(isinstance(row[k], (int, float)) and math.isfinite(row[k]) for k in LOG_COLUMNS)
        for epoch, row in enumerate(history, 1))
    if not rows_ok or len(history) != saved["epoch"]:
        return f"its history is not the log of epochs 1 to {saved['epoch']}"
    if len(history) > config["epochs"]:  # no run logs more epochs than it has: which of the two is right is a guess
        return f"its history has {len(history)} epochs, more than the {config['epochs']} of its training config"
    non_finite = non_finite_keys(saved["state_dict"])  # a finished run's would be copied into best.pt
    if non_finite:
        return f"its weights hold non-finite values ({non_finite[0]}{' and more' if len(non_finite) > 1 else ''})"
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)):
        return "its optimizer state is not an optimizer's state_dict"
    return None


EpochCallback = Callable[[dict], None]


def train(config: TrainConfig, out: str | os.PathLike, resume: bool = False, progress: Progress | None = None,
          on_epoch: EpochCallback | None = None, stop_after: int | None = None, overwrite: bool = False,
          given: Iterable[str] | None = None, test_each_epoch: bool = True) -> list[dict]:
    """Train `config.model` on `config.data`; returns the log, one dict per epoch (LOG_COLUMNS).

    Each epoch appends a row to `out/log.csv` and writes `out/latest.pt` (and `out/best.pt` when the test accuracy
    is the best so far), atomically. `out` is locked while the run writes to it, and a directory that already holds
    a run is refused unless `resume=True` continues it from `out/latest.pt` (`given`: the settings this call names
    explicitly, which must agree with the run's) or `overwrite=True` replaces it. `stop_after` ends the run after
    that epoch, as if it had been killed there. `progress(items, length, label)` wraps each epoch's batches, and
    `on_epoch(row)` sees each log row (rank 0 only). Under torchrun (WORLD_SIZE > 1) every rank calls this.
    `test_each_epoch=False` skips the test split (its columns are NaN): for speed measurements, where a deep plain net's
    eval pass after a few steps, with batch-norm statistics that have not settled, can overflow.

    With `config.probe_every` K > 0, the net is probed at initialisation and after every K-th epoch on the same
    `probe_images` test images (`probe_metrics`), and the rows go into `out/probes.csv` with an `epoch` column.
    """
    out = Path(out)
    if resume and overwrite:
        raise InvalidArgumentError(f"--resume continues the run in {out} and --overwrite replaces it; choose one")
    saved = None
    if resume:
        saved = read_resume_point(out)
        config = _resumed_config(config, saved["train_config"], out / "latest.pt", given)
    device = resolve_device(config.device)
    with distributed_from_environment(config.device) as ranks:
        if ranks.enabled and device.type == "cuda":
            device = torch.device("cuda", ranks.local_rank)
        with _claim(out, ranks.rank == 0, saved, overwrite):
            if saved is not None and len(saved["history"]) >= config.epochs:  # finished; _claim made its files agree
                if ranks.rank == 0:
                    warnings.warn(f"the run in {out} already has all its {config.epochs} epochs: nothing to train",
                                  Notice, stacklevel=2)
                return list(saved["history"])
            try:
                return _run(config, out, saved, device, ranks, progress, on_epoch, stop_after, test_each_epoch)
            except torch.OutOfMemoryError:
                raise OutOfMemory(f"{config.model} at batch size {config.batch_size} does not fit in the memory "
                                  f"of {device}; lower --batch-size") from None


RUN_FILES = ("latest.pt", "best.pt", "log.csv")


@contextlib.contextmanager
def _claim(out: Path, writer: bool, saved: dict | None, overwrite: bool) -> Iterator[None]:
    """Hold `out` for this run (the writer, rank 0, only): a lock that a second run on it is refused by, and files
    that agree with the run's history before it goes on (resume), or none of another run's (overwrite)."""
    if not writer:
        yield
        return
    writable_directory(out, "the run directory")
    lock = os.open(out, os.O_RDONLY)  # the directory itself is locked: no lock file to leave behind
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when closed, or when the process dies
        except BlockingIOError:
            raise InvalidArgumentError(f"another process is training in {out}; wait for it to end, or choose "
                                       "another --out") from None
        existing = [out / name for name in (*RUN_FILES, PROBES_FILE) if os.path.lexists(out / name)]
        if saved is not None:
            _repair(out, saved, _best_epoch(out, saved))
        elif existing == [out / PROBES_FILE] and not overwrite:  # a run writes its probes only beside a checkpoint
            # of its own (`_run`), so a lone probes.csv is another run's
            raise InvalidArgumentError(f"{existing[0]} is another run's: a run writes its probes only beside its "
                                       "checkpoints, and there are none; move it away, replace it with --overwrite, "
                                       "or choose another --out")
        elif existing and not overwrite:
            raise InvalidArgumentError(f"{out} already holds a run ({', '.join(p.name for p in existing)}); continue "
                                       "it with --resume, replace it with --overwrite, or choose another --out")
        else:
            for path in existing:
                if path.is_dir() and not path.is_symlink():
                    raise InvalidArgumentError(f"{path} is a directory, not a file of a run, so --overwrite leaves it "
                                               "as it is; move it away, or choose another --out")
                path.unlink()
        yield
    finally:
        os.close(lock)


def _best_epoch(out: Path, saved: dict) -> int | None:
    """The epoch of out/best.pt (None when there is none), once it and log.csv are checked to be of the run that
    latest.pt (`saved`) holds: the same model, options, data and recipe, and a history that is the start of
    latest.pt's. A file of another run, or one that is not a file, is refused with its name: resuming would mix
    two runs."""
    best, log, latest = out / "best.pt", out / "log.csv", out / "latest.pt"
    for path in (best, log):
        if os.path.lexists(path) and not path.is_file():
            raise CheckpointError(f"--resume: {path} is not a file, so the run in {out} is not whole; move it away, "
                                  "or start the run again with --overwrite")
    best_epoch = None
    if best.is_file():
        other = _training_checkpoint(best)
        differs = _differs(*(_run_identity(c, same_version=other["version"] == saved["version"])
                             for c in (other, saved)))
        history = other["history"]
        if differs is None and not _same_rows(history, saved["history"][:len(history)]):
            differs = f"its history of epochs 1 to {len(history)} is not {latest.name}'s"
        if differs:
            raise CheckpointError(f"--resume: {best} is of another run than {latest} ({differs}); resuming would mix "
                                  "the two, so move one away, or start the run again with --overwrite")
        best_epoch = other["epoch"]
    if log.is_file():
        try:
            with open(log, newline="") as file:
                rows = [{k: float(row[k]) for k in LOG_COLUMNS} for row in csv.DictReader(file)]
        except (OSError, ValueError, KeyError, TypeError, csv.Error):  # not a log of ours: it cannot be of this run
            rows = None
        if rows is None or not _same_rows(rows, saved["history"][:len(rows)]) or len(rows) > len(saved["history"]):
            raise CheckpointError(f"--resume: {log} is not the log of the run in {latest} (its rows differ from "
                                  "the history that latest.pt holds); move it away, or start the run again with "
                                  "--overwrite")
    return best_epoch


def _run_identity(saved: dict, same_version: bool = True) -> dict:
    """What makes a checkpoint's run the run it is: model, options, data and recipe (not how it ran). Options are
    compared only between files of one version: version 1 recorded those given, later ones every option."""
    identity = {"model": saved["model"], "options": saved["model_kwargs"], "dataset": saved.get("dataset"),
                "data_fingerprint": saved.get("data_fingerprint"),
                **{k: v for k, v in saved["train_config"].items() if k not in RUNTIME_FIELDS}}
    if not same_version:
        del identity["options"], identity["model_kwargs"]
    return identity


def _differs(a: dict, b: dict) -> str | None:
    """The first setting that `a` and `b` both hold and give different values, as "name X, not Y"; None if none."""
    name = next((k for k in a if k in b and a[k] != b[k]), None)
    return None if name is None else f"{name} {reprlib.repr(a[name])}, not {reprlib.repr(b[name])}"


def _same_rows(rows: list[dict], history: list[dict]) -> bool:
    """Whether two logs agree, row by row and column by column, to float rounding (NaN equals NaN)."""
    return len(rows) == len(history) and all(
        math.isclose(a[k], b[k], rel_tol=1e-12) or (math.isnan(a[k]) and math.isnan(b[k]))
        for a, b in zip(rows, history) for k in LOG_COLUMNS)


def _repair(out: Path, saved: dict, best_saved: int | None) -> None:
    """Make log.csv and best.pt agree with the history in latest.pt (`saved`), after a kill between their writes:
    the log is rewritten from the history, and best.pt is latest.pt when the last epoch is the best one
    (`best_saved`: the epoch best.pt holds, None when there is none)."""
    history = saved["history"]
    _write_log(out / "log.csv", history)
    if saved["train_config"].get("probe_every"):  # a run that does not probe has no probes.csv of its own to trim
        _keep_probes(out, saved["epoch"] + 1)
    best_epoch = max(history, key=lambda row: row["test_acc"])["epoch"] if history else None
    if best_epoch is not None and best_saved != best_epoch and best_epoch == saved["epoch"]:
        latest = (out / "latest.pt").read_bytes()
        atomic_write(out / "best.pt", lambda f: f.write(latest))


def _run(config: TrainConfig, out: Path, saved: dict | None, device: torch.device, ranks: Distributed,
         progress: Progress | None, on_epoch: EpochCallback | None, stop_after: int | None,
         test_each_epoch: bool = True) -> list[dict]:
    train_split, test_split = load_split(config, True, device), load_split(config, False, device)
    data = train_split.data
    fingerprint = f"{train_split.fingerprint()}-{test_split.fingerprint()}"
    if saved is not None and saved.get("data_fingerprint", fingerprint) != fingerprint:
        raise InvalidArgumentError(f"--resume: the data of {data.name} is not what the run in {out} trained on (its "
                                   "images or labels changed since); restore that data, or start a new run")
    if config.batch_size > len(train_split):
        raise InvalidArgumentError(f"batch size {config.batch_size} is larger than the {len(train_split)} training "
                                   f"images of {data.name}")
    if config.batch_size % ranks.world:
        raise InvalidArgumentError(f"batch size {config.batch_size} does not split evenly over {ranks.world} "
                                   "processes")

    torch.manual_seed(config.seed)  # the same initial weights on every rank, and for every run of this seed
    options = config.model_kwargs if saved is None else saved_options(saved)  # a resumed net is built as it was
    model = create_model(config.model, num_classes=data.num_classes, in_chans=data.in_chans,
                         image_size=data.image_size, **options)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, config)
    history: list[dict] = []
    if saved is not None:
        _restore(model, optimizer, saved, out / "latest.pt")
        history = list(saved["history"])
    compiled = torch.compile(model) if config.compile else model
    net = compiled  # what trains: under torchrun, wrapped to average the gradients over the ranks
    if ranks.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        # a PNNH coder with E^T E = I for good is not used by the fused path, and gets no gradient: DDP must be told
        unused = any(getattr(m, "identity_coder", False) for m in model.modules())
        net = nn.parallel.DistributedDataParallel(compiled, device_ids=device_ids, find_unused_parameters=unused)

    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    mean = torch.tensor(data.mean, device=device)[:, None, None]
    std = torch.tensor(data.std, device=device)[:, None, None]
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    steps_per_epoch = len(train_split) // config.batch_size
    best = max((row["test_acc"] for row in history), default=-1.0)
    wrap = progress if progress is not None and ranks.rank == 0 else no_progress

    def model_input(images: torch.Tensor) -> torch.Tensor:
        return ((images - mean) / std).contiguous(memory_format=memory_format)

    probing = config.probe_every > 0 and ranks.rank == 0
    if probing:
        probe_images = load_data(config.data, image_size=config.image_size, length=config.probe_images,
                                 root=config.data_dir, seed=config.seed)
    pending = [_probe_epoch(model, probe_images, config, 0, device)] if probing and not history else []

    for epoch in range(len(history) + 1, config.epochs + 1):
        if stop_after is not None and epoch > stop_after:
            break
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        plan = epoch_plan(len(train_split), config.batch_size, config.seed, epoch, augment=config.augment)
        totals = RunningTotals(device)
        penalties = torch.zeros((), device=device, dtype=torch.float64)  # the model's own term, summed
        net.train()
        step = (epoch - 1) * steps_per_epoch
        batches = train_split.batches([ranks.share(positions) for positions, _, _ in plan], config.workers)
        with wrap(zip(plan, batches, strict=True), len(plan), f"epoch {epoch}/{config.epochs}") as steps:
            for (_, offsets, flips), (images, labels) in steps:
                if config.augment:
                    images = crop_and_flip(images, ranks.share(offsets), ranks.share(flips))
                lr = learning_rate(config, step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(**autocast):
                    logits = net(model_input(images))
                    loss = criterion(logits.float(), labels)
                penalty = regularization(model)  # a method's own term (ISONet's orthogonality), not logged as loss
                optimizer.zero_grad(set_to_none=True)
                if penalty is not None:
                    penalties += penalty.detach().double()
                (loss if penalty is None else loss + penalty).backward()
                optimizer.step()
                step += 1
                totals.add(loss.detach() * len(labels), logits, labels)
        loss_sum, correct, count = totals.result(ranks)
        penalty = penalties.item()
        if not (math.isfinite(loss_sum) and math.isfinite(penalty)):  # checked once an epoch: a check per step
            # would stall the GPU every step
            raise _diverged(config, out, epoch, "the loss is not finite", model, penalty)
        elapsed = time.perf_counter() - started
        ranks.share_buffers(model)
        test_loss, test_acc = (evaluate(compiled, test_split, config, ranks, model_input, autocast)
                               if test_each_epoch else (math.nan, math.nan))
        if not _finite(model) or (test_each_epoch and not math.isfinite(test_loss)):  # never saved
            raise _diverged(config, out, epoch, "the weights or the test loss are not finite", model, penalty)
        row = {"epoch": epoch, "train_loss": loss_sum / count, "train_acc": correct / count, "test_loss": test_loss,
               "test_acc": test_acc, "lr": lr, "images_per_s": count / elapsed,
               "peak_mem_mb": _peak_memory_mb(device), "epoch_s": elapsed}
        history.append(row)
        if probing and epoch % config.probe_every == 0:
            pending.append(_probe_epoch(model, probe_images, config, epoch, device))
        if ranks.rank == 0:
            try:
                if pending:  # written just before the checkpoint (a kill between them probes again), never without
                    # one: a probes.csv in a folder without a checkpoint is another run's (`_claim`)
                    _keep_probes(out, int(pending[0]["epoch"].iloc[0]), pd.concat(pending, ignore_index=True))
                    pending = []
                _save(out, model, optimizer, config, data, history, is_best=test_acc > best, fingerprint=fingerprint)
            except OSError as error:
                raise WriteFailed(f"writing epoch {epoch} of the run to {out} failed: {os_error_reason(error)}"
                                  f"{_kept(out, epoch)}") from None
            if on_epoch is not None:
                on_epoch(row)
        best = max(best, test_acc)
    return history


def _probe_epoch(model: nn.Module, images: ImageData, config: TrainConfig, epoch: int,
                 device: torch.device) -> pd.DataFrame:
    """Probe `model` after `epoch` on the run's fixed probe images: its rows, with an `epoch` column first, for
    out/probes.csv, in place of any rows of that epoch or later. Epoch 0 is the net at initialisation, probed as
    `dissipate probe` probes one (its batch norm calibrated on the probe images) on a copy, so that training is
    untouched; so is the random state, which the probe may draw from."""
    net = copy.deepcopy(model) if epoch == 0 else model
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        frame = probe(net, images, ProbeConfig(metrics=(config.probe_metrics,), num_images=config.probe_images,
                                               device=device.type, seed=config.seed, calibrate_bn=epoch == 0))
    frame.insert(0, "epoch", epoch)
    return frame


def _keep_probes(out: Path, below: int, new: pd.DataFrame | None = None) -> None:
    """out/probes.csv with only the rows of epochs before `below`, then `new` (a resume drops what it will redo)."""
    path = out / PROBES_FILE
    if not path.is_file() and new is None:
        return
    kept = _read_probes(path, f"move it out of {out}, then run again") if path.is_file() else None
    if kept is not None:
        kept = kept[kept["epoch"] < below]
    parts = [f for f in (kept, new) if f is not None and len(f)]
    frame = pd.concat(parts, ignore_index=True) if parts else kept
    atomic_write(path, lambda f: f.write(frame.to_csv(index=False).encode()))


def _read_probes(path: Path, advice: str) -> pd.DataFrame:
    """The probes a run wrote to `path`; InvalidArgumentError naming it, whose `advice` says how to go on, when it is
    something else (junk, or someone's file): it is never rewritten or deleted then."""
    def problem(why: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{path} is not a probes file of a dissipate run ({why}), so it is left as it "
                                    f"is; {advice}")

    frame = read_table(path, ("epoch", "site", "depth"), problem)
    if list(frame.columns[:3]) != ["epoch", "site", "depth"]:
        raise problem("its first columns are not epoch, site and depth")
    return frame


def regularization(model: nn.Module) -> torch.Tensor | None:
    """The term a model adds to its training loss (`model.regularization()`, such as ISONet's orthogonality
    penalty), or None for a model without one."""
    method = getattr(model, "regularization", None)
    return method() if callable(method) else None


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with nesterov momentum and weight decay on every parameter, or AdamW with weight decay on the weight
    matrices only (biases, norms and a ViT's position embedding are not decayed, as timm does)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               nesterov=config.momentum > 0, weight_decay=config.wd)
    named = list(model.named_parameters())
    kept = [p for name, p in named if p.ndim <= 1 or name.endswith("pos_embed")]
    decayed = [p for name, p in named if not (p.ndim <= 1 or name.endswith("pos_embed"))]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": config.wd}, {"params": kept, "weight_decay": 0.0}],
                             lr=config.lr, betas=(config.momentum, 0.999))


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, source: Path) -> None:
    """Load a training checkpoint's weights and optimizer state, each checked against the model first."""
    load_state_dict(model, saved["state_dict"], source=str(source))
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"--resume: {source} holds an optimizer state that does not fit {saved['model']} "
                              f"({str(error).splitlines()[0][:120]})") from None
    buffers = [(p, optimizer.state.get(p, {}).get(key)) for p in model.parameters()  # .get: state is a defaultdict,
               for key in ("momentum_buffer", "exp_avg", "exp_avg_sq")]  # and a parameter with no state keeps none
    misfits = [i for i, (p, buffer) in enumerate(buffers)
               if buffer is not None and (not isinstance(buffer, torch.Tensor) or buffer.shape != p.shape)]
    if misfits:
        raise CheckpointError(f"--resume: {source} holds momentum buffers that do not fit {saved['model']}'s "
                              f"parameters (buffer {misfits[0]} and {len(misfits) - 1} more)")


def _kept(out: Path, epoch: int) -> str:
    """What a run that stops in `epoch` leaves: the clause that ends its message."""
    return f"; {out / 'latest.pt'} holds epoch {epoch - 1}" if epoch > 1 else ""


def _diverged(config: TrainConfig, out: Path, epoch: int, what: str, model: nn.Module,
              penalty: float) -> TrainingDiverged:
    """The error of a run that diverged: blamed on the model's option that scales its own training term, when that
    term overflowed (`penalty`: its sum over the epoch), or else on the learning rate."""
    option = getattr(model, "regularization_option", None)
    if option is not None and not math.isfinite(penalty):
        value = getattr(model, option)
        return TrainingDiverged(f"training diverged in epoch {epoch} ({what}: {config.model}'s own training term, "
                                f"scaled by {option}={value!r}, overflowed); lower --model-arg {option}"
                                f"{_kept(out, epoch)}", epoch)
    return TrainingDiverged(f"training diverged in epoch {epoch} ({what} at learning rate {config.lr}); lower --lr "
                            f"or lengthen --warmup{_kept(out, epoch)}", epoch)


def _finite(model: nn.Module) -> bool:
    """Whether every parameter and buffer of `model` is finite (one host synchronisation)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all()) if tensors else True


@torch.no_grad()
def evaluate(net: nn.Module, split: Split, config: TrainConfig, ranks: Distributed,
             model_input: Callable[[torch.Tensor], torch.Tensor], autocast: dict) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over the whole split, each rank scoring every world-th image."""
    net.eval()
    plan = epoch_plan(len(split), config.batch_size, 0, 0, shuffle=False, drop_last=False)
    shares = [positions[ranks.rank::ranks.world] for positions, _, _ in plan]
    totals = RunningTotals(split.labels.device)
    for images, labels in split.batches([s for s in shares if len(s)], config.workers):
        with torch.autocast(**autocast):
            logits = net(model_input(images)).float()
        totals.add(F.cross_entropy(logits, labels, reduction="sum"), logits, labels)
    loss_sum, correct, count = totals.result(ranks)
    return loss_sum / count, correct / count


def _save(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, data: ImageData,
          history: list[dict], is_best: bool, fingerprint: str) -> None:
    """latest.pt (and best.pt), then log.csv, each atomically: a run killed at any point resumes from latest.pt."""
    out.mkdir(parents=True, exist_ok=True)
    row = history[-1]
    for name in ("latest.pt", "best.pt") if is_best else ("latest.pt",):
        save_checkpoint(out / name, model, dataset=data.name, epoch=row["epoch"], metrics=row,
                        optimizer=optimizer.state_dict(), train_config=dataclasses.asdict(config), history=history,
                        data_fingerprint=fingerprint)
    _write_log(out / "log.csv", history)
