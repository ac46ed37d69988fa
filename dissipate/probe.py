"""The probe: how much of the input survives at every activation site of a model.

data -> model -> recorder -> metrics -> DataFrame. `probe(model, data)` returns one row per site, identity columns
first (site, depth, kind, module, channels), then the metric columns of the design's table (docs/design.md, section 3):

- survival (of the pre-activation): surviving, dead, always_on
- moments: pre_mean, pre_var (the pre-activation); in_mean, in_var, in_s2 (the layer's input, taken as the previous
  site's output in forward order, the image for the first site)
- rank (of the post-activation channel covariance): erank, nrank, srank
- cka (post-activation against the [0, 1] image): cka_input
- recon (linear read-out of the image from the post-activation): recon_r2
- ssim, dists (between the image and that read-out): ssim_input; dists_input, dists_noise
- theory: mu_pred, var_pred (Theorem 3.2: the sum of the measured moments of the parts the site's block declares,
  such as the branch and the shortcut; NaN, no prediction, where it declares none), surv_bound (Theorem 3.3)

Metrics that need the read-out's images (ssim, dists) take a second pass over the scoring half, once the read-out
is fit. Everything else is computed in one pass and kept as per-channel statistics. A site whose pre-activations or
activations are NaN or infinite (a model that overflows) gets NaN there, and one ProbeNotice names such sites; the
others report as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import re
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from . import __version__
from . import record as record_module
from ._io import atomic_write, os_error_reason, read_table, writable_directory
from .checkpoint import model_from_checkpoint
from .data import ImageData, downloads_allowed, load_data, synthetic_source
from .errors import CheckpointError, DissipateError, InvalidArgumentError, Notice
from .models import create_model
from .models.external import fixed_image_size
from .models.pnnh import explicit_code
from .plots import _probe_panels, plot_probe
from .metrics import ChannelCovariance, ChannelSurvival, LinearReadout, MinibatchCKA, Moments
from .metrics.cka import Reference, gram_linear
from .metrics.rank import decompose_together
from .metrics.perceptual import DistsUnavailable, as_rgb, load_dists, ssim_per_image
from .record import Component, Site, record, record_components
from .theory import cantelli_bound, component_moments, concatenation, sum_of_components

METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "survival": ("surviving", "dead", "always_on"),
    "moments": ("pre_mean", "pre_var", "in_mean", "in_var", "in_s2"),
    "rank": ("erank", "nrank", "srank"),
    "cka": ("cka_input",),
    "recon": ("recon_r2",),
    "ssim": ("ssim_input",),
    "dists": ("dists_input", "dists_noise"),
    "theory": ("mu_pred", "var_pred", "surv_bound"),
}
METRICS = tuple(METRIC_COLUMNS)
IDENTITY_COLUMNS = ("site", "depth", "kind", "module", "channels")
Progress = Callable[[Iterable, int, str], ContextManager[Iterable]]  # (items, length, label) -> wrapped items


def no_progress(items: Iterable, length: int, label: str) -> ContextManager[Iterable]:
    """The Progress that shows nothing."""
    return contextlib.nullcontext(items)


class ProbeNotice(Notice):
    """Something the probe could not compute, said once (such as DISTS without its weight files)."""


@dataclass(frozen=True)
class ProbeConfig:
    """What to measure and how; saved beside every probe output."""

    metrics: tuple[str, ...] = METRICS  # metric families (keys of METRIC_COLUMNS); all by default
    num_images: int = 256  # probe images; half fit the read-out, half score it
    batch_size: int = 64  # also the minibatch of the minibatch CKA
    device: str = "auto"  # auto: cuda where present, else cpu
    seed: int = 0  # which images of a real dataset, and the DISTS noise reference
    calibrate_bn: bool | None = None  # BN running stats from the probe data; None: when no BN has seen data yet
    include: tuple[str, ...] = ()  # globs of extra module paths to record as sites
    dists_images: int = 64  # DISTS runs a VGG16 per site and image: scored on at most this many held-out images
    download: bool = field(default_factory=downloads_allowed)  # may DISTS weights (and data) be fetched

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(parse_metrics(self.metrics)))
        for name in ("num_images", "batch_size", "dists_images"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_device(self.device)
        if not 0 <= self.seed < 2 ** 63:
            raise InvalidArgumentError(f"seed must be in [0, 2^63), got {self.seed}")


def parse_metrics(names: Iterable[str]) -> list[str]:
    """Metric families in canonical order from names or comma-separated lists; raises on an unknown name."""
    requested = [part.strip() for name in names for part in name.split(",") if part.strip()]
    for name in requested:
        if name not in METRIC_COLUMNS:
            close = difflib.get_close_matches(name, METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgumentError(f"unknown metric {name!r}{hint}; choose from {', '.join(METRICS)}")
    if not requested:
        raise InvalidArgumentError(f"no metric requested; choose from {', '.join(METRICS)}")
    return [name for name in METRICS if name in requested]


def check_device(device: str) -> str:
    """`device` if it names one that the probe and training understand: auto, cpu, cuda or cuda:N."""
    if device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device):
        return device
    raise InvalidArgumentError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N")


def resolve_device(device: str) -> torch.device:
    """The torch device that `device` (see check_device) names here: auto is cuda where torch sees one."""
    if check_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} asked for, but torch sees no CUDA device here")
    resolved = torch.device(device)
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise InvalidArgumentError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                                   "device(s) here")
    return resolved


@dataclass
class Batch:
    """What every site's metrics share within one batch."""

    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    index: torch.Tensor | None = None  # (B,) the samples' indices in the probe set (they split the read-out's halves)
    images_cka: Reference | None = None  # the images' side of CKA, made once for every site
    dists_images: int = 0  # second pass: how many of this batch's images DISTS scores


