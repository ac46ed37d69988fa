"""PNNH: plain nets whose layers carry a code of their input across the non-linearity.

The paper reports a learner (the ordinary conv path) and a weight-sharing coder inside each layer. Its equations
were not available, so this is the project's reconstruction (docs/design.md, section 2), for a stride-1 block on C
channels:

    u      = E x                                  coder encoder: 1x1, C -> k, no bias
    h      = act(BN1(W1 * x))                     learner, first layer (width m)
    c+, c- = act(u), act(-u)                      the code crosses the same non-linearity as a +/- pair
    y      = act(BN2(W2 * h) + E^T (c+ - c-))     learner, second layer; the decoder E^T shares E's weights

For act(a) = a * g(a) with g(a) + g(-a) = 1 (ReLU, GELU, SiLU), act(a) - act(-a) = a exactly, so
E^T (c+ - c-) = E^T E x: the code survives intact with no shortcut around any layer. E starts with orthogonal rows;
with k = C, E^T E = I and the block starts as the function of a residual block while staying plain in structure.
h, c+ and c- go through one activation module over their concatenated channels, so a probe sees one site per layer.

Blocks that change shape (stride 2) are plain conv-BN-act pairs (`downsample_block="plain"`, so the whole net is
plain) or the residual block with its shortcut (`"original"`).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from ._layers import conv3x3, make_act, scaled_width
from ._registry import register_model
from .resnet import CIFAR_DEPTHS, IMAGENET_LAYERS, BasicBlock, ResNet, depth_plan

DOWNSAMPLE_BLOCKS = ("plain", "original")
MAX_LEARNER_RATIO = 16  # a learner 16 times the block's width: far past any ablation, short of running out of memory


class PNNHBlock(nn.Module):
    """A stride-1 block of two plain conv layers whose single inner activation also carries the coder's +/- pair."""

    kind = "pnnh"
    site_kinds = {"act1": "pnnh", "act2": "pnnh"}  # both activations carry the coder's +/- pair
    site_components = {"act2": {"branch": "bn2", "coder": ""}}  # act2 sums the learner and E^T E x

    def __init__(self, channels: int, *, coder_ratio: float = 1.0, learner_ratio: float = 1.0, act: str = "relu"):
        super().__init__()
        self.learner_chs = scaled_width(channels, learner_ratio, "learner_ratio", MAX_LEARNER_RATIO)
        self.coder_chs = scaled_width(channels, coder_ratio, "coder_ratio", 1)  # E's k rows are orthonormal: k <= C
        self.conv1 = conv3x3(channels, self.learner_chs)
        self.bn1 = nn.BatchNorm2d(self.learner_chs)
        self.coder = nn.Parameter(torch.empty(self.coder_chs, channels))  # E: (k, C), encoder and decoder alike
        self.coder_ratio = self.coder_chs / channels  # k / C as built
        self.act1 = make_act(act)  # over [h, u, -u]: learner_chs + 2 * coder_chs channels
        self.conv2 = conv3x3(self.learner_chs, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = make_act(act)
        nn.init.orthogonal_(self.coder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [E; -E] encodes u and -u in one 1x1 conv, and its transpose [E^T, -E^T] decodes E^T c+ - E^T c- in one:
        # no separate negation or subtraction pass over the feature map
        coder_pm = torch.cat([self.coder, -self.coder])[:, :, None, None]  # (2k, C, 1, 1)
        mixed = self.act1(torch.cat([self.bn1(self.conv1(x)), F.conv2d(x, coder_pm)], dim=1))  # [h, c+, c-]
        hidden, code_pm = mixed.split([self.learner_chs, 2 * self.coder_chs], dim=1)
        decoded = F.conv2d(code_pm, coder_pm.transpose(0, 1))  # E^T (c+ - c-): (B, C, H, W)
        return self.act2(self.bn2(self.conv2(hidden)) + decoded)


def build_pnnh(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet", act: str = "relu",
               coder_ratio: float = 1.0, learner_ratio: float = 1.0, downsample_block: str = "plain") -> ResNet:
    """A PNNH net on the ResNet skeleton: PNNH blocks where the stride is 1, `downsample_block` where it is 2."""
    if downsample_block not in DOWNSAMPLE_BLOCKS:
        raise InvalidArgumentError(
            f"unknown downsample_block {downsample_block!r}; choose one of {', '.join(DOWNSAMPLE_BLOCKS)}")
    _, layers, widths, shortcut = depth_plan(depth)
    pnnh_block = partial(PNNHBlock, coder_ratio=coder_ratio, learner_ratio=learner_ratio, act=act)
    downsample = partial(BasicBlock, residual=downsample_block == "original", shortcut=shortcut, act=act)

    def make_block(in_chs: int, out_chs: int, stride: int) -> nn.Module:
        return pnnh_block(out_chs) if stride == 1 and in_chs == out_chs else downsample(in_chs, out_chs, stride)

    return ResNet(make_block, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem, act=act)


# Basic-block depths only: the bottleneck's two inner activations would need the code carried through a 1x1 and a
# 3x3 layer, which the reconstruction does not define, so there is no pnnh50 / pnnh101.
for _depth in (*CIFAR_DEPTHS, *(d for d, (block, _) in IMAGENET_LAYERS.items() if block is BasicBlock)):
    register_model(f"pnnh{_depth}", partial(build_pnnh, _depth), family="pnnh", depth=_depth,
                   natural_stem="cifar" if _depth in CIFAR_DEPTHS else "imagenet")
