"""Dead-leaves images, drawn a batch at a time on any device.

An image is opaque discs dropped one after another, later ones occluding earlier ones, with radii from a power law
p(r) ~ r^-3 between `size`/32 (at least one pixel) and `size`/2. That density makes the image scale-invariant, with
the edge and power-spectrum statistics of natural images (Lee, Mumford and Huang 2001). Each disc takes one of
`num_classes` palette colours, with jitter; the label is the palette class of the disc that covers the image centre
(or of the background), so that a small classifier has something to learn.

Images are drawn in fixed chunks of CHUNK indices: the random numbers of chunk c come from torch's CPU generator
seeded with (seed, split, c), so image i is a function of (seed, split, i) alone, whatever the batch it is drawn in,
the order of the batches or the device the pixels are made on. No disc is tested beyond its bounding box: each pixel
holds the index of the last disc that covers it, the maximum over discs (`scatter_reduce` "amax"), which is the
painter's order without painting in order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CHUNK = 64  # images whose random numbers are drawn together, from one generator
CHUNK_ELEMENTS = 2 ** 23  # patch pixels rendered at once on an accelerator: bounds the transient memory (0.15 GB)
CACHE_PIXELS = 2 ** 18  # on the CPU: the image pixels, and the patch pixels, rendered at once


def chunk_generator(seed: int, split: int, chunk: int) -> torch.Generator:
    """The CPU generator of one chunk of images: a function of (seed, split, chunk) alone."""
    key = np.random.SeedSequence([seed & 0xFFFFFFFF, split, chunk]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(key[0] >> np.uint64(1)))


class DeadLeavesSpec:
    """The fixed parts of a dead-leaves set: image size, channels, radii, disc count and palette."""

    def __init__(self, image_size: int, in_chans: int, seed: int, num_classes: int):
        self.image_size, self.in_chans, self.seed, self.num_classes = image_size, in_chans, seed, num_classes
        self.r_min = max(1.0, image_size / 32)
        self.r_max = max(self.r_min, image_size / 2)  # images of 2 px or less: one radius
        mean_r2 = self.r_min ** 2 if self.r_max == self.r_min else 2 * self.r_min ** 2 * self.r_max ** 2 * math.log(
            self.r_max / self.r_min) / (self.r_max ** 2 - self.r_min ** 2)  # E[r^2] under the r^-3 density
        self.num_discs = math.ceil(4 * image_size ** 2 / (math.pi * mean_r2))  # covers all but ~e^-4 of the image
        palette = np.random.default_rng([seed, 2 ** 31]).uniform(0.1, 0.9, size=(num_classes, in_chans))
        self.palette = torch.from_numpy(palette.astype(np.float32))

    def draw(self, indices: torch.Tensor, split: int, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [0, 1], float32, and labels (B,), on `device`, of image `indices` (int64, on the
        CPU) of `split` (0 test, 1 train). Nothing is read back from the device."""
        size, count = self.image_size, self.num_discs
        radius, centre_y, centre_x, classes, jitter = self.discs(indices, split)  # the plan: on the CPU
        top = self.last_cover(radius, centre_y, centre_x, device)  # (B, H, W): the last disc over each pixel, or -1
        top = top.view(len(indices), 1, -1).long().remainder_(count + 1)  # -1, no disc: K, the background
        classes = classes.to(device)
        colours = (self.palette.to(device)[classes] + jitter.to(device)).clamp_(0, 1)  # (B, K + 1, C)
        image = colours.transpose(1, 2).gather(2, top.expand(-1, self.in_chans, -1))  # (B, C, H * W)
        labels = classes.gather(1, top[:, 0, (size // 2) * size + size // 2, None])[:, 0]
        return image.view(len(indices), self.in_chans, size, size), labels

    def discs(self, indices: torch.Tensor, split: int) -> tuple[torch.Tensor, ...]:
        """The discs of images `indices` (on the CPU): radius, centre row and column (B, K) in pixels, classes
        (B, K + 1; the last is the background's) and colour jitter (B, K + 1, C)."""
        count = self.num_discs
        uniforms, normals = self._random(indices, split)
        u, centre_y, centre_x, u_class = uniforms.split([count, count, count, count + 1], dim=1)
        a, b = self.r_min ** -2, self.r_max ** -2
        radius = (a - u * (a - b)) ** -0.5  # inverse CDF of the r^-3 density
        size = self.image_size
        centre_y, centre_x = size * (1.2 * centre_y - 0.1), size * (1.2 * centre_x - 0.1)  # in [-0.1, 1.1) x size
        classes = (u_class * self.num_classes).long().clamp_max(self.num_classes - 1)
        return radius, centre_y, centre_x, classes, 0.05 * normals.view(len(indices), count + 1, self.in_chans)

    def _random(self, indices: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, on the CPU: 4K + 1 uniforms (radii, centres' rows and columns, classes) and (K + 1) C normals
        (colour jitter), drawn a chunk of CHUNK images at a time."""
        count = self.num_discs
        uniforms = torch.empty(len(indices), 4 * count + 1)
        normals = torch.empty(len(indices), (count + 1) * self.in_chans)
        chunks = torch.div(indices, CHUNK, rounding_mode="floor")
        for chunk in chunks.unique().tolist():
            generator = chunk_generator(self.seed, split, chunk)
            chunk_uniforms = torch.rand(CHUNK, uniforms.shape[1], generator=generator)
            chunk_normals = torch.randn(CHUNK, normals.shape[1], generator=generator)
            mine = (chunks == chunk).nonzero(as_tuple=True)[0]
            rows = indices[mine] - chunk * CHUNK
            uniforms[mine], normals[mine] = chunk_uniforms[rows], chunk_normals[rows]
        return uniforms, normals

    def last_cover(self, radius: torch.Tensor, centre_y: torch.Tensor, centre_x: torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """(B, H, W) int32 on `device`: the index of the last disc covering each pixel centre, -1 where none does.

        The centres of the pixels a disc of radius r covers lie in rows and columns within r of its centre: at most
        floor(2r) + 1 of each. A disc is tested on a square patch of P of them (P from a ladder of four steps per
        octave, so that a few patch sizes serve every radius), widened by a margin far above float rounding and
        clipped to the image. The discs (B, K) are on the CPU, where they are sorted by block of images and patch
        size: the device is only written to, never read back. On the CPU a block's `top` and a chunk's patches stay
        in the cache."""
        size = self.image_size
        batch, count = radius.shape
        top = torch.full((batch * size * size,), -1, dtype=torch.int32, device=device)
        margin = size * 2.0 ** -12
        needed = (2 * (radius + margin)).floor().long() + 1
        step = torch.exp2((torch.log2(needed.float()).floor() - 2).clamp_min(0)).long()
        patch = (torch.div(needed + step - 1, step, rounding_mode="floor") * step).clamp_max(size)
        image, disc = torch.meshgrid(torch.arange(batch, dtype=torch.int32), torch.arange(count, dtype=torch.int32),
                                     indexing="ij")
        on_cpu = top.device.type == "cpu"
        block = max(1, CACHE_PIXELS // size ** 2) if on_cpu else batch
        key = (torch.div(image, block, rounding_mode="floor").long() * (size + 1) + patch).view(-1)
        order = key.argsort()
        discs = [t.reshape(-1)[order] for t in (image, disc, radius, centre_y, centre_x)]
        start = 0
        for group, length in zip(*(t.tolist() for t in key[order].unique_consecutive(return_counts=True))):
            side = group % (size + 1)
            per_chunk = max(1, (CACHE_PIXELS if on_cpu else CHUNK_ELEMENTS) // side ** 2)
            for first in range(start, start + length, per_chunk):
                chunk = slice(first, min(first + per_chunk, start + length))
                self._cover(top, side, margin, *(t[chunk].to(top.device, non_blocking=True) for t in discs))
            start += length
        return top.view(batch, size, size)

    def _cover(self, top: torch.Tensor, side: int, margin: float, image: torch.Tensor, disc: torch.Tensor,
               r: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> None:
        """Mark, in `top`, each of these N discs over the pixels of its side x side patch whose centres it covers.
        The discs are the last dimension of every (side, side, N) tensor: the long, contiguous one."""
        size = self.image_size
        offsets = torch.arange(side, device=top.device)[:, None]

        def axis(centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            first = (centre - r - 0.5 - margin).ceil().long().clamp(0, size - side)
            pixels = first + offsets  # (side, N), inside the image
            return pixels, (pixels + 0.5 - centre).square()

        rows, dy2 = axis(y)
        cols, dx2 = axis(x)
        covered = dy2[:, None, :] + dx2[None, :, :] < r.square()  # (side, side, N)
        where = ((image * size + rows) * size)[:, None, :] + cols[None, :, :]
        top.scatter_reduce_(0, where.view(-1), torch.where(covered, disc, -1).view(-1), "amax")