class SiteStats:
    """The streaming accumulators of one site, for the requested metric families."""

    def __init__(self, site: Site, metrics: Sequence[str]):
        self.site, self.metrics = site, frozenset(metrics)
        self.channels = 0
        self.survival = ChannelSurvival() if "survival" in metrics and site.activation else None  # NaN elsewhere
        self.pre = Moments() if self.metrics & {"moments", "theory"} else None
        self.post = Moments() if "moments" in metrics else None  # the next site's input moments
        self.covariance = ChannelCovariance() if "rank" in metrics else None
        self.cka = MinibatchCKA() if "cka" in metrics else None
        self.readout = LinearReadout() if self.metrics & {"recon", "ssim", "dists"} else None
        self.ssim_sum, self.ssim_count = 0.0, 0
        self.dists_sum, self.dists_count = 0.0, 0
        self.dists: nn.Module | None = None  # piq's DISTS, set for the second pass when available
        self.components: dict[Component, Moments] = {}  # the summands of the pre-activation its block declares
        self.finite_pre: torch.Tensor | bool = True  # see flag_non_finite
        self.finite_post: torch.Tensor | bool = True

    def accumulators(self) -> list:
        """Everything that holds this site's sums (the read-out apart: it keeps its map on the device)."""
        parts = [self, self.survival, self.pre, self.post, self.covariance, self.cka, *self.components.values()]
        return [part for part in parts if part is not None]

    def update(self, pre: torch.Tensor, post: torch.Tensor, batch: Batch) -> None:
        self.channels = post.shape[-1] if post.ndim == 3 else post.shape[1]
        if self.survival:
            self.survival.update(pre)
        if self.pre:
            self.pre.update(pre)
        if self.post:
            self.post.update(post)
        if self.covariance:
            self.covariance.update(post)
        if self.cka and batch.images_cka is not None:
            self.cka.update(gram_linear(post), batch.images_cka)
        if self.readout:
            self.readout.update(post, batch.images, batch.index)

    def flag_non_finite(self) -> None:
        """`finite_pre`, `finite_post`: whether the sums over the site's pre-activations (survival, moments) and over
        its activations (every other family) are all finite, as device flags that `_read_back` reads with the sums,
        so that the probe can say where the activations were NaN or infinite at no synchronisation of its own."""
        def finite(*named: tuple[object, str]) -> torch.Tensor | bool:  # (holder, attribute): None where not asked for
            sums = [value for holder, name in named if torch.is_tensor(value := getattr(holder, name, None))]
            return torch.stack([torch.isfinite(value).all() for value in sums]).all() if sums else True

        self.finite_pre = finite((self.survival, "positive"), (self.pre, "sum"), (self.pre, "sum_sq"))
        self.finite_post = finite((self.post, "sum"), (self.post, "sum_sq"), (self.covariance, "gram"),
                                  (self.covariance, "sum"), (self.cka, "sums"),
                                  *((part, "ftf") for part in (self.readout.parts if self.readout else ())))

    def score(self, post: torch.Tensor, batch: Batch) -> None:
        """Second pass: SSIM and DISTS between the scoring half's images and their read-out from this site."""
        recon = self.readout.reconstruct(post, batch.images.shape[-2:])
        if recon is None:
            return
        recon = recon.clamp(0, 1)
        if "ssim" in self.metrics:
            self.ssim_sum = self.ssim_sum + ssim_per_image(recon, batch.images).sum()  # on the device
            self.ssim_count += len(recon)
        if self.dists is not None and batch.dists_images:
            count = batch.dists_images
            self.dists_sum = self.dists_sum + self.dists(as_rgb(recon[:count]), as_rgb(batch.images[:count])).sum()
            self.dists_count += count

    def row(self, input_moments: tuple[float, float, float]) -> dict:
        row = {"site": self.site.name, "depth": self.site.depth, "kind": self.site.kind,
               "module": self.site.module_type, "channels": self.channels}
        if self.survival:
            row.update(self.survival.result())
        if self.pre:
            pre_mean, pre_var, _ = self.pre.result()
            row.update(pre_mean=pre_mean, pre_var=pre_var, in_mean=input_moments[0], in_var=input_moments[1],
                       in_s2=input_moments[2])
        if self.covariance:
            row.update(self.covariance.result())
        if self.cka:
            row["cka_input"] = self.cka.result()
        if "recon" in self.metrics:
            row["recon_r2"] = self.readout.r2()
        if "ssim" in self.metrics:
            row["ssim_input"] = float(self.ssim_sum) / self.ssim_count if self.ssim_count else float("nan")
        if "dists" in self.metrics:
            row["dists_input"] = float(self.dists_sum) / self.dists_count if self.dists_count else float("nan")
        if "theory" in self.metrics:
            row.update(self.prediction())
        return row

    def prediction(self) -> dict[str, float]:
        """Theorem 3.2's moments from the measured components (independent summands, or channels side by side where
        the block declares how many each has), and Theorem 3.3's bound; NaN (no prediction) where the site's block
        declares no parts, and at sites that are not activations (a transformer's attention and block outputs)."""
        parts = [(component_moments(c.role, *moments.result(), c.coder_ratio), c.channels)
                 for c, moments in self.components.items()]
        if not parts or not self.site.activation:
            return dict.fromkeys(("mu_pred", "var_pred", "surv_bound"), float("nan"))
        concatenated = all(channels for _, channels in parts)
        predicted = concatenation(parts) if concatenated else sum_of_components(part for part, _ in parts)
        return {"mu_pred": predicted.mean, "var_pred": predicted.var,
                "surv_bound": cantelli_bound(predicted.mean, predicted.var)}


