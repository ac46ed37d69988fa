"""Perceptual similarity between the input and its linear read-out: SSIM and DISTS, both computed by piq.

DISTS needs two weight files in torch's hub cache (`$TORCH_HOME/hub/checkpoints/`): torchvision's VGG16 ImageNet
weights and the DISTS alpha/beta weights. piq's DISTS downloads them in its constructor; `load_dists` looks in the
cache first, fetches only when allowed, and otherwise raises `DistsUnavailable` with one sentence on how to provide
them, so that the caller can mark the DISTS columns unavailable and go on.

References:
    Wang, Bovik, Sheikh and Simoncelli. Image Quality Assessment: From Error Visibility to Structural Similarity.
    IEEE TIP 2004.
    Ding, Ma, Wang and Simoncelli. Image Quality Assessment: Unifying Structure and Texture Similarity. IEEE TPAMI 2020.
"""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import torch

from ._validate import check_tensor

DISTS_FILES = {
    "vgg16-397923af.pth": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "dists_weights.pt": "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt",
}


class DistsUnavailable(RuntimeError):
    """DISTS cannot run here: its weight files are missing and cannot be fetched, or do not load."""


def dists_cache_dir() -> Path:
    """Where piq (through torch.hub) looks for the DISTS weight files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_dists(download: bool = False) -> torch.nn.Module:
    """piq's DISTS (per-image values, `reduction="none"`), from the cached weight files; fetched first when
    `download` is true. Raises DistsUnavailable, naming the files and the directory, when that is not possible."""
    cache = dists_cache_dir()
    missing = [name for name in DISTS_FILES if not (cache / name).is_file()]
    how_to = (f"to compute DISTS, put {' and '.join(DISTS_FILES)} in {cache} "
              f"(from {' and '.join(DISTS_FILES.values())}), or set TORCH_HOME to a directory whose "
              "hub/checkpoints holds them")
    if missing and not download:
        raise DistsUnavailable(f"DISTS is unavailable: {', '.join(missing)} not in {cache}; {how_to}")
    import piq  # here, not at the top: piq imports torchvision.models, two seconds of every command's start-up

    try:
        with warnings.catch_warnings():  # piq asks torchvision for `pretrained=True`, deprecated since 0.13
            warnings.simplefilter("ignore")
            return piq.DISTS(reduction="none").eval()
    except (urllib.error.URLError, OSError) as error:
        raise DistsUnavailable(f"DISTS is unavailable: fetching its weights failed ({error}); {how_to}") from None
    except Exception as error:  # noqa: BLE001 -- torch.load raises many types for a bad file; each means the same here
        raise DistsUnavailable(f"DISTS is unavailable: its weight files in {cache} do not load "
                               f"({str(error).splitlines()[0]}); {how_to}") from None


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """DISTS's VGG takes three channels: grey images are repeated."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (piq, data range 1) per image between (B, C, H, W) tensors in [0, 1]. The Gaussian window is piq's 11
    pixels, narrowed to the largest odd size that fits images smaller than that."""
    check_tensor(x, "x", min_ndim=4, max_ndim=4)
    check_tensor(y, "y", min_ndim=4, max_ndim=4)
    import piq  # see load_dists

    kernel_size = min(11, (min(x.shape[-2:]) - 1) // 2 * 2 + 1)
    return piq.ssim(x.float(), y.float(), data_range=1.0, kernel_size=kernel_size, reduction="none")
