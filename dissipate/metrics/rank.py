"""How many directions a layer's features span: effective, numerical and stable rank of the channel covariance.

Proposition 3.1: for one input, ReLU acts as a projection whose rank is the number of active neurons; over a probe set
the rank of the channel covariance shows how many independent directions are left.

Every rank here is a function of sigma, the singular values of the (C, C) channel covariance matrix (its
eigenvalues, since it is symmetric and positive semi-definite). The effective rank uses sigma itself, not sigma^2.

References:
    Roy and Vetterli. The effective rank: a measure of effective dimensionality. EUSIPCO 2007.
    Rudelson and Vershynin. Sampling from large matrices: an approach through geometric functional analysis. 2007.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ._validate import channels_by_position, channels_last_matrix, check_tensor

# nrank counts sigma_i > NRANK_TOL * sigma_max. Features are float32 and their covariance is summed from float32
# products, whose rounding leaves the null space at about 1e-7..1e-6 of sigma_max; 1e-5 sits well above that.
NRANK_TOL = 1e-5


def channel_covariance(features: torch.Tensor) -> torch.Tensor:
    """(C, C) covariance of the channels, samples and positions pooled (float64, divided by N - 1)."""
    check_tensor(features, "features")
    x = channels_last_matrix(features.detach()).double()
    return torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def singular_values(covariance: torch.Tensor) -> torch.Tensor:
    """sigma: the singular values of a symmetric PSD matrix (or of a batch of them), descending (float64); NaN for a
    matrix with a NaN or infinite entry, on which eigvalsh fails to converge (activations that are NaN or overflow).
    The matrix is replaced by zeros for the solver and its values by NaN after, with no synchronisation."""
    covariance = covariance.double()
    finite = torch.isfinite(covariance).all(-1).all(-1)[..., None]
    sigma = torch.linalg.eigvalsh(torch.where(finite[..., None], covariance, 0.0)).abs().flip(-1)
    return torch.where(finite, sigma, float("nan"))


def effective_rank(sigma: torch.Tensor) -> float:
    """exp(H(p)) with p_i = sigma_i / sum(sigma), sigma the singular values (not their squares); in [1, C]; NaN where
    sigma is NaN."""
    total = sigma.sum()
    if not total > 0:
        return float("nan")
    p = sigma[sigma > 0] / total
    return math.exp(-(p * p.log()).sum().item())


def numerical_rank(sigma: torch.Tensor, tol: float = NRANK_TOL) -> int:
    """Number of sigma_i > tol * sigma_max."""
    return int((sigma > tol * sigma.max()).sum()) if sigma.numel() and sigma.max() > 0 else 0


def stable_rank(sigma: torch.Tensor) -> float:
    """sum(sigma^2) / sigma_max^2; in [1, C], and never above the numerical rank."""
    top = sigma.max() if sigma.numel() else torch.tensor(0.0)
    return (sigma.square().sum() / top.square()).item() if top > 0 else float("nan")


TRIANGLE_BLOCKS = 4  # row blocks of the upper triangle: 10 of 16 blocks computed, 1.4x faster than the square at
# C = 768 on the CPU (a ViT's MLP activation), where a finer split gains nothing more


def upper_gram(x: torch.Tensor) -> torch.Tensor:
    """The upper triangle of sum_b X_b X_b^T (C, C) over x (B, C, N), float32; below the diagonal is not defined.

    Batched GEMMs straight on the (B, C, N) layout (no transposed copy of the features), a block of rows at a time,
    each against the columns from its diagonal on; chunks of samples keep the (chunk, C, C) products under 64 MiB."""
    channels = x.shape[1]
    rows = channels if channels < 256 else -(-channels // TRIANGLE_BLOCKS)
    gram = x.new_zeros(channels, channels)
    for part in x.split(max(1, 2 ** 24 // channels ** 2)):
        for start in range(0, channels, rows):
            block = torch.bmm(part[:, start:start + rows], part[:, start:].transpose(1, 2)).sum(0)
            gram[start:start + rows, start:] += block
    return gram


class ChannelCovariance:
    """Streaming channel covariance: per-channel sums and X^T X of the features shifted by the first batch's channel
    means, float32 products added up in float64. The shift keeps the result exact where channels carry means far
    above their spread (trained nets reach 1000): unshifted, X^T X - n mean mean^T would cancel away the covariance
    in float32. Memory: C^2, whatever the probe size."""

    columns = ("erank", "nrank", "srank")

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None  # (C,) float32: the first batch's channel means
        self.sum: torch.Tensor | float = 0.0
        self.gram: torch.Tensor | float | None = 0.0
        self.sigma: torch.Tensor | None = None  # the singular values, where `decompose_together` made them

    def update(self, features: torch.Tensor) -> None:
        x = channels_by_position(features.detach().float())  # (B, C, N)
        if self.shift is None:
            self.shift = x.mean((0, 2))  # float32: near the means is all a shift needs (a float64 mean copies x)
        x = x - self.shift[:, None]
        self.gram = self.gram + upper_gram(x).double()
        self.sum = self.sum + x.sum(-1).sum(0).double()
        self.count += x.shape[0] * x.shape[2]

    def covariance(self) -> torch.Tensor:
        mean = self.sum / self.count  # of the shifted features: the covariance does not depend on the shift
        gram = self.gram.triu() + self.gram.triu(1).T  # the upper triangle, mirrored
        return (gram - self.count * torch.outer(mean, mean)) / max(self.count - 1, 1)

    def result(self) -> dict[str, float]:
        """The three ranks; NaN with fewer than two samples, and where the features held NaN or infinite values."""
        if self.count < 2:
            return dict.fromkeys(self.columns, float("nan"))
        sigma = self.sigma if self.sigma is not None else singular_values(self.covariance())
        if sigma.isnan().any():
            return dict.fromkeys(self.columns, float("nan"))
        return {"erank": effective_rank(sigma), "nrank": numerical_rank(sigma), "srank": stable_rank(sigma)}


def decompose_together(streams: Sequence[ChannelCovariance]) -> None:
    """Give each stream its singular values (`sigma`) where its matrix is, one batched eigvalsh per matrix size, and
    drop the matrix: on an accelerator, one solver call and one synchronisation per size rather than per site, and
    C values per site to read back instead of C^2. (On the CPU, LAPACK gains nothing from a batch.)"""
    by_size: dict[tuple[int, torch.device], list[ChannelCovariance]] = {}
    for stream in streams:
        if stream.count >= 2:
            by_size.setdefault((stream.gram.shape[0], stream.gram.device), []).append(stream)
    for group in by_size.values():
        sigmas = singular_values(torch.stack([s.covariance() for s in group]))
        for stream, sigma in zip(group, sigmas, strict=True):
            stream.sigma, stream.gram, stream.sum = sigma, None, None