def _as_image_data(data: ImageData | str | torch.Tensor, model: nn.Module, config: ProbeConfig) -> ImageData:
    if isinstance(data, ImageData):
        return data
    if isinstance(data, str):
        spec = getattr(model, "spec", None)
        return load_data(data, in_chans=spec.in_chans if spec else None, length=config.num_images,
                         download=config.download, seed=config.seed)
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or not data.is_floating_point() or data.min() < 0 or data.max() > 1:
            raise InvalidArgumentError(f"images: expected a float tensor (N, C, H, W) in [0, 1], "
                                       f"got {data.dtype} of shape {tuple(data.shape)}")
        mean, std = data.mean((0, 2, 3)), data.std((0, 2, 3)).clamp_min(1e-6)
        dataset = torch.utils.data.TensorDataset(data, torch.zeros(len(data), dtype=torch.long))
        return ImageData("tensor", dataset, 0, data.shape[1], data.shape[-1], tuple(mean.tolist()),
                         tuple(std.tolist()))
    raise InvalidArgumentError(f"data: expected a dataset name, ImageData or image tensor, got {type(data).__name__}")


def _model_name(model: nn.Module) -> str:
    return getattr(getattr(model, "spec", None), "name", type(model).__name__)


def _batches(data: ImageData, dataset, config: ProbeConfig, device: torch.device,
             progress: Progress | None = None, label: str = "") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(sample indices, images in [0, 1]) per batch, on `device`, streamed (never all in memory). Synthetic images
    are drawn there, a batch at a time."""
    wrap = progress or no_progress
    start = 0
    leaves, chosen = synthetic_source(dataset)
    if leaves is not None:
        batches = [chosen[i:i + config.batch_size] for i in range(0, len(chosen), config.batch_size)]
        with wrap(batches, len(batches), label) as bar:
            for batch in bar:
                yield torch.arange(start, start + len(batch), device=device), leaves.draw(batch, device)[0]
                start += len(batch)
        return
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=0)
    none = len(dataset)
    first_bad = torch.tensor(none, device=device)  # the first image that is not finite, read once at the end
    with wrap(loader, len(loader), label) as bar:
        for images, _ in bar:
            images = images.to(device, torch.float32)
            index = torch.arange(start, start + len(images), device=device)
            bad = ~torch.isfinite(images).flatten(1).all(1)
            first_bad = torch.minimum(first_bad, torch.where(bad, index, none).min())
            yield index, images
            start += len(images)
    if first_bad < none:
        raise InvalidArgumentError(f"{data.name} has NaN or infinite pixels in image {int(first_bad)}")


@contextlib.contextmanager
def _explain_forward_errors(model: nn.Module, data: ImageData) -> Iterator[None]:
    """A forward pass that fails on the data's images (wrong size or channels: a RuntimeError) becomes one sentence,
    as does any error from the forward of a model nobody here wrote (torchvision:, timm:, module:, or a model passed
    in), such as a library's AssertionError on the image size. What the probe's own hooks raise, and what else
    dissipate's own models raise, are bugs of dissipate and stay as they are."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise InvalidArgumentError(f"{_model_name(model)} ran out of memory on this device; "
                                   "lower the batch size") from None
    except (DissipateError, MemoryError):
        raise
    except Exception as error:
        in_hook = any(frame.f_code.co_filename == record_module.__file__ for frame, _ in traceback.walk_tb(
            error.__traceback__))
        users = not type(model).__module__.startswith(f"{__package__}.")
        if in_hook or not (users or isinstance(error, RuntimeError)):
            raise
        name, size, needed = _model_name(model), data.image_size, fixed_image_size(model)
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else "no message"
        images = f"{data.name} images of {data.in_chans}x{size}x{size}"
        if needed and needed != size:
            raise InvalidArgumentError(f"{name} takes {needed}x{needed} images, not {images}; resize them to "
                                       f"{needed} px") from None
        if isinstance(error, RuntimeError):
            raise InvalidArgumentError(f"{name} cannot take {images}: {reason}") from None
        raise InvalidArgumentError(f"{name}'s forward raised {type(error).__name__} on {images}: {reason}") from None


