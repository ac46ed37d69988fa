"""Image sources for probing and training: `synthetic`, `cifar10`, `cifar100`, `fashion-mnist`, `folder:PATH`,
`imagenet:PATH`.

Each source yields (image, label) pairs with the image a float tensor in [0, 1], (C, H, W); `ImageData.normalize`
applies the source's per-channel mean and standard deviation before a model sees it. The [0, 1] image is what the
metrics compare against (SSIM and DISTS need that range).

Datasets live in the data dir: `data_dir=`, else `$DISSIPATE_DATA`, else `~/.cache/dissipate`. A dataset that is not
there is downloaded (torchvision's progress bar) unless `$DISSIPATE_OFFLINE` is set; one that can be neither found
nor fetched raises DatasetNotFoundError with one sentence naming the dataset, the directory and the fix.
"""

from __future__ import annotations

import difflib
import gzip
import os
import shutil
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ._io import atomic_write
from .errors import DissipateError, InvalidArgumentError
from .synthetic import DeadLeavesSpec

DATASETS = ("synthetic", "cifar10", "cifar100", "fashion-mnist", "folder:PATH", "imagenet:PATH")
MAX_IMAGE_SIZE = 1024  # a larger --image-size is a typo far more often than a wish (and would not fit in memory)
SYNTHETIC_VERSION = 2  # of the dead-leaves generator: 2 draws batches (dissipate.synthetic), 1 drew one at a time
MAX_SYNTHETIC_IMAGES = 100_000  # beyond what any probe or test split here needs: a typo, more likely
FOLDER_TEST_EVERY = 10  # folder:PATH holds one split; every tenth image (in ImageFolder's order) is held out
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist package
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DatasetNotFoundError(DissipateError, FileNotFoundError):
    """A dataset that is not in the data dir and cannot be downloaded."""


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data dir: `path`, else $DISSIPATE_DATA, else ~/.cache/dissipate. InvalidArgumentError when it is a file,
    which would otherwise surface as an error about a folder inside it."""
    root = Path(path or os.environ.get("DISSIPATE_DATA") or Path.home() / ".cache" / "dissipate").expanduser()
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(f"the data dir {root} is a file, not a directory; point --data-dir (or "
                                   "$DISSIPATE_DATA) at a directory")
    return root


def downloads_allowed() -> bool:
    """False when $DISSIPATE_OFFLINE is set to anything but 0/false/no: nothing is fetched from the network then."""
    return os.environ.get("DISSIPATE_OFFLINE", "").strip().lower() in ("", "0", "false", "no")


@dataclass(frozen=True)
class ImageData:
    """A dataset of (image in [0, 1], label) pairs and what a model needs to know about it."""

    name: str
    dataset: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> what the model sees: per-channel (x - mean) / std."""
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype)[:, None, None]
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype)[:, None, None]
        return (images - mean) / std

    def subset(self, num_images: int, seed: int = 0) -> Dataset:
        """`num_images` of the dataset, a random choice fixed by `seed` (in index order), or all of them when it has
        exactly that many."""
        chosen = seeded_choice(len(self.dataset), num_images, seed, self.name)
        return self.dataset if chosen is None else Subset(self.dataset, chosen)


def seeded_choice(total: int, count: int | None, seed: int, name: str) -> list[int] | None:
    """A random choice of `count` of `total` indices fixed by `seed`, in index order; None for all of them."""
    if count is None or count == total:
        return None
    if count > total:
        raise InvalidArgumentError(f"{name} has {total} images; asked for {count}")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values.tolist()


