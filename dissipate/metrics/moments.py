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
    """Streaming `moments`: per batch the sum and the sum of squares (one dot product, far faster than a one-pass
    variance), added up in float64. The variance E[x^2] - E[x]^2 loses about |mean|^2 / variance * 1e-7 of itself to
    float32 rounding, which is nothing for activations (their means are a few standard deviations at most)."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | float = 0.0
        self.sum_sq: torch.Tensor | float = 0.0

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().float().reshape(-1)
        self.count += flat.numel()
        self.sum = self.sum + flat.sum().double()
        self.sum_sq = self.sum_sq + torch.dot(flat, flat).double()

    def result(self) -> tuple[float, float, float]:
        """(mean, variance, E[x^2]); NaN before any update."""
        if self.count == 0:
            return float("nan"), float("nan"), float("nan")
        mean, s2 = float(self.sum) / self.count, float(self.sum_sq) / self.count
        return mean, max(s2 - mean * mean, 0.0), s2