def _forward(model: nn.Module, data: ImageData, images: torch.Tensor) -> None:
    with _explain_forward_errors(model, data):
        model(data.normalize(images))


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def needs_bn_calibration(model: nn.Module) -> bool:
    """True when the model has batch norm and none of it has seen a batch (a model at initialisation)."""
    counts = [m.num_batches_tracked for m in _batch_norms(model)]
    return bool(counts) and None not in counts and not torch.stack(counts).any().item()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Set every BN's running statistics to the mean and variance over `inputs` (what the model sees): one pass in
    training mode with a cumulative average, no gradients. The model is left in eval mode. Each BN records the batches
    it counted (`calibration_batches`): statistics are not training, and the bound-check's level tells them apart."""
    norms = _batch_norms(model)
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
    model.train()
    try:
        for seen, x in enumerate(inputs):
            for norm in norms:  # batch k weighs 1 / (k + 1): every batch the same, as momentum=None would (whose
                norm.momentum = 1 / (seen + 1)  # 1 / num_batches_tracked reads the count back from the device)
            model(x)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
            if norm.num_batches_tracked is not None:
                norm.calibration_batches = norm.num_batches_tracked.clone()  # kept on the device: no host read
        model.eval()


def _check_finite_weights(model: nn.Module) -> None:
    """One read for the whole model: which of its floating tensors hold NaN or infinite values. A lazy module's
    parameter that no forward pass has sized yet is refused first: it holds no values to check or probe."""
    named = [(name, t) for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()]
    for name, tensor in named:
        if nn.parameter.is_lazy(tensor):
            module = type(model.get_submodule(name.rpartition(".")[0])).__name__
            raise InvalidArgumentError(f"{_model_name(model)}'s {name} is not initialised yet (a {module} sizes it on "
                                       "the first forward pass): run a batch through the model before probing it, "
                                       "or build it with its sizes")
    if not named:
        return
    finite = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named]).tolist()
    for (name, _), ok in zip(named, finite, strict=True):
        if not ok:
            raise InvalidArgumentError(f"{_model_name(model)}'s {name} holds NaN or infinite values "
                                       "(a diverged run?); probe an earlier checkpoint")


