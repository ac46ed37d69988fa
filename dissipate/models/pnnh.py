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

Blocks that change shape (stride 2) are PNNH transitions whose code is the shortcut's map (`downsample_block="pnnh"`,
the default), plain conv-BN-act pairs (`"plain"`, the first version's) or the residual block with its shortcut
(`"original"`). Bottleneck nets (pnnh50, pnnh101) carry the code across all three activations (PNNHBottleneck).
`coder` constrains E: "orthogonal" (the default) keeps its rows orthonormal through training, "free" (the first
version's) does not. `impl` ("fused" or "explicit") says whether the +/- pair is materialised: one function and one
state_dict either way, and the probe always measures the explicit one. The defaults are measured choices
(docs/design.md, section 2): at depth 110 and lr 0.1 the first version diverges and this one trains as ResNet does.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from torch.nn.utils.parametrizations import orthogonal

from ..errors import InvalidArgumentError
from ._layers import conv3x3, make_act, scaled_width
from ._registry import register_model
from .resnet import (CIFAR_DEPTHS, IMAGENET_LAYERS, Bottleneck, ResNet, bottleneck_layers, depth_plan,
                     make_shortcut, residual_components)

DOWNSAMPLE_BLOCKS = ("plain", "original", "pnnh")
CODERS = ("free", "orthogonal")
ORTHOGONAL_MAPS = ("cayley", "matrix_exp", "householder")  # torch's maps from a parameter to an orthogonal E
IMPLS = ("explicit", "fused")
# the first version's defaults, which its checkpoints imply (its orthogonal coders, when asked for, used matrix_exp)
FIRST_DEFAULTS = {"coder": "free", "downsample_block": "plain", "orthogonal_map": "matrix_exp"}
MAX_LEARNER_RATIO = 16  # a learner 16 times the block's width: far past any ablation, short of running out of memory


def checked_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidArgumentError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def cross(act: nn.Module, learner: torch.Tensor, code: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(act(learner), code) with the code carried across the same activation module as a +/- pair: one call over
    [learner, code, -code] (channels along `dim`: 1 for feature maps, -1 for tokens), then act(code) - act(-code),
    which is the code exactly for ReLU, GELU and SiLU."""
    mixed = act(torch.cat([learner, code, -code], dim=dim))
    hidden, plus, minus = mixed.split([learner.shape[dim], code.shape[dim], code.shape[dim]], dim=dim)
    return hidden, plus - minus


def add_coder(block: nn.Module, channels: int, coder_ratio: float, coder: str, orthogonal_map: str) -> None:
    """Give `block` its coder E, a (k, C) parameter with orthonormal rows, k = coder_ratio * C <= C (encoder and
    decoder alike). An "orthogonal" coder keeps them through training (torch's orthogonal parametrisation by
    `orthogonal_map`, started from this E: the Cayley map by default, a linear solve, where matrix_exp made pnnh34
    train at a third of resnet34's speed on the CPU); on the meta device, where only shapes exist, it is left free:
    the same parameters, counted.

    Drawing E does not advance torch's generator, so a PNNH net of a seed has the learner weights of the ResNet (and
    plain net) of that seed: comparisons at initialisation are paired, and with k = C the nets are one function."""
    block.coder_chs = scaled_width(channels, coder_ratio, "coder_ratio", 1)
    block.coder = nn.Parameter(torch.empty(block.coder_chs, channels))
    with torch.random.fork_rng(devices=[]):  # E's draws leave the generator as they found it: see below
        nn.init.orthogonal_(block.coder)
        checked_choice("orthogonal_map", orthogonal_map, ORTHOGONAL_MAPS)
        if checked_choice("coder", coder, CODERS) == "orthogonal" and not block.coder.is_meta:
            orthogonal(block, "coder", orthogonal_map)  # it checks E's values as it registers (not on meta)
    block.coder_ratio = block.coder_chs / channels  # k / C as built
    block.identity_coder = coder == "orthogonal" and block.coder_chs == channels  # E^T E = I for good


def fused_code(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """E^T E x, as the fused path adds it: one 1x1 conv by the C x C matrix E^T E (a product over the last dim for
    tokens (B, T, C)), or x itself where E is orthogonal with k = C, so that E^T E = I exactly (the explicit path
    computes it, to float rounding, and E gets no gradient beyond that rounding either way)."""
    if block.identity_coder:
        return x
    coder = block.coder  # (k, C): a parametrised E is computed once per call
    gram = coder.T @ coder  # symmetric
    return x @ gram if x.ndim == 3 else F.conv2d(x, gram[:, :, None, None])


class PNNHBlock(nn.Module):
    """A stride-1 block of two plain conv layers whose inner activation also carries the coder's code u = E x as a
    +/- pair; E^T decodes it before the second activation.

    `coder`: "free" (E learned without constraint) or "orthogonal" (E kept with orthonormal rows through training by
    torch's orthogonal parametrisation, so E^T E is a projection and cannot amplify). `impl`: "explicit" carries the
    pair through act1 (what a probe must see); "fused" adds E^T E x before act2 without it, the same function and
    the same parameters, for training.
    """

    kind = "pnnh"
    site_kinds = {"act1": "pnnh", "act2": "pnnh"}  # both activations carry the coder's code
    site_components = {"act2": {"branch": "bn2", "coder": ""}}  # act2 sums the learner and E^T E x

    def __init__(self, channels: int, *, coder_ratio: float = 1.0, learner_ratio: float = 1.0, act: str = "relu",
                 coder: str = "orthogonal", impl: str = "fused", orthogonal_map: str = "cayley"):
        super().__init__()
        self.learner_chs = scaled_width(channels, learner_ratio, "learner_ratio", MAX_LEARNER_RATIO)
        self.impl = checked_choice("impl", impl, IMPLS)
        self.conv1 = conv3x3(channels, self.learner_chs)
        self.bn1 = nn.BatchNorm2d(self.learner_chs)
        add_coder(self, channels, coder_ratio, coder, orthogonal_map)
        self.act1 = make_act(act)  # explicit: over [h, u, -u], learner_chs + 2 * coder_chs channels
        self.conv2 = conv3x3(self.learner_chs, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.bn1(self.conv1(x))
        if self.impl == "fused":
            return self.act2(self.bn2(self.conv2(self.act1(hidden))) + fused_code(self, x))
        coder = self.coder  # (k, C): a parametrised E is computed once per call
        hidden, code = cross(self.act1, hidden, F.conv2d(x, coder[:, :, None, None]))
        return self.act2(self.bn2(self.conv2(hidden)) + F.conv2d(code, coder.T[:, :, None, None]))


class PNNHDownsample(nn.Module):
    """A stage transition (stride 2, the width changes) whose shortcut map u = S(x) (option A's subsample and zero-pad,
    or option B's strided projection with BN) is the code: it crosses act1 as a +/- pair and is added before act2, so
    no path goes around an activation. With the pair decoded exactly, it computes the residual block's function."""

    kind = "pnnh"
    site_kinds = {"act1": "pnnh", "act2": "pnnh"}

    def __init__(self, in_chs: int, out_chs: int, stride: int, *, shortcut: str, act: str = "relu",
                 impl: str = "fused"):
        super().__init__()
        self.impl = checked_choice("impl", impl, IMPLS)
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = make_act(act)  # explicit: over [h, u, -u]
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = make_shortcut(shortcut, in_chs, out_chs, stride)  # the code's map, named as ResNet's
        self.act2 = make_act(act)
        self.site_components = residual_components("act2", "bn2", self.downsample)  # u adds as the shortcut does

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, code = self.bn1(self.conv1(x)), self.downsample(x)
        hidden, code = (self.act1(hidden), code) if self.impl == "fused" else cross(self.act1, hidden, code)
        return self.act2(self.bn2(self.conv2(hidden)) + code)


class PNNHBottleneck(nn.Module):
    """A bottleneck (1x1 reduce, 3x3, 1x1 expand by 4) whose code crosses both inner activations: u = E x crosses act1
    as a +/- pair, is decoded (c+ - c- = u, exact for ReLU, GELU and SiLU) and re-encoded as a pair across act2, and
    E^T decodes it before act3. Where the shape changes (`stride` 2, or new widths), the code is the shortcut's: x
    itself crosses act1 (still at the input's resolution), then u = S(x), the strided projection with BN, crosses
    act2 and is added before act3. Either way no layer is plain and no path goes around an activation."""

    kind = "pnnh"
    expansion = 4
    site_kinds = {"act1": "pnnh", "act2": "pnnh", "act3": "pnnh"}

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, *, shortcut: str = "projection",
                 coder_ratio: float = 1.0, learner_ratio: float = 1.0, act: str = "relu", coder: str = "orthogonal",
                 impl: str = "fused", orthogonal_map: str = "cayley"):
        super().__init__()
        mid_chs = scaled_width(out_chs // self.expansion, learner_ratio, "learner_ratio", MAX_LEARNER_RATIO)
        self.impl = checked_choice("impl", impl, IMPLS)
        bottleneck_layers(self, in_chs, mid_chs, out_chs, stride, act)  # act1 and act2 carry the code when explicit
        self.downsample = make_shortcut(shortcut, in_chs, out_chs, stride)
        if self.downsample is None:  # the coder's code, E x
            add_coder(self, out_chs, coder_ratio, coder, orthogonal_map)
            self.site_components = {"act3": {"branch": "bn3", "coder": ""}}
        else:
            self.site_components = residual_components("act3", "bn3", self.downsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "fused":  # the code is added where it arrives: S(x), or E^T E x
            hidden = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
            decoded = self.downsample(x) if self.downsample is not None else fused_code(self, x)
            return self.act3(self.bn3(self.conv3(hidden)) + decoded)
        coder = None if self.downsample is not None else self.coder[:, :, None, None]
        hidden, code = cross(self.act1, self.bn1(self.conv1(x)), x if coder is None else F.conv2d(x, coder))
        if coder is None:
            code = self.downsample(code)  # S(x), at the output's resolution and width
        hidden, code = cross(self.act2, self.bn2(self.conv2(hidden)), code)
        decoded = code if coder is None else F.conv2d(code, coder.transpose(0, 1))
        return self.act3(self.bn3(self.conv3(hidden)) + decoded)


CODE_BLOCKS = (PNNHBlock, PNNHDownsample, PNNHBottleneck)  # the CNN blocks with an explicit and a fused impl


@contextlib.contextmanager
def explicit_code(model: nn.Module) -> Iterator[int]:
    """Within the block, every PNNH block of `model` (every module with an `impl` of IMPLS, a ViT's too) carries its
    code explicitly, as a +/- pair through its activation (what a probe must see); each gets its own impl back
    afterwards. Yields how many were switched."""
    blocks = [(m, m.impl) for m in model.modules() if getattr(m, "kind", None) == "pnnh" and hasattr(m, "impl")]
    try:
        for block, _ in blocks:
            block.impl = "explicit"
        yield sum(impl != "explicit" for _, impl in blocks)
    finally:
        for block, impl in blocks:
            block.impl = impl


def build_pnnh(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "imagenet", act: str = "relu",
               coder_ratio: float = 1.0, learner_ratio: float = 1.0, downsample_block: str = "pnnh",
               coder: str = "orthogonal", impl: str = "fused", orthogonal_map: str = "cayley",
               width: float = 1.0) -> ResNet:
    """A PNNH net on the ResNet skeleton: PNNH blocks where the shape stays, `downsample_block` where it changes.
    Bottleneck depths (50, 101) use PNNHBottleneck, whose "pnnh" stage transitions carry the shortcut's code.
    `width` scales the block channels C (resnetN's widths); coder_ratio and learner_ratio apply to the scaled C."""
    checked_choice("downsample_block", downsample_block, DOWNSAMPLE_BLOCKS)
    block, layers, widths, shortcut = depth_plan(depth, width)
    options = dict(coder_ratio=coder_ratio, learner_ratio=learner_ratio, act=act, coder=coder, impl=impl,
                   orthogonal_map=orthogonal_map)
    bottleneck = partial(PNNHBottleneck, shortcut=shortcut, **options)
    basic = partial(PNNHBlock, **options)
    if downsample_block == "pnnh":
        downsample = bottleneck if block is Bottleneck else partial(PNNHDownsample, shortcut=shortcut, act=act,
                                                                     impl=impl)
    else:
        downsample = partial(block, residual=downsample_block == "original", shortcut=shortcut, act=act)

    def make_block(in_chs: int, out_chs: int, stride: int) -> nn.Module:
        if stride != 1 or in_chs != out_chs:
            return downsample(in_chs, out_chs, stride)
        return bottleneck(in_chs, out_chs) if block is Bottleneck else basic(out_chs)

    return ResNet(make_block, layers, widths, expansion=block.expansion, num_classes=num_classes, in_chans=in_chans,
                  stem=stem, act=act)


for _depth in (*CIFAR_DEPTHS, *IMAGENET_LAYERS):
    register_model(f"pnnh{_depth}", partial(build_pnnh, _depth), family="pnnh", depth=_depth,
                   natural_stem="cifar" if _depth in CIFAR_DEPTHS else "imagenet", first_defaults=FIRST_DEFAULTS)
