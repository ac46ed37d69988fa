"""How much of the input a linear read-out recovers from a layer's features.

At every pixel of the input, the read-out predicts the pixel's channels from the layer's features upsampled
(bilinearly) to the input size: one ridge map from C features (plus an intercept) to the image's channels, shared
across positions, fit on one half of the probe set and scored with R^2 on the other. The halves alternate by sample
index (even: fit, odd: score), so the split needs no knowledge of the probe set's size. The ridge penalty is chosen
inside the fitting half (fit on indices 0 mod 4, validated on 2 mod 4, over RIDGE_GRID), then the map is refit on the
whole half: a wide layer seen at few positions would otherwise overfit and score below zero.

Everything is streamed through sufficient statistics (F^T F, F^T Y, sums of Y and Y^2 per half), and the upsampling is
never materialised: with U the bilinear upsampling operator, the upsampled features' Gram matrix is G^T (U^T U) G and
their cross-product with the image is G^T (U^T Y), both computed at the features' own resolution.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..errors import InvalidArgumentError
from ._validate import check_tensor

# Ridge penalties tried, relative to the mean feature variance (trace of the centred F^T F / C).
RIDGE_GRID = tuple(10.0 ** k for k in range(-6, 4))


@functools.lru_cache(maxsize=64)
def _upsampling_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) matrix of 1-D bilinear interpolation, exactly as F.interpolate(align_corners=False)."""
    eye = torch.eye(size_in, dtype=torch.float64).reshape(size_in, 1, size_in, 1)
    return F.interpolate(eye, size=(size_out, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T.contiguous()


def as_feature_map(features: torch.Tensor) -> torch.Tensor | None:
    """(B, C, h, w) view of features: feature maps as they are, vectors (B, C) as 1x1 maps, and tokens (B, T, C) of a
    square grid of patches mapped back to it (T = s^2, row by row, as a ViT's patch embedding lays them out; with
    T = s^2 + 1 the first, a class token, is left out); None for anything else (volumes, token counts that are no
    grid), whose positions do not map onto the image's pixels."""
    if features.ndim == 4:
        return features
    if features.ndim == 2:
        return features[:, :, None, None]
    if features.ndim == 3:
        tokens = features.shape[1]
        for extra in (0, 1):
            side = math.isqrt(tokens - extra)
            if tokens > extra and side * side == tokens - extra:
                grid = features[:, extra:].transpose(1, 2)  # (B, C, s^2)
                return grid.reshape(*grid.shape[:2], side, side)
    return None


def _at_feature_resolution(feats: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((U^T U) G, U^T Y): the upsampled features' Gram factor and their cross-product with the image, both at the
    features' own (h, w), U being the bilinear upsampling from (h, w) to the image's (H, W)."""
    (h, w), (height, width) = feats.shape[-2:], images.shape[-2:]
    if (h, w) == (height, width):  # U = I
        return feats, images
    up_h = _upsampling_matrix(h, height).to(feats.device, torch.float32)  # (H, h)
    up_w = _upsampling_matrix(w, width).to(feats.device, torch.float32)  # (W, w)
    mixed = torch.einsum("ph,bchw,qw->bcpq", up_h.T @ up_h, feats, up_w.T @ up_w)
    projected = torch.einsum("Hh,bkHW,Ww->bkhw", up_h, images, up_w)
    return mixed, projected


class _Stats:
    """Sufficient statistics of one part of the probe set: F^T F, F^T Y over pixels (the intercept channel last),
    per-channel sums of Y^2, and the pixel count per image channel."""

    def __init__(self) -> None:
        self.ftf: torch.Tensor | float = 0.0
        self.fty: torch.Tensor | float = 0.0
        self.y_sq: torch.Tensor | float = 0.0
        self.pixels: torch.Tensor | float = 0.0  # a tensor on the features' device: no host sync per batch

    def __add__(self, other: _Stats) -> _Stats:
        total = _Stats()
        total.ftf, total.fty = self.ftf + other.ftf, self.fty + other.fty
        total.y_sq, total.pixels = self.y_sq + other.y_sq, self.pixels + other.pixels
        return total

    @property
    def y_sum(self) -> torch.Tensor:
        return self.fty[-1]  # the intercept channel's row: sum of Y

    def sse(self, weights: torch.Tensor) -> torch.Tensor:
        """Sum of squared errors of the map `weights` (C+1, k) on these samples: Y^T Y - 2 W^T F^T Y + W^T F^T F W."""
        return self.y_sq.sum() - 2 * (weights * self.fty).sum() + (weights * (self.ftf @ weights)).sum()

    def sst(self) -> torch.Tensor:
        return (self.y_sq - self.y_sum.square() / self.pixels).sum()

    def ridge_maps(self, penalties: tuple[float, ...]) -> list[torch.Tensor]:
        """The ridge maps (C+1, k) for each relative penalty, the intercept unpenalised (solved on centred stats); NaN
        maps from stats with NaN or infinite values (features that are NaN or overflow), on which eigh fails to
        converge: the solver gets zeros instead, with no synchronisation."""
        n, feat_sum = self.pixels, self.ftf[:-1, -1]
        centred_ftf = self.ftf[:-1, :-1] - torch.outer(feat_sum, feat_sum) / n
        centred_fty = self.fty[:-1] - torch.outer(feat_sum, self.y_sum) / n
        finite = torch.isfinite(centred_ftf).all() & torch.isfinite(centred_fty).all()
        eigvals, eigvecs = torch.linalg.eigh(torch.where(finite, centred_ftf, 0.0))
        scale = eigvals.sum().clamp_min(1e-12) / len(eigvals)
        rotated = eigvecs.T @ centred_fty
        maps = []
        for penalty in penalties:
            slope = eigvecs @ (rotated / (eigvals.clamp_min(0) + penalty * scale)[:, None])
            intercept = (self.y_sum - feat_sum @ slope) / n
            maps.append(torch.where(finite, torch.cat([slope, intercept[None]]), float("nan")))
        return maps


class LinearReadout:
    """Streaming ridge read-out of the input from a site's features; `r2()` after all updates, then
    `reconstruct(features)` for the images the map makes (used by SSIM and DISTS)."""

    columns = ("recon_r2",)

    def __init__(self, penalties: tuple[float, ...] = RIDGE_GRID) -> None:
        self.penalties = penalties
        self.parts = (_Stats(), _Stats(), _Stats())  # fit (0 mod 4), validate the penalty (2 mod 4), score (odd)
        self.fit_a, self.fit_b, self.score_half = self.parts
        self._weights: torch.Tensor | None = None
        self.penalty: float | None = None  # the chosen one
        self.shift: torch.Tensor | None = None  # (C,) the first batch's channel means, taken from every feature

    def _with_intercept(self, feats: torch.Tensor) -> torch.Tensor:
        """The features less `shift`, and a channel of ones. The intercept absorbs the shift, so the map's images
        are the same; shifted, F^T F keeps its precision where channels carry means far above their spread."""
        feats = feats.float()
        if self.shift is None:
            self.shift = feats.mean((0, 2, 3))  # float32: near the means is all a shift needs
        return torch.cat([feats - self.shift[:, None, None], feats.new_ones(feats[:, :1].shape)], dim=1)

    def update(self, features: torch.Tensor, images: torch.Tensor, index: torch.Tensor) -> None:
        """`index`: (B,) the samples' indices in the probe set, which decide their part (0, 2 mod 4: fit; odd: score)."""
        feats = as_feature_map(features.detach())
        if feats is None:
            return
        feats, images = self._with_intercept(feats), images.float()
        mixed, projected = _at_feature_resolution(feats, images)
        feats, mixed, projected = feats.flatten(2), mixed.flatten(2), projected.flatten(2)  # (B, C+1 or k, h*w)
        membership = torch.stack([index % 4 == 0, index % 4 == 2, index % 2 == 1]).float()  # (3 parts, B)
        channels = feats.shape[1]
        ftf = 0.0
        # per-sample products by batched GEMM on the (B, C, h*w) layout (no transposed copies), summed into each part
        # by a (3, B) matrix product; chunks keep the (chunk, C+1, C+1) products under 64 MiB
        chunk = max(1, 2 ** 24 // channels ** 2)
        for rows, f, m in zip(membership.split(chunk, 1), feats.split(chunk), mixed.split(chunk), strict=True):
            ftf = ftf + (rows @ torch.bmm(f, m.transpose(1, 2)).flatten(1)).reshape(3, channels, channels)
        fty = (membership @ torch.bmm(feats, projected.transpose(1, 2)).flatten(1)).reshape(3, channels, -1)
        y_sq = membership @ images.square().sum((2, 3))  # (3, k)
        pixels = membership.sum(1) * images.shape[-2] * images.shape[-1]
        for part, stats in enumerate(self.parts):
            stats.ftf = stats.ftf + ftf[part].double()
            stats.fty = stats.fty + fty[part].double()
            stats.y_sq = stats.y_sq + y_sq[part].double()
            stats.pixels = stats.pixels + pixels[part].double()

    @property
    def weights(self) -> torch.Tensor | None:
        """(C+1, k) ridge map from features (and intercept, last row) to image channels; None before any fit data."""
        fitted = self._fitted
        if fitted is None:
            return None
        slope, intercept = fitted[:-1], fitted[-1]  # fitted on the shifted features: undo the shift
        return torch.cat([slope, (intercept - self.shift.double() @ slope)[None]])

    @property
    def _fitted(self) -> torch.Tensor | None:
        """The map as fitted, from the shifted features (see `_with_intercept`)."""
        if self._weights is None and self.fit_a.pixels:
            if self.fit_b.pixels and len(self.penalties) > 1:
                errors = [self.fit_b.sse(w).item() for w in self.fit_a.ridge_maps(self.penalties)]
                self.penalty = self.penalties[min(range(len(errors)), key=errors.__getitem__)]
            else:
                self.penalty = self.penalties[0]
            fit = self.fit_a + self.fit_b if self.fit_b.pixels else self.fit_a
            self._weights = fit.ridge_maps((self.penalty,))[0]
        return self._weights

    def r2(self) -> float:
        """1 - SSE / SST on the scoring half, channels pooled; NaN without data in both halves."""
        weights, held_out = self._fitted, self.score_half
        if weights is None or not held_out.pixels:
            return float("nan")
        sst = held_out.sst()
        return (1 - held_out.sse(weights) / sst).item() if sst > 0 else float("nan")

    def result(self) -> dict[str, float]:
        return {"recon_r2": self.r2()}

    def reconstruct(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor | None:
        """The read-out's images (B, k, *size) from `features`; None where there is no map or no spatial layout."""
        feats = as_feature_map(features.detach())
        if feats is None or self._fitted is None:
            return None
        low_res = torch.einsum("bchw,ck->bkhw", self._with_intercept(feats), self._fitted.float())
        return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)


def reconstruction_r2(features: torch.Tensor, images: torch.Tensor, penalties: tuple[float, ...] = RIDGE_GRID) -> float:
    """R^2 of the linear read-out of `images` (B, k, H, W) from `features` (B, C, h, w) or (B, C): fit on the
    even-indexed samples (penalty chosen among them), scored on the odd ones."""
    check_tensor(features, "features", max_ndim=4)
    check_tensor(images, "images", min_ndim=4, max_ndim=4)
    if features.shape[0] != images.shape[0] or features.shape[0] < 2:
        raise InvalidArgumentError(f"features and images must hold the same samples (at least 2): "
                                   f"got {features.shape[0]} and {images.shape[0]}")
    if as_feature_map(features) is None:
        raise InvalidArgumentError(f"features: expected (B, C) or (B, C, h, w), got shape {tuple(features.shape)}")
    readout = LinearReadout(penalties)
    readout.update(features, images, torch.arange(features.shape[0], device=features.device))
    return readout.r2()
