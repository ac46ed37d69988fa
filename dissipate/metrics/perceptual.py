"""Perceptual similarity between the input and its linear read-out: SSIM and DISTS, both computed by piq.

DISTS needs two weight files in torch's hub cache (`$TORCH_HOME/hub/checkpoints/`): torchvision's VGG16 ImageNet
weights and the DISTS alpha/beta weights. `load_dists` looks in the cache first, fetches only when allowed, reads
both without unpickling anything beyond tensors, and otherwise raises `DistsUnavailable` with one sentence on how to
provide them, so that the caller can mark the DISTS columns unavailable and go on.

References:
    Wang, Bovik, Sheikh and Simoncelli. Image Quality Assessment: From Error Visibility to Structural Similarity.
    IEEE TIP 2004.
    Ding, Ma, Wang and Simoncelli. Image Quality Assessment: Unifying Structure and Texture Similarity. IEEE TPAMI 2020.
"""

from __future__ import annotations

import contextlib
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F

from .._io import atomic_write, load_weights
from ..errors import CheckpointError
from ._validate import check_tensor

VGG16_FILE, DISTS_WEIGHTS_FILE = "vgg16-397923af.pth", "dists_weights.pt"
DISTS_FILES = {
    VGG16_FILE: "https://download.pytorch.org/models/vgg16-397923af.pth",
    DISTS_WEIGHTS_FILE: "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt",
}
DISTS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")  # piq's DISTS: VGG16 layers it compares
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # the image, then those layers: alpha's and beta's splits
FETCH_FAILED = "dists-fetch-failed"  # in the cache: a fetch that failed, not to be tried on every probe


class DistsUnavailable(RuntimeError):
    """DISTS cannot run here: its weight files are missing and cannot be fetched, or do not load."""


def dists_cache_dir() -> Path:
    """Where the DISTS weight files are kept: torch's hub cache, where piq would fetch them."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_dists(download: bool = False) -> torch.nn.Module:
    """piq's DISTS (per-image values, `reduction="none"`), from the cached weight files; fetched first when
    `download` is true. Raises DistsUnavailable with one short sentence when that is not possible. A fetch that
    failed is not tried again (it would print a download line and wait for the network on every probe) until
    FETCH_FAILED in the cache is deleted.

    Both files are read here with `weights_only=True` and handed to piq as tensors: piq and torchvision would load
    them through torch.hub, which unpickles, so a hostile file in the cache could run code."""
    cache = dists_cache_dir()
    failed_before = cache / FETCH_FAILED
    missing = [name for name in DISTS_FILES if not (cache / name).is_file()]
    if missing and (not download or failed_before.exists()):
        why = f"fetching them failed before; delete {FETCH_FAILED} to retry" if download else "downloads are off"
        raise DistsUnavailable(f"DISTS is n/a ({why}; {' and '.join(missing)} go in {cache})")  # one line, on every
        # offline probe
    try:
        for name in missing:
            cache.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(DISTS_FILES[name], str(cache / name), progress=False)
    except (urllib.error.URLError, OSError) as error:
        message = f"{error}\n".encode()
        with contextlib.suppress(OSError):
            atomic_write(failed_before, lambda f: f.write(message))
        raise DistsUnavailable(f"DISTS is n/a: fetching its weights into {cache} failed ({type(error).__name__}); "
                               "see docs/usage.md, DISTS") from None
    try:
        return _dists(load_weights(cache / VGG16_FILE), load_weights(cache / DISTS_WEIGHTS_FILE)).eval()
    except (CheckpointError, AttributeError, KeyError, RuntimeError, TypeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DistsUnavailable(f"DISTS is n/a: its weight files in {cache} do not load ({reason})") from None


def _dists(vgg_state: dict, dists_state: dict) -> torch.nn.Module:
    """piq.DISTS built from state dicts already loaded: what `piq.DISTS()` builds from the files it fetches.
    DISTS's own constructor only loads alpha and beta and hands them to ContentLoss's, which this calls directly
    with a VGG16 that holds `vgg_state` (a strict load: missing or misshapen weights are an error)."""
    import piq  # here, not at the top: piq imports torchvision.models, two seconds of every command's start-up
    from piq.perceptual import VGG16_LAYERS
    from torchvision.models import vgg16

    with torch.device("meta"):  # no random initialisation of 138M parameters that are replaced at once
        vgg = vgg16()
    vgg.load_state_dict(vgg_state, assign=True)
    alpha, beta = dists_state["alpha"], dists_state["beta"]
    weights = [*torch.split(alpha, DISTS_CHANNELS, dim=1), *torch.split(beta, DISTS_CHANNELS, dim=1)]
    dists = piq.DISTS.__new__(piq.DISTS)
    piq.ContentLoss.__init__(dists, vgg.features, layers=[VGG16_LAYERS[name] for name in DISTS_LAYERS],
                             weights=weights, replace_pooling=True, reduction="none", normalize_features=False,
                             allow_layers_weights_mismatch=True)
    return dists


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """DISTS's VGG takes three channels: grey images are repeated."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (piq, data range 1) per image between (B, C, H, W) tensors in [0, 1]. The Gaussian window is piq's 11
    pixels, narrowed to the largest odd size that fits images smaller than that.

    It is `piq.ssim(x, y, data_range=1, reduction="none")` less piq's check that the values lie in [0, 1], which
    reads them back to the host at every call; the probe calls this once per site and batch, on images in range."""
    check_tensor(x, "x", min_ndim=4, max_ndim=4)
    check_tensor(y, "y", min_ndim=4, max_ndim=4)
    from piq.functional import gaussian_filter  # see load_dists
    from piq.ssim import _ssim_per_channel

    x, y = x.float(), y.float()
    factor = max(1, round(min(x.shape[-2:]) / 256))  # piq's average-pooling of large images
    if factor > 1:
        x, y = F.avg_pool2d(x, kernel_size=factor), F.avg_pool2d(y, kernel_size=factor)
    kernel_size = min(11, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
    kernel = gaussian_filter(kernel_size, 1.5, device=x.device, dtype=x.dtype).repeat(x.shape[1], 1, 1, 1)
    return _ssim_per_channel(x, y, kernel, data_range=1.0)[0].mean(1)