def probe(model: nn.Module, data: ImageData | str | torch.Tensor = "synthetic", config: ProbeConfig | None = None,
          progress: Progress | None = None, **overrides) -> pd.DataFrame:
    """Measure every activation site of `model` on `data`; one row per site, in forward order.

    `data` is an ImageData, a dataset name (DATASETS) or a tensor of images in [0, 1]. Settings come from `config`
    (a ProbeConfig) with keyword `overrides` of its fields, e.g. `probe(model, "synthetic", num_images=512)`.
    `progress(items, length, label)`, when given, wraps each pass over the batches (the CLI's progress bar).

    A model whose batch norm has never seen data is calibrated on the probe set first (`calibrate_bn`): that is what
    "at initialisation" means here. The model is moved to the probe's device. PNNH blocks are switched to their
    explicit implementation while probed (their code crosses each activation as a +/- pair) and back after. The
    frame's `attrs` hold the resolved config, the model's and the data's names, and how many PNNH blocks the probe
    switched from fused to explicit.
    """
    config = dataclasses.replace(config or ProbeConfig(), **overrides)
    device = resolve_device(config.device)
    data = _as_image_data(data, model, config)
    dataset = data.subset(config.num_images, config.seed)
    _check_finite_weights(model)
    model.to(device)
    was_training = model.training
    calibrate = needs_bn_calibration(model) if config.calibrate_bn is None else config.calibrate_bn
    with explicit_code(model) as switched:  # PNNH blocks carry their code through each activation while probed
        try:
            if calibrate:
                with _explain_forward_errors(model, data):
                    calibrate_batchnorm(model, (data.normalize(images) for _, images in
                                                _batches(data, dataset, config, device, progress, "Calibrating BN")))
            model.eval()
            stats, image_moments = _measure(model, data, dataset, config, device, progress)
            dists_noise = _score_readouts(model, data, dataset, config, device, stats, progress)
        finally:
            model.train(was_training)

    for site_stats in stats.values():
        site_stats.flag_non_finite()
    _read_back(stats.values(), image_moments)
    _note_non_finite(stats.values())
    rows, layer_input = [], image_moments.result()
    for site_stats in stats.values():
        rows.append(site_stats.row(layer_input))
        layer_input = site_stats.post.result() if site_stats.post else layer_input
    frame = pd.DataFrame(rows, columns=[*IDENTITY_COLUMNS, *(c for m in config.metrics for c in METRIC_COLUMNS[m])])
    if "dists" in config.metrics:
        frame["dists_noise"] = dists_noise
    frame.attrs.update(model=_model_name(model), data=data.name, calibrated_bn=calibrate,
                       config=dataclasses.asdict(config), pnnh_switched_to_explicit=switched)
    return frame