class DeadLeaves(Dataset):
    """Deterministic dead-leaves images (`dissipate.synthetic`): opaque discs with power-law radii, one of
    `num_classes` palette colours each; the label is the class of the disc over the image centre.

    Image `index` depends only on (seed, index, size, channels, train): the train split's images are other images.
    `draw(indices, device)` makes a batch at once, on any device; `__getitems__` lets a DataLoader use it.
    """

    def __init__(self, length: int, image_size: int = 32, in_chans: int = 3, seed: int = 0, num_classes: int = 10,
                 train: bool = False):
        if length < 1 or image_size < 1 or in_chans < 1:
            raise InvalidArgumentError(f"synthetic needs a positive length, size and channel count, got "
                                       f"{length}, {image_size}, {in_chans}")
        self.length, self.image_size, self.in_chans = length, image_size, in_chans
        self.split = 1 if train else 0
        self.spec = DeadLeavesSpec(image_size, in_chans, seed, num_classes)

    def __len__(self) -> int:
        return self.length

    def draw(self, indices, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0, 1] and labels (B,) of `indices`, drawn on `device` (the CPU by default)."""
        indices = torch.as_tensor(indices, dtype=torch.long, device="cpu").reshape(-1)  # where the plan is made
        if len(indices) and not (0 <= int(indices.min()) and int(indices.max()) < self.length):
            raise IndexError(f"synthetic images are 0 to {self.length - 1}")
        return self.spec.draw(indices, self.split, device)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.draw([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        images, labels = self.draw(indices)
        return list(zip(images, labels.tolist(), strict=True))


def is_synthetic(spec: str) -> bool:
    return spec.partition(":")[0] == "synthetic"


def synthetic_source(dataset: Dataset) -> tuple[DeadLeaves | None, list[int]]:
    """The dead-leaves set under `dataset` (itself, or through Subsets) and the indices it takes from it, so that a
    caller can draw them a batch at a time on its device; (None, []) for any other dataset."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    return (dataset, indices) if isinstance(dataset, DeadLeaves) else (None, [])


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, [d.split(":")[0] for d in DATASETS], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _torchvision():
    """torchvision, imported on first use: importing it takes seconds, and synthetic data does not need it."""
    import torchvision
    import torchvision.transforms.v2

    return torchvision


def _to_tensor(image_size: int | None, natural: int) -> Callable:
    v2 = _torchvision().transforms.v2
    steps = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if image_size is not None and image_size != natural:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    return v2.Compose(steps)


def _torchvision_dataset(name: str, make: Callable[[bool], Dataset], root: Path, download: bool) -> Dataset:
    """`make(download)`, with torchvision's "not found" and network errors turned into one sentence, and files that
    are there but damaged (unreadable, or images and labels that do not match) named."""
    damaged = f"{name} in {root} is damaged ({{}}); delete its files to fetch them again, or point --data-dir elsewhere"
    try:
        dataset = make(download)
    except (AssertionError, EOFError, IndexError, ValueError) as error:  # what torchvision's readers raise on junk
        raise InvalidArgumentError(damaged.format(str(error).splitlines()[0][:100] if str(error) else
                                                  type(error).__name__)) from None
    except (RuntimeError, urllib.error.URLError, OSError) as error:
        why = "downloads are off ($DISSIPATE_OFFLINE)" if not download else \
            f"it could not be downloaded ({str(error).splitlines()[0][:100]})"
        raise DatasetNotFoundError(
            f"{name} is not in {root} (or is damaged there) and {why}; run once with network access, copy "
            "the dataset into that directory, or point --data-dir (or $DISSIPATE_DATA) at a directory that has it"
        ) from None
    labels = np.asarray(dataset.targets)
    if not len(labels) or len(dataset.data) != len(labels) or not 0 <= labels.min() <= labels.max() < len(
            dataset.classes):
        span = f", labels from {labels.min()} to {labels.max()}" if len(labels) else ""
        raise InvalidArgumentError(damaged.format(f"{len(dataset.data)} images, {len(labels)} labels{span}"))
    return dataset


def _stage_debian_fashion_mnist(raw: Path) -> None:
    """Unpack the Debian package's gzipped IDX files into torchvision's raw folder, where it expects them."""
    for gz in sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")):
        target = raw / gz.name[:-3]
        if not target.exists():
            raw.mkdir(parents=True, exist_ok=True)
            with gzip.open(gz, "rb") as source:
                atomic_write(target, lambda f, source=source: shutil.copyfileobj(source, f))


