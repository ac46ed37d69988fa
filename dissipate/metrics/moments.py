"""Pooled moments (mean, variance, second moment) of a tensor: what Theorem 3.2 predicts and the bound-check reads."""

from __future__ import annotations

import torch

from ._validate import check_tensor


def moments(x: torch.Tensor) -> tuple[float, float, float]:
    """(mean, variance, E[x^2]) over every element of `x` (all neurons, positions and samples pooled).

    The variance is the population variance E[x^2] - E[x]^2, the quantity in Theorem 3.2."""
    check_tensor(x, "x", min_ndim=1)
    x = x.detach().double()
    mean, s2 = x.mean().item(), x.square().mean().item()
    return mean, max(s2 - mean * mean, 0.0), s2


class Moments:
    """Streaming `moments`: per batch the sum and the sum of squares of x - shift (one dot product, far faster than a
    one-pass variance), added up in float64, with the shift the first batch's mean. Shifted, the variance keeps its
    precision where the mean is far above the spread (trained nets reach means near 1000); unshifted, E[x^2] - E[x]^2
    would lose |mean|^2 / variance * 1e-7 of itself to float32 rounding."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None  # float32, on the data's device: no host synchronisation
        self.sum: torch.Tensor | float = 0.0
        self.sum_sq: torch.Tensor | float = 0.0

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        if self.shift is None:
            self.shift = flat.mean() if flat.numel() else flat.new_zeros(())  # float32: any value near the mean will do
        flat = flat - self.shift
        self.count += flat.numel()
        self.sum = self.sum + flat.sum().double()
        self.sum_sq = self.sum_sq + torch.dot(flat, flat).double()

    def result(self) -> tuple[float, float, float]:
        """(mean, variance, E[x^2]); NaN before any update."""
        if self.count == 0:
            return float("nan"), float("nan"), float("nan")
        shifted_mean = float(self.sum) / self.count
        var = max(float(self.sum_sq) / self.count - shifted_mean ** 2, 0.0)
        mean = float(self.shift) + shifted_mean
        return mean, var, var + mean * mean