@torch.no_grad()
def _measure(model, data, dataset, config, device, progress) -> tuple[dict[str, SiteStats], Moments]:
    """The one pass over every probe image: each site's accumulators, and the moments of the normalised images."""
    stats: dict[str, SiteStats] = {}
    components: dict[Component, Moments] = {}
    image_moments = Moments()
    batch = Batch(torch.empty(0))

    def on_site(site: Site, pre: torch.Tensor, post: torch.Tensor) -> None:
        if site.name not in stats:
            stats[site.name] = SiteStats(site, config.metrics)
        stats[site.name].update(pre, post, batch)

    def on_component(component: Component, value: torch.Tensor) -> None:
        components.setdefault(component, Moments()).update(value)

    with record(model, on_site, config.include), \
            (record_components(model, on_component) if "theory" in config.metrics else contextlib.nullcontext()):
        for index, images in _batches(data, dataset, config, device, progress, "Probing"):
            images_cka = Reference(gram_linear(images)) if "cka" in config.metrics and len(images) >= 4 else None
            batch = Batch(images, index=index, images_cka=images_cka)
            image_moments.update(data.normalize(images))
            _forward(model, data, images)
    for component, moments in components.items():
        if component.site in stats:
            stats[component.site].components[component] = moments
    return stats, image_moments


@torch.no_grad()
def _score_readouts(model, data, dataset, config, device, stats, progress) -> float:
    """The second pass, over the read-out's scoring half (odd sample indices): SSIM and DISTS at every site.
    Returns DISTS between the images and noise of their mean and variance (NaN without DISTS)."""
    wants_ssim = "ssim" in config.metrics
    dists = None
    if "dists" in config.metrics:
        try:
            dists = load_dists(config.download).to(device)
        except DistsUnavailable as unavailable:
            warnings.warn(str(unavailable), ProbeNotice, stacklevel=4)  # past no_grad's wrapper and probe: the caller
    if not wants_ssim and dists is None:
        return float("nan")
    for site_stats in stats.values():
        site_stats.dists = dists

    batch = Batch(torch.empty(0))
    noise_distances: list[torch.Tensor] = []
    generator = torch.Generator(device=device).manual_seed(config.seed)
    held_out = Subset(dataset, range(1, len(dataset), 2))

    def on_site(site: Site, pre: torch.Tensor, post: torch.Tensor) -> None:
        if site.name in stats:
            stats[site.name].score(post, batch)

    with record(model, on_site, config.include):
        for _, images in _batches(data, held_out, config, device, progress, "Scoring read-outs"):
            dists_images = min(len(images), config.dists_images - sum(map(len, noise_distances))) if dists else 0
            batch = Batch(images, dists_images=dists_images)
            _forward(model, data, images)
            if dists_images:
                reference = images[:dists_images]
                noise = (reference.mean((2, 3), keepdim=True) + reference.std((2, 3), keepdim=True)
                         * torch.randn(reference.shape, generator=generator, device=device)).clamp(0, 1)
                noise_distances.append(dists(as_rgb(noise), as_rgb(reference)))
    return torch.cat(noise_distances).mean().item() if noise_distances else float("nan")


EIG_ON_HOST_MAX = 256  # channels: larger covariances are decomposed on their accelerator, batched by size. On 2
# CPU cores a float64 eigvalsh takes 2.4 ms at 256 channels, 13 ms at 512, 67 ms at 1024 and 340 ms at 2048; on an
# H200, resnet50's 49 (64 to 2048 channels) took 4 ms each on average in a profile of its probe, a fixed cost that
# dominates the small ones.


