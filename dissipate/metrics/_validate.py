"""One input checker for the metrics, so every message reads "expected X, got Y"."""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError


def check_tensor(x: torch.Tensor, name: str, min_ndim: int = 2, max_ndim: int = 5) -> None:
    """Raise InvalidArgumentError unless `x` is a floating tensor with min_ndim..max_ndim dims."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidArgumentError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if not min_ndim <= x.ndim <= max_ndim:
        raise InvalidArgumentError(f"{name}: expected {min_ndim} to {max_ndim} dims, got shape {tuple(x.shape)}")


def channels_last_matrix(x: torch.Tensor) -> torch.Tensor:
    """(N, C) view of a feature tensor: channels are dim 1 for (B, C) and (B, C, *spatial), the last dim for tokens
    (B, T, C); every other dim is pooled into N (samples, positions)."""
    if x.ndim == 3:
        return x.reshape(-1, x.shape[-1])
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def channels_by_position(x: torch.Tensor) -> torch.Tensor:
    """(B, C, N) view of a feature tensor (no copy for contiguous maps): positions last, where reductions are fast.
    Vectors (B, C) get N = 1; tokens (B, T, C) become (1, C, B*T) through one transpose."""
    if x.ndim == 3:
        return x.reshape(-1, x.shape[-1]).T[None]
    return x.reshape(x.shape[0], x.shape[1], -1)


def per_channel_sum(x: torch.Tensor) -> torch.Tensor:
    """(C,) sums over everything but the channel dim."""
    return channels_by_position(x).sum(-1).sum(0)
