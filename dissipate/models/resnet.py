"""ResNets and their plain twins.

`plainN` is `resnetN` with every shortcut removed: the same convs, BN and widths, nothing added. Two depth sets:
- ImageNet widths (64-512), basic blocks for 18/34 and bottlenecks for 50/101. With the imagenet stem and
  1000 classes these have torchvision's module names and parameter counts, so its weights load as they are.
- The CIFAR family of He et al. (2016, section 4.2): widths 16/32/64, 6n+2 layers, and parameter-free
  shortcuts (option A: subsample, then zero-pad the new channels).
`width` multiplies every stage's channels (the stem's too), rounded to whole channels; at 1 the nets are the above.

References:
    He, Zhang, Ren and Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn

from ._layers import ZeroPadShortcut, conv1x1, conv3x3, init_he_normal, make_act, scaled_width
from ._registry import register_model

SHORTCUTS = ("projection", "zero_pad")


def make_shortcut(kind: str, in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """The shortcut's module where the shape changes (None where the identity fits)."""
    if stride == 1 and in_chs == out_chs:
        return None
    if kind == "projection":  # option B: 1x1 conv and BN, named as torchvision names it
        return nn.Sequential(conv1x1(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))
    if kind == "zero_pad":
        return ZeroPadShortcut(out_chs, stride)
    raise ValueError(f"unknown shortcut {kind!r}; choose one of {', '.join(SHORTCUTS)}")


def residual_components(act: str, branch: str, downsample: nn.Module | None) -> dict[str, dict[str, str]]:
    """What the activation after a shortcut's add sums (for the recorder's `record_components`): the branch's last
    BN output, and the block's input ("") or its downsampled version."""
    return {act: {"branch": branch, "identity": "" if downsample is None else "downsample"}}


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; `residual=False` drops the shortcut and leaves a plain block."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *, residual: bool = True,
                 shortcut: str = "projection", act: str = "relu"):
        super().__init__()
        self.kind = "residual" if residual else "plain"
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = make_act(act)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_chs, out_chs, stride) if residual else None
        self.act2 = make_act(act)
        self.site_kinds = {"act1": "plain", "act2": self.kind}  # only the last activation sees the shortcut
        self.site_components = residual_components("act2", "bn2", self.downsample) if residual else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


def bottleneck_layers(block: nn.Module, in_chs: int, mid_chs: int, out_chs: int, stride: int, act: str) -> None:
    """Give `block` a bottleneck's layers, named as torchvision names them: conv1 (1x1 reduce), conv2 (3x3, carrying
    the stride, as torchvision's v1.5), conv3 (1x1 expand), each with its BN, and the activations act1 to act3."""
    block.conv1, block.bn1, block.act1 = conv1x1(in_chs, mid_chs), nn.BatchNorm2d(mid_chs), make_act(act)
    block.conv2, block.bn2, block.act2 = conv3x3(mid_chs, mid_chs, stride), nn.BatchNorm2d(mid_chs), make_act(act)
    block.conv3, block.bn3, block.act3 = conv1x1(mid_chs, out_chs), nn.BatchNorm2d(out_chs), make_act(act)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's v1.5), 1x1 expand by 4; plain when `residual=False`."""

    expansion = 4

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *, residual: bool = True,
                 shortcut: str = "projection", act: str = "relu"):
        super().__init__()
        self.kind = "residual" if residual else "plain"
        bottleneck_layers(self, in_chs, out_chs // self.expansion, out_chs, stride, act)
        self.residual = residual
        self.downsample = make_shortcut(shortcut, in_chs, out_chs, stride) if residual else None
        self.site_kinds = {"act1": "plain", "act2": "plain", "act3": self.kind}
        self.site_components = residual_components("act3", "bn3", self.downsample) if residual else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act3(out)


# make_block(in_chs, out_chs, stride) -> block; lets PNNH put its own block wherever the stride is 1
BlockFactory = Callable[[int, int, int], nn.Module]


class ResNet(nn.Module):
    """Stem, stages of blocks (the first of each stage but the first downsamples by 2), global pool, linear head."""

    def __init__(self, make_block: BlockFactory, layers: Sequence[int], widths: Sequence[int], *, expansion: int = 1,
                 num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet", act: str = "relu"):
        super().__init__()
        stem_chs = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, stem_chs)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = make_act(act)
        self.site_kinds = {"act1": "plain"}  # the stem; blocks declare their own sites

        in_chs = stem_chs
        for index, (num_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            out_chs = width * expansion
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(make_block(in_chs, out_chs, stride))
                in_chs = out_chs
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_chs, num_classes)
        init_he_normal(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))  # (B, C, 1, 1)
        return self.fc(torch.flatten(x, 1))


# depth -> (block, blocks per stage); widths (64, 128, 256, 512)
IMAGENET_LAYERS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                   50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 layers: n basic blocks in each of 3 stages
CIFAR_WIDTHS = (16, 32, 64)
# Zagoruyko and Komodakis's widest nets are 10 times as wide (WRN-28-10: 160/320/640, the CIFAR widths at 10);
# parameters grow as width^2, so past 10 (resnet101 would hold 4.3G) a width is a typo, not a control
MAX_WIDTH = 10


def depth_plan(depth: int, width: float = 1.0) -> tuple[type[nn.Module], Sequence[int], Sequence[int], str]:
    """(block, blocks per stage, stage widths, shortcut kind) for a depth of either set; the stage widths (the
    stem's is the first, a bottleneck's output 4 times each) are round(width * the set's), at least 1."""
    if depth in CIFAR_DEPTHS:
        block, layers, widths, shortcut = BasicBlock, [(depth - 2) // 6] * 3, CIFAR_WIDTHS, "zero_pad"
    else:
        (block, layers), widths, shortcut = IMAGENET_LAYERS[depth], IMAGENET_WIDTHS, "projection"
    return block, layers, [scaled_width(w, width, "width", MAX_WIDTH) for w in widths], shortcut


def build_resnet(depth: int, *, residual: bool, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet",
                 act: str = "relu", width: float = 1.0) -> ResNet:
    """A ResNet (residual=True) or its plain twin, from either depth set, its channels scaled by `width`."""
    block, layers, widths, shortcut = depth_plan(depth, width)
    make_block = partial(block, residual=residual, shortcut=shortcut, act=act)
    return ResNet(make_block, layers, widths, expansion=block.expansion, num_classes=num_classes,
                  in_chans=in_chans, stem=stem, act=act)


for _depth in (*CIFAR_DEPTHS, *IMAGENET_LAYERS):
    _stem = "cifar" if _depth in CIFAR_DEPTHS else "imagenet"
    for _family, _residual in (("plain", False), ("resnet", True)):
        register_model(f"{_family}{_depth}", partial(build_resnet, _depth, residual=_residual),
                       family=_family, depth=_depth, natural_stem=_stem)