def _read_back(stats: Iterable[SiteStats], *others) -> None:
    """The probe's one read: every site's sums come to the CPU through one copy per device (the covariances of more
    than EIG_ON_HOST_MAX channels as their singular values, decomposed where they are), after which their results
    cost no synchronisation. Before, a GPU probe waited for the device at each of its ~20 numbers per site."""
    stats = list(stats)
    decompose_together([s.covariance for s in stats if s.covariance and s.covariance.count >= 2
                        and torch.is_tensor(s.covariance.gram) and s.covariance.gram.device.type != "cpu"
                        and s.covariance.gram.shape[0] > EIG_ON_HOST_MAX])
    holders = [*(part for site_stats in stats for part in site_stats.accumulators()), *others]
    slots = [(holder, name, value) for holder in holders for name, value in vars(holder).items()
             if isinstance(value, torch.Tensor)]  # those on the CPU too: one path, whatever the device
    for device in {value.device for _, _, value in slots}:
        here = [slot for slot in slots if slot[2].device == device]
        flat = torch.cat([value.reshape(-1).double() for _, _, value in here]).cpu()
        for (holder, name, value), part in zip(here, flat.split([v.numel() for _, _, v in here]), strict=True):
            setattr(holder, name, part.view(value.shape).to(value.dtype))


def _note_non_finite(stats: Iterable[SiteStats]) -> None:
    """One ProbeNotice naming the sites whose pre-activations or activations were NaN or infinite (their sums,
    `SiteStats.flag_non_finite`, read back): the metrics measured from them are NaN there, and every other site
    still reports. A net whose last layers overflow is still worth a table; a decomposition of NaN is not."""
    found = {}
    for site_stats in stats:
        what = [name for name, finite in (("pre-activations", site_stats.finite_pre),
                                          ("activations", site_stats.finite_post)) if not finite]
        if what:
            found[site_stats.site.name] = " and ".join(what)
    if found:
        named = ", ".join(f"{site} ({what})" for site, what in list(found.items())[:5])
        more = f" and {len(found) - 5} more sites" if len(found) > 5 else ""
        warnings.warn(f"NaN or infinite values (or too large to sum) at {named}{more}: what is measured from them is "
                      "NaN or infinite there; the model overflows, or its weights are broken", ProbeNotice,
                      stacklevel=3)


def probe_model(name: str, data: ImageData, checkpoint: dict | None = None, source: str = "checkpoint",
                seed: int = 0, **options) -> nn.Module:
    """The model `name` shaped for `data` (classes, channels, image size): with the weights of `checkpoint` (a dict
    from `read_checkpoint`), or at initialisation from `seed` with model `options`."""
    if checkpoint is not None:
        expected = checkpoint.get("in_chans")
        if expected is not None and expected != data.in_chans:
            raise CheckpointError(f"{source} holds a model for {expected}-channel images, and {data.name} has "
                                  f"{data.in_chans}-channel images")
        if options and checkpoint["format"] is not None:
            raise InvalidArgumentError(f"model options are for a model at initialisation or a bare state_dict; "
                                       f"{source} records its own: {checkpoint['model_kwargs']}")
    shape = dict(num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size, **options)
    torch.manual_seed(seed)  # the same seed gives the same network at initialisation
    if checkpoint is None:
        return create_model(name, **shape)
    return model_from_checkpoint(checkpoint, name, source, **shape)


def save_probe(frame: pd.DataFrame, out: str | Path, title: str, **run) -> None:
    """probe.csv and probe.json (the rows), probe_config.json (`run` and the frame's attrs) and probe.png, each
    written atomically into `out`."""
    out = writable_directory(out, "the output directory")
    atomic_write(out / "probe.csv", lambda f: f.write(frame.to_csv(index=False).encode()))
    atomic_write(out / "probe.json", lambda f: f.write(frame.to_json(orient="records", indent=2).encode()))
    settings = json.dumps({"version": __version__, **run, **frame.attrs}, indent=2, default=str)
    atomic_write(out / "probe_config.json", lambda f: f.write(settings.encode()))
    plot_probe(frame, out / "probe.png", title=title)


