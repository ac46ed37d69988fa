"""Which pre-activations survive the non-linearity (Proposition 3.1: ReLU keeps only the positive coordinates)."""

from __future__ import annotations

import torch

from ._validate import channels_last_matrix, check_tensor, per_channel_sum


def surviving_fraction(pre: torch.Tensor) -> float:
    """Fraction of pre-activations > 0, over all neurons, positions and samples."""
    check_tensor(pre, "pre")
    return (pre > 0).sum().item() / pre.numel()


def dead_fraction(pre: torch.Tensor) -> float:
    """Fraction of channels never > 0 at any position of any sample."""
    check_tensor(pre, "pre")
    return (~(channels_last_matrix(pre) > 0).any(0)).double().mean().item()


def always_on_fraction(pre: torch.Tensor) -> float:
    """Fraction of channels > 0 at every position of every sample."""
    check_tensor(pre, "pre")
    return (channels_last_matrix(pre) > 0).all(0).double().mean().item()


class ChannelSurvival:
    """Streaming `surviving`, `dead` and `always_on`, from per-channel counts of positive pre-activations."""

    columns = ("surviving", "dead", "always_on")

    def __init__(self) -> None:
        self.positive: torch.Tensor | int = 0  # (C,) counts, kept on the features' device: no host sync per batch
        self.per_channel = 0  # values seen per channel

    def update(self, pre: torch.Tensor) -> None:
        # clamp(0, 1).ceil() is 1 where pre > 0 and 0 elsewhere, a float mask several times faster to sum than bool,
        # and NaN where pre is NaN (sign() would say 0: a NaN site would read as all dead), at sign()'s speed
        positive = per_channel_sum(pre.detach().float().clamp(0, 1).ceil_())  # (C,), exact integers or NaN
        self.positive = self.positive + positive.double()
        self.per_channel += pre.numel() // positive.numel()

    def result(self) -> dict[str, float]:
        """The three fractions; NaN before any update, and where a pre-activation was NaN (no sign to count)."""
        if self.per_channel == 0 or self.positive.isnan().any():
            return dict.fromkeys(self.columns, float("nan"))
        positive = self.positive.double()
        return {"surviving": (positive.sum() / (self.per_channel * positive.numel())).item(),
                "dead": (positive == 0).double().mean().item(),
                "always_on": (positive == self.per_channel).double().mean().item()}