def load_data(spec: str, *, train: bool = False, image_size: int | None = None, in_chans: int | None = None,
              length: int = 256, root: str | os.PathLike | None = None, download: bool | None = None,
              seed: int = 0) -> ImageData:
    """The dataset named by `spec` (one of DATASETS), its test split unless `train`.

    `image_size` resizes (and is the size of synthetic images, 32 by default); `in_chans` and `length` shape synthetic
    images only; `download` defaults to `downloads_allowed()`.
    """
    root_dir = data_dir(root)
    download = downloads_allowed() if download is None else download
    name, _, path = spec.partition(":")
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise InvalidArgumentError(f"image size must be between 1 and {MAX_IMAGE_SIZE} pixels, got {image_size}")
    if name == "synthetic":
        if path:
            raise InvalidArgumentError(f"synthetic takes no ':' suffix, got {spec!r}")
        if not 1 <= length <= MAX_SYNTHETIC_IMAGES:
            raise InvalidArgumentError(f"synthetic makes between 1 and {MAX_SYNTHETIC_IMAGES} images, asked for "
                                       f"{length}")
        size, chans = image_size or 32, in_chans or 3
        mean, std = (0.5,) * chans, (0.25,) * chans
        return ImageData(name, DeadLeaves(length, size, chans, seed, train=train), 10, chans, size, mean, std)
    if name in ("cifar10", "cifar100"):
        datasets = _torchvision().datasets
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        transform = _to_tensor(image_size, 32)
        dataset = _torchvision_dataset(name, lambda dl: cls(root_dir, train=train, transform=transform, download=dl),
                                       root_dir, download)
        mean, std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)) if name == "cifar10" else \
            ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
        return ImageData(name, dataset, len(dataset.classes), 3, image_size or 32, mean, std)
    if name == "fashion-mnist":
        _stage_debian_fashion_mnist(root_dir / "FashionMNIST" / "raw")
        transform = _to_tensor(image_size, 28)
        dataset = _torchvision_dataset(
            name, lambda dl: _torchvision().datasets.FashionMNIST(root_dir, train=train, transform=transform, download=dl),
            root_dir, download)
        return ImageData(name, dataset, 10, 1, image_size or 28, (0.2860,), (0.3530,))
    if name in ("folder", "imagenet"):
        if not path:
            raise InvalidArgumentError(f"{name} needs the path of its images: --data {name}:PATH")
        return _image_folder(name, Path(path).expanduser(), train, image_size or 224)
    raise InvalidArgumentError(f"unknown dataset {spec!r}{_suggest(name)}; choose one of {', '.join(DATASETS)}")


def _image_folder(name: str, path: Path, train: bool, image_size: int) -> ImageData:
    """ImageFolder over `path` (for imagenet: its train/ or val/ split), resized and centre-cropped to
    `image_size` as ImageNet evaluation does (shorter side to 8/7 of the crop). A plain folder holds one split: its
    test split is every FOLDER_TEST_EVERY-th image in ImageFolder's order (by class, then file name), its training
    split the others, so that a net is never scored on the images it trained on."""
    if name == "imagenet":
        path = path / ("train" if train else "val")
    if not path.is_dir():
        raise DatasetNotFoundError(f"{name}: no directory {path}; expected one subdirectory of images per class")
    torchvision = _torchvision()
    v2 = torchvision.transforms.v2
    transform = v2.Compose([v2.ToImage(), v2.Resize(image_size * 8 // 7, antialias=True), v2.CenterCrop(image_size),
                            v2.ToDtype(torch.float32, scale=True)])
    try:
        dataset = torchvision.datasets.ImageFolder(str(path), transform=transform, loader=read_image)
    except (FileNotFoundError, OSError) as error:
        raise DatasetNotFoundError(f"{name}: {path} holds no images in class subdirectories ({error})") from None
    if name == "folder":
        dataset = FolderSplit(dataset, [i for i in range(len(dataset)) if (i % FOLDER_TEST_EVERY == 0) != train])
        if not len(dataset):
            raise DatasetNotFoundError(f"folder: {path} has too few images for a training split (every "
                                       f"{FOLDER_TEST_EVERY}th image is held out for testing)")
    return ImageData(f"{name}:{path}", dataset, len(dataset.classes), 3, image_size, IMAGENET_MEAN, IMAGENET_STD)


class FolderSplit(Subset):
    """Some of an ImageFolder's images, with the `targets` and `classes` that the loaders read."""

    def __init__(self, dataset, indices: list[int]):
        super().__init__(dataset, indices)
        self.classes = dataset.classes
        self.targets = [dataset.targets[i] for i in indices]


def read_image(path: str):
    """The RGB image at `path` (PIL), or InvalidArgumentError naming the file when it is corrupt, truncated or a
    decompression bomb (more than PIL's MAX_IMAGE_PIXELS)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise InvalidArgumentError(f"{path} is not a readable image ({reason})") from None


def loader_batches(loader: DataLoader) -> Iterator:
    """The batches of `loader`, where a worker's DissipateError keeps its one sentence: torch re-raises a worker's
    error with the worker's traceback in its message, which this strips."""
    try:
        yield from loader
    except DissipateError as error:
        lines = str(error).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught "):
            raise type(error)(lines[-1].partition(": ")[2] or lines[-1]) from None
        raise