def _recorded_version(config: Path) -> str | None:
    """The version of dissipate that probe_config.json says wrote its probe; None, silently, when there is no such
    file (a training run's probes.csv), and with a notice naming it when it cannot say (not a JSON object with a
    version, or not a file)."""
    if not os.path.lexists(config):
        return None
    try:
        settings = json.loads(config.read_text())
        return str(settings["version"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        why = ("it is not a file" if config.is_dir() else "it has no version" if isinstance(error, KeyError)
               else "it is not a JSON object" if isinstance(error, (ValueError, TypeError)) else os_error_reason(error))
        warnings.warn(f"{config} cannot be read ({why}), so the probe beside it is compared without its version",
                      Notice, stacklevel=3)
        return None


def read_probes(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """{label: probe frame} from probe.csv files (`dissipate probe`) and probes.csv files (`dissipate train
    --probe-every`: one series per epoch), for `plots.plot_probes`. A series is labelled by its file's folder, and
    its epoch. Files that measured different metric families, or that different versions of dissipate wrote (as the
    probe_config.json beside them says), are refused with one sentence: their rows would not compare. So is a file
    that would draw nothing or nonsense: no rows, a value outside its column's rules (`_io.COLUMN_RULES`: a depth
    that is not a whole number from 0, a surviving fraction outside [0, 1], ...), a metric that is text, a site listed
    twice (in one epoch), or no value in any column the figure draws. A probe_config.json that cannot be read is
    named in a notice, and its file compared without a version."""
    series: dict[str, pd.DataFrame] = {}
    families: dict[str, str] = {}
    versions: dict[str, str] = {}
    for path in map(Path, paths):
        def problem(why: str, path: Path = path) -> InvalidArgumentError:
            return InvalidArgumentError(f"{path} is not a probe's CSV that can be drawn: {why}")

        frame = read_table(path, ("site", "depth", "channels"), problem)
        if frame.empty:
            raise InvalidArgumentError(f"{path} has a header and no rows: no site to draw")
        for column in (c for m in METRIC_COLUMNS.values() for c in m if c in frame):
            values = pd.to_numeric(frame[column], errors="coerce")
            text = values.isna() & frame[column].notna()
            if text.any():
                raise problem(f"its {column} column holds {frame[column][text].iloc[0]!r} in row "
                              f"{int(text.to_numpy().argmax()) + 1}, where a number belongs")
            frame[column] = values
        families[str(path)] = ", ".join(m for m, columns in METRIC_COLUMNS.items() if set(columns) & set(frame))
        version = _recorded_version(path.parent / "probe_config.json")
        if version is not None:
            versions[str(path)] = version
        label = path.parent.name or path.stem
        label = str(path) if any(name.split(", epoch ")[0] == label for name in series) else label
        groups = frame.groupby("epoch", sort=True) if "epoch" in frame else [(None, frame)]
        for epoch, rows in groups:
            twice = rows["site"][rows["site"].duplicated()]
            if len(twice):
                where = "" if epoch is None else f" in epoch {epoch}"
                raise InvalidArgumentError(f"{path} lists site {twice.iloc[0]} twice{where}: one row per site")
            if not any(values.notna().any() for _, values, _ in _probe_panels(rows)):
                raise InvalidArgumentError(f"{path} has nothing to draw: surviving, erank, cka_input, recon_r2 and "
                                           "dists_input are all missing or NaN")
            series[label if epoch is None else f"{label}, epoch {epoch}"] = rows.reset_index(drop=True)
    for what, found in (("metric families", families), ("versions of dissipate", versions)):
        if len(set(found.values())) > 1:
            shown = "; ".join(f"{path}: {value}" for path, value in found.items())
            raise InvalidArgumentError(f"these probes have different {what} ({shown}); probe them alike to compare")
    return series
