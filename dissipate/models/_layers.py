"""Layers and initialisation shared by the families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError

# Each call returns a fresh, out-of-place module: hooks must see every pre-activation once, and unmodified.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def make_act(name: str) -> nn.Module:
    """A new activation module for one activation site."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise InvalidArgumentError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by `stride`, then pad the new channels with zeros. No parameters."""

    def __init__(self, out_chs: int, stride: int):
        super().__init__()
        self.out_chs, self.stride = out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_chs - x.shape[1]))  # (W, H, C) pad pairs; zeros after x's channels


def init_he_normal(model: nn.Module) -> None:
    """He-normal (fan_in) convs and linears with zero bias, BN weight 1 and bias 0: the theory's initialisation.

    Weights are N(0, 2 / fan_in), so a plain layer maps input second moment s2 to pre-activation variance 2 * s2.
    Parameters that are not conv, linear or BN weights (the PNNH coder) keep the init of their own module.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def scaled_width(channels: int, ratio: float, name: str, max_ratio: float) -> int:
    """round(ratio * channels), at least 1; `ratio` must be a number in (0, max_ratio]."""
    if isinstance(ratio, bool) or not (isinstance(ratio, (int, float)) and 0 < ratio <= max_ratio):
        raise InvalidArgumentError(f"{name} must be a number in (0, {max_ratio:g}], got {ratio!r}")
    return max(1, round(ratio * channels))
