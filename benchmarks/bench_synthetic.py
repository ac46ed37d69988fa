"""Drawing synthetic (dead-leaves) images: the batched generator (`dissipate.synthetic`) against the first version,
which drew one image at a time in numpy (kept here, verbatim in what it computes, as the reference). One run, one
device; the ratio is from that run. Also checks that both give the same statistics: the mean and spread of the
pixels, the fraction of the image under the last disc, and the label histogram.

    python benchmarks/bench_synthetic.py                     # 8192 images at 32 px and 256 at 224 px, on the CPU
    python benchmarks/bench_synthetic.py --device cuda
    python benchmarks/bench_synthetic.py --sizes 32:16 --grid benchmarks/synthetic_before_after.png
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from dissipate.data import DeadLeaves
from dissipate.probe import resolve_device


def first_version(index: int, size: int, chans: int = 3, seed: int = 0, num_classes: int = 10, split: int = 0):
    """The first version's image `index`: one numpy generator per image, every disc tested on every pixel."""
    r_min, r_max = max(1.0, size / 32), max(max(1.0, size / 32), size / 2)
    mean_r2 = r_min ** 2 if r_max == r_min else 2 * r_min ** 2 * r_max ** 2 * math.log(r_max / r_min) / (
        r_max ** 2 - r_min ** 2)
    count = math.ceil(4 * size ** 2 / (math.pi * mean_r2))
    palette = np.random.default_rng([seed, 2 ** 31]).uniform(0.1, 0.9, size=(num_classes, chans)).astype(np.float32)
    rng = np.random.default_rng([seed, index, split])
    u = rng.uniform(size=count)
    radius = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
    centre = rng.uniform(-0.1 * size, 1.1 * size, size=(count, 2))
    classes = rng.integers(num_classes, size=count + 1)
    colours = palette[classes] + rng.normal(0, 0.05, size=(count + 1, chans)).astype(np.float32)
    grid = np.arange(size, dtype=np.float32) + 0.5
    covered = ((grid[None, :, None] - centre[:, 0, None, None]) ** 2
               + (grid[None, None, :] - centre[:, 1, None, None]) ** 2) < radius[:, None, None] ** 2
    top = np.where(covered.any(0), count - 1 - covered[::-1].argmax(0), count)
    image = np.clip(colours[top], 0, 1).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(image)), int(classes[top[size // 2, size // 2]])


def statistics(images: torch.Tensor, labels: torch.Tensor) -> str:
    histogram = torch.bincount(labels.cpu(), minlength=10).float() / len(labels)
    edges = (images[..., 1:, :] != images[..., :-1, :]).any(1).float().mean()  # rows that change colour
    return (f"pixel mean {images.mean():.3f}, std {images.std():.3f}, edge fraction {edges:.3f}, "
            f"labels {' '.join(f'{p:.2f}' for p in histogram.tolist())}")


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="32:8192,224:256", help="SIZE:COUNT pairs")
    parser.add_argument("--grid", help="also save the first 16 images of each generator (first version above, "
                                       "batched below) of the first size as this PNG")
    args = parser.parse_args()
    device = resolve_device(args.device)
    for pair in args.sizes.split(","):
        size, count = (int(v) for v in pair.split(":"))
        leaves = DeadLeaves(count, size)
        leaves.draw(range(min(count, 64)), device)  # warm-up
        new_s, (images, labels) = timed(lambda: leaves.draw(range(count), device))
        old_s, pairs = timed(lambda: [first_version(i, size) for i in range(count)])
        old_images, old_labels = torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
        print(f"{count} images at {size} px on {device}: batched {new_s:.2f} s ({1e3 * new_s / count:.3f} ms/image), "
              f"first version {old_s:.2f} s on the CPU ({1e3 * old_s / count:.3f} ms/image): {old_s / new_s:.1f}x")
        print(f"  batched:       {statistics(images.cpu(), labels)}")
        print(f"  first version: {statistics(old_images, old_labels)}")
        if args.grid:
            from torchvision.utils import save_image

            save_image(torch.cat([old_images[:16], images[:16].cpu()]), args.grid, nrow=16, padding=1)
            print(f"  the first 16 images of each (first version above, batched below): {args.grid}")
            args.grid = None


if __name__ == "__main__":
    main()
