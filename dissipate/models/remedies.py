"""Plain nets made to train without shortcuts by other means than an internal path: the remedies.

Each family is `plainN` (He et al.'s CIFAR nets: a 3x3 stem, three stages of N // 6 blocks of two 3x3 conv layers,
widths 16/32/64 times `width`, a stride-2 first layer in stages 2 and 3, global pooling, a linear head) with only
what its method changes. Module names follow plainN's (`layer1.0.conv1`, `bn1`, `act1`), so sites line up:

    tatN     TAT, Zhang et al. 2022: leaky ReLU transformed by DeepMind's `dks` package so that the net's C map
             at 0 is eta = 0.9 for the net's real depth; no normalisation; delta-orthogonal init. method="dks":
             DKS, Martens et al. 2021, with a smooth activation (softplus by default).
    isoN     ISONet, Qi et al. 2020: Dirac (delta-orthogonal) kernels, the stem's too, SReLU(x) = relu(x - b) + b
             with b learned from -1 per channel, no BN and no conv biases, and the orthogonality penalty of its
             reference code (`regularization`).
    llN      looks-linear, Balduzzi et al. 2017: CReLU [relu(x), relu(-x)] and mirrored weights [W, -W], so that
             the net is exactly linear at initialisation (without BN, or with BN at its initial statistics).
    diracN   DiracNets, Zagoruyko and Komodakis 2017: each conv diag(a) D + diag(b) W / |W| with a = 5 and
             b = 1e-3 at init (its network's values), after NCReLU [max(x, 0), min(x, 0)]; D is its Dirac delta
             repeated over the channels, which sums NCReLU's halves back to x, and gives every output channel of a
             widening layer an identity term.
    repvggN  RepVGG, Ding et al. 2021: 3x3, 1x1 and identity branches, each with its BN, at training time;
             `reparameterize_model` fuses them into one 3x3 conv per layer, a truly plain net.

Constants and where they come from are in docs/design.md ("Shortcut-free remedies").

References:
    Zhang, Botev and Martens. Deep Learning without Shortcuts: Shaping the Kernel with Tailored Rectifiers. ICLR 2022.
    Martens, Ballard, Desjardins, Swirszcz, Dalibard, Sohl-Dickstein and Schoenholz. Rapid training of deep neural
        networks without skip connections or normalization layers using Deep Kernel Shaping. arXiv 2110.01765, 2021.
    Qi, You, Wang, Ma and Malik. Deep Isometric Learning for Visual Recognition. ICML 2020.
    Balduzzi, Frean, Leary, Lewis, Ma and McWilliams. The Shattered Gradients Problem. ICML 2017.
    Zagoruyko and Komodakis. DiracNets: Training Very Deep Neural Networks Without Skip-Connections. arXiv 2017.
    Ding, Zhang, Ma, Han, Ding and Sun. RepVGG: Making VGG-style ConvNets Great Again. CVPR 2021.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from ._layers import conv3x3, init_he_normal
from ._registry import register_model
from .pnnh import checked_choice
from .resnet import CIFAR_DEPTHS, ResNet, depth_plan

TAT_ETA = 0.9  # TAT's target for the net's C map at 0 with leaky ReLU (Zhang et al. 2022, and dks's default)
DKS_ACTS = ("softplus", "tanh", "elu", "gelu")  # smooth activations that dks transforms (and torch names alike)
SRELU_INIT = -1.0  # ISONet's SReLU threshold at initialisation (its reference code's config and paper)
ORTHO_COEFF = 1e-4  # ISONet's orthogonality penalty (reference code's config, ORTHO_COEFF)
MAX_ORTHO_COEFF = 1.0  # 10^4 times the reference's: beyond it the penalty, not the task, is what a net learns
DIRAC_A, DIRAC_B = 5.0, 1e-3  # DiracNets' initial scales of the identity and of the normalised weight (the network
# its code trains, diracnet.py; the stand-alone diracconv.py starts at 1 and 0.1)


# -- initialisation ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def delta_orthogonal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Zero everywhere but the centre tap, which is orthogonal as an [out, in] matrix (orthonormal columns when
    out >= in, rows otherwise) times gain * max(1, sqrt(out / in)): each output channel then keeps the mean square
    of an isotropic input's channels (q_out = q_in). For PyTorch's [out, in, kh, kw] layout (and [out, in] linears).

    dks's `scaled_uniform_orthogonal_` reads the layout as [in, out, ...], which scales a 64 -> 256 conv to a q ratio
    of 0.25 and a 256 -> 64 conv to 4 (measured); this is the initialisation it means."""
    out_chs, in_chs = weight.shape[:2]
    centre = nn.init.orthogonal_(torch.empty(out_chs, in_chs, dtype=weight.dtype, device=weight.device))
    weight.zero_()
    weight[(slice(None), slice(None), *(k // 2 for k in weight.shape[2:]))] = \
        centre * gain * max(1.0, math.sqrt(out_chs / in_chs))
    return weight


def _init_delta_orthogonal(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            delta_orthogonal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# -- activations (each a module per site, so that the recorder sees every pre-activation once) ---------------------

class TransformedActivation(nn.Module):
    """output_scale * (act(input_scale * x + input_shift) + output_shift): an activation as DKS or TAT transform it
    (for TAT's leaky ReLU, output_scale * leaky_relu(x, negative_slope)). The constants come from the `dks` package
    at build time; they follow from the net's depth, so a net rebuilds with the same ones."""

    def __init__(self, act: str, *, output_scale: float, negative_slope: float = 0.0, input_scale: float = 1.0,
                 input_shift: float = 0.0, output_shift: float = 0.0):
        super().__init__()
        self.act, self.negative_slope = act, negative_slope
        self.input_scale, self.input_shift = input_scale, input_shift
        self.output_scale, self.output_shift = output_scale, output_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act == "leaky_relu":
            return self.output_scale * F.leaky_relu(x, self.negative_slope)
        return self.output_scale * (getattr(F, self.act)(self.input_scale * x + self.input_shift) + self.output_shift)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in vars(self).items()
                         if not k.startswith("_") and k != "training")


def transformed_activation(method: str, act: str, num_acts: int) -> Callable[[], nn.Module]:
    """A factory of `TransformedActivation` for a chain of `num_acts` activation layers, solved by dks: TAT's leaky
    ReLU (C map at 0 of the whole chain = TAT_ETA), or DKS's transform of the smooth `act` (its default targets)."""
    try:
        from dks.base.activation_transform import _get_activations_params  # the solver, before it builds callables
    except ImportError as error:
        raise InvalidArgumentError(f"tatN needs DeepMind's dks package ({error}); pip install dks autograd "
                                   "absl-py") from None

    def chain(x, r_fn):  # the subnetwork maximising function of a plain chain: every activation composed once
        for _ in range(num_acts):
            x = r_fn(x)
        return x

    name = "leaky_relu" if method == "tat" else act
    solved = {"gelu": "gelu_exact"}.get(name, name)  # dks's "gelu" is the tanh approximation; torch's F.gelu is exact
    params = _get_activations_params([solved], method=method.upper(), subnet_max_func=chain,
                                     tat_params={"c_val_0_target": TAT_ETA} if method == "tat" else None)[solved]
    constants = {key: float(value) for key, value in params.items()}
    return partial(TransformedActivation, name, **constants)


class PerLocationNormalization(nn.Module):
    """DKS's per-location normalisation, with its default homogeneous coordinate of 1: a channel of ones appended,
    then each location's channel vector scaled to a mean square of 1, so that the q value TAT and DKS assume is 1 at
    every location, a pixel that is exactly 0 (Fashion-MNIST's background) included. The net's first conv reads one
    channel more than the image has. What `dks.pytorch.data_preprocessing.per_location_normalization` computes (a
    test checks), on the images' own device and dtype, where dks makes its ones on the CPU."""

    added_chans = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True))


class SReLU(nn.Module):
    """ISONet's shifted ReLU, relu(x - b) + b = max(x, b), with a threshold b per channel learned from SRELU_INIT."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.full((channels,), SRELU_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias.view(1, -1, *([1] * (x.ndim - 2)))
        return F.relu(x - b) + b


class CReLU(nn.Module):
    """Concatenated ReLU, [relu(x), relu(-x)] along the channels: both halves kept (looks-linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat([x, -x], dim=1))


class NCReLU(nn.Module):
    """DiracNets' [max(x, 0), min(x, 0)] along the channels: both halves kept, and their sum is x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), -F.relu(-x)], dim=1)


# -- convolutions ---------------------------------------------------------------------------------------------------

class LooksLinearConv(nn.Conv2d):
    """A 3x3 conv over CReLU's 2C channels whose weight starts mirrored, [W, -W] with W delta-orthogonal, so that
    W relu(x) - W relu(-x) = W x: linear at initialisation. The halves are free parameters and drift apart as the net
    trains (PNNH's +/- pair, by contrast, is tied for good)."""

    def reset_parameters(self) -> None:
        half = delta_orthogonal_(torch.empty(self.out_channels, self.in_channels // 2, *self.kernel_size))
        with torch.no_grad():
            self.weight.copy_(torch.cat([half, -half], dim=1))
            if self.bias is not None:
                self.bias.zero_()


class DiracConv(nn.Conv2d):
    """A 3x3 conv parametrised as diag(a) D + diag(b) W / |W| (each output filter of W normalised), D being
    `dirac_delta`: over NCReLU's 2C channels into C outputs it sums each channel's two halves ([I, I]), so with b = 0
    the conv is a * x; into 2C outputs (a widening layer) it hands every output its own half. A skip folded into the
    weights: plain at inference."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.a = nn.Parameter(torch.full((out_chs,), DIRAC_A))
        self.b = nn.Parameter(torch.full((out_chs,), DIRAC_B))
        self.register_buffer("delta", dirac_delta(in_chs, out_chs), persistent=False)

    def effective_weight(self) -> torch.Tensor:
        normalised = F.normalize(self.weight.flatten(1), dim=1).view_as(self.weight)
        return self.a.view(-1, 1, 1, 1) * self.delta + self.b.view(-1, 1, 1, 1) * normalised

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), None)


def dirac_delta(in_chs: int, out_chs: int, size: int = 3) -> torch.Tensor:
    """DiracNets' identity kernel (`dirac_delta` of its diracnet.py): the Dirac delta over min(in, out) channels,
    repeated to fill the larger side, so that output o reads every input i with i = o modulo that minimum (widths
    that do not divide repeat it in part)."""
    n = min(in_chs, out_chs)
    delta = torch.zeros(out_chs, in_chs, size, size)
    outputs, inputs = torch.arange(out_chs)[:, None] % n, torch.arange(in_chs)[None, :] % n
    delta[:, :, size // 2, size // 2] = (outputs == inputs).float()
    return delta


class RepConv(nn.Module):
    """RepVGG's training-time layer: BN(3x3 conv x) + BN(1x1 conv x) + BN(x), the last only where the shape stays.
    `reparameterize` returns the one 3x3 conv with bias that computes the same in eval mode."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv3x3 = nn.Sequential(conv3x3(in_chs, out_chs, stride), nn.BatchNorm2d(out_chs))
        self.conv1x1 = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(out_chs))
        self.identity = nn.BatchNorm2d(in_chs) if in_chs == out_chs and stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3x3(x) + self.conv1x1(x)
        return out if self.identity is None else out + self.identity(x)

    @torch.no_grad()
    def reparameterize(self) -> nn.Conv2d:
        """The fused 3x3 conv: each branch's BN folded into its kernel, the 1x1 and identity kernels padded to 3x3
        at the centre tap, and the kernels and biases summed (Ding et al. 2021, section 3.3)."""
        conv = self.conv3x3[0]
        kernel, bias = _fold(conv.weight, self.conv3x3[1])
        one, one_bias = _fold(F.pad(self.conv1x1[0].weight, (1, 1, 1, 1)), self.conv1x1[1])
        kernel, bias = kernel + one, bias + one_bias
        if self.identity is not None:
            eye = nn.init.dirac_(torch.zeros_like(conv.weight))
            ident, ident_bias = _fold(eye, self.identity)
            kernel, bias = kernel + ident, bias + ident_bias
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1,
                          device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        return fused


def _fold(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv-then-BN in eval mode as one conv."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def rep_parts(convs: dict[str, str], block: nn.Module) -> dict[str, dict[str, str]]:
    """The parts of each site's pre-activation that a RepConv makes ({site: {role: source}}, for Theorem 3.2 and the
    bound-check): its 3x3 and 1x1 branches, and its identity branch where it has one, each after its own BN. At
    initialisation their weights are independent, so the branches add as independent summands. {} for other convs."""
    parts = {}
    for act, name in convs.items():
        conv = block.get_submodule(name)
        if isinstance(conv, RepConv):
            parts[act] = {"branch": f"{name}.conv3x3", "branch:1x1": f"{name}.conv1x1"}
            if conv.identity is not None:
                parts[act]["identity"] = f"{name}.identity"
    return parts


def reparameterize_model(model: nn.Module) -> nn.Module:
    """`model` with every `RepConv` replaced in place by its fused conv: a RepVGG net as deployed, truly plain, its
    sites under the same names and now of kind "plain". Other models are returned as they are."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RepConv):
                setattr(parent, name, child.reparameterize())
        if getattr(parent, "deploy_kind", None):
            parent.site_kinds = dict.fromkeys(parent.site_kinds, parent.deploy_kind)
            parent.site_components = {}  # one conv now: a plain layer's, which declares no parts
    return model


# -- the families -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """What a remedy changes in a plain layer conv -> norm -> act: each factory makes one layer's module."""

    kind: str  # the sites' kind
    conv: Callable[[int, int, int], nn.Module]  # (in channels, out channels, stride)
    norm: Callable[[int], nn.Module]
    act: Callable[[int], nn.Module]  # channels -> the activation
    expand: int = 1  # channels out of the activation per channel in (2: CReLU's halves)
    init: Callable[[nn.Module], None] = init_he_normal
    deploy_kind: str | None = None  # the sites' kind once reparameterised
    stem_conv: Callable[[int, int, int], nn.Module] | None = None  # the cifar stem's conv, where not plainN's (it
    # reads the image, not a CReLU's halves, so the conv of a method whose convs read those is not it)
    preprocess: Callable[[], nn.Module] | None = None  # what the image goes through before the stem (its
    # `added_chans`: the channels it adds, which the stem reads)


class Block(nn.Module):
    """Two conv -> norm -> act layers, as plainN's basic block without a shortcut, with the method's modules."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, *, method: Method):
        super().__init__()
        self.conv1, self.bn1, self.act1 = method.conv(in_chs * method.expand, out_chs, stride), \
            method.norm(out_chs), method.act(out_chs)
        self.conv2, self.bn2, self.act2 = method.conv(out_chs * method.expand, out_chs, 1), \
            method.norm(out_chs), method.act(out_chs)
        self.site_kinds = {"act1": method.kind, "act2": method.kind}
        self.site_components = rep_parts({"act1": "conv1", "act2": "conv2"}, self)
        self.deploy_kind = method.deploy_kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))


class ShortcutFree(ResNet):
    """plainN's layout (ResNet's stem, stages and head) with the method's blocks, and its own stem norm and
    activation, a head over the last activation's channels (doubled by a CReLU), and its own initialisation."""

    def __init__(self, method: Method, layers: list[int], widths: list[int], *, num_classes: int, in_chans: int,
                 stem: str):
        preprocess = method.preprocess() if method.preprocess else None
        in_chans += getattr(preprocess, "added_chans", 0)
        super().__init__(partial(Block, method=method), layers, widths, num_classes=num_classes, in_chans=in_chans,
                         stem=stem)
        self.preprocess = preprocess
        if method.stem_conv is not None and stem == "cifar":
            self.conv1 = method.stem_conv(in_chans, widths[0], 1)
        self.bn1, self.act1 = method.norm(widths[0]), method.act(widths[0])
        self.fc = nn.Linear(self.fc.in_features * method.expand, num_classes)
        self.site_kinds = {"act1": method.kind}
        self.site_components = rep_parts({"act1": "conv1"}, self)
        self.deploy_kind = method.deploy_kind
        method.init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward_features(x if self.preprocess is None else self.preprocess(x))


def orthogonality_penalty(conv: nn.Conv2d) -> torch.Tensor:
    """ISONet's penalty for one conv, as its reference code computes it: half the squared distance between the
    kernel's self-convolution (its Gram matrix at every offset, with the conv's stride) and the identity at the centre
    offset, taken over the smaller of the input and output channels."""
    operator = conv.weight if conv.weight.shape[1] >= conv.weight.shape[0] else conv.weight.transpose(0, 1)
    gram = F.conv2d(operator, operator, padding=(conv.kernel_size[0] - 1, conv.kernel_size[1] - 1),
                    stride=conv.stride)
    identity = torch.zeros_like(gram)
    identity[:, :, gram.shape[2] // 2, gram.shape[3] // 2] = torch.eye(operator.shape[0], device=gram.device)
    return ((gram - identity) ** 2).sum() / 2


class ISONet(ShortcutFree):
    """ShortcutFree with ISONet's orthogonality penalty on every conv but the stem's (as its reference code skips the
    layer that reads the image)."""

    regularization_option = "ortho_coeff"  # the option that scales `regularization`, named when it overflows

    def __init__(self, *args, ortho_coeff: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.ortho_coeff = ortho_coeff

    def regularization(self) -> torch.Tensor | None:
        """The term the training loop adds to the loss (`train.regularization`); None with ortho_coeff 0."""
        convs = [m for name, m in self.named_modules() if isinstance(m, nn.Conv2d) and name != "conv1"]
        return self.ortho_coeff * sum(orthogonality_penalty(conv) for conv in convs) if self.ortho_coeff else None


def _iso_init(model: nn.Module) -> None:
    """Dirac kernels (a partial identity where the widths differ: orthonormal rows or columns at the centre tap) in
    every conv but a 7x7 one, the cifar stem's included, as ISONet's code does; an imagenet stem keeps PyTorch's."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size != (7, 7):
            nn.init.dirac_(module.weight)


def _looks_linear_init(model: nn.Module) -> None:
    """The stem (it reads the image, not a CReLU) delta-orthogonal; every conv after a CReLU mirrored
    (LooksLinearConv); the head mirrored too, [V, -V]; BN at weight 1 and bias 0."""
    init_he_normal(model)
    delta_orthogonal_(model.conv1.weight)
    for module in model.modules():
        if isinstance(module, LooksLinearConv):
            module.reset_parameters()
    half = delta_orthogonal_(torch.empty(model.fc.out_features, model.fc.in_features // 2))
    with torch.no_grad():
        model.fc.weight.copy_(torch.cat([half, -half], dim=1))


NORMS = ("bn", "none")


def build_tat(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar", width: float = 1.0,
              method: str = "tat", act: str = "softplus", pln: bool = True) -> ShortcutFree:
    """tatN: no normalisation, delta-orthogonal init, and the activation dks transforms for this depth: TAT's leaky
    ReLU, or with method="dks" DKS's transform of the smooth `act`; the image per-location normalised first
    (`pln`, PerLocationNormalization), as DKS and TAT assume."""
    _, layers, widths, _ = depth_plan(depth, width)
    method = checked_choice("method", method, ("tat", "dks"))
    act = checked_choice("act", act, DKS_ACTS) if method == "dks" else "leaky_relu"
    make_act = transformed_activation(method, act, num_acts=1 + 2 * sum(layers))  # the stem's, two per block
    if not isinstance(pln, bool):
        raise InvalidArgumentError(f"pln must be true or false, got {pln!r}")
    spec = Method(method, _biased_conv3x3, _no_norm, lambda c: make_act(), init=_init_delta_orthogonal,
                  stem_conv=_biased_conv3x3, preprocess=PerLocationNormalization if pln else None)
    return ShortcutFree(spec, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem)


def build_iso(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar", width: float = 1.0,
              ortho_coeff: float = ORTHO_COEFF) -> ISONet:
    """isoN: Dirac kernels, SReLU, no BN, no conv biases, and the orthogonality penalty (`ortho_coeff` 0 turns it
    off)."""
    _, layers, widths, _ = depth_plan(depth, width)
    spec = Method("iso", conv3x3, _no_norm, SReLU, init=_iso_init, stem_conv=conv3x3)  # SReLU's b is the shift:
    # no conv has a bias, as in ISONet's code
    return ISONet(spec, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem,
                  ortho_coeff=_bounded("ortho_coeff", ortho_coeff, MAX_ORTHO_COEFF))


def build_ll(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar", width: float = 1.0,
             norm: str = "bn") -> ShortcutFree:
    """llN: CReLU and mirrored weights; plainN's BN, or none (norm="none": exactly linear at initialisation)."""
    _, layers, widths, _ = depth_plan(depth, width)
    spec = Method("ll", lambda i, o, s: LooksLinearConv(i, o, 3, stride=s, padding=1, bias=False),
                  nn.BatchNorm2d if checked_choice("norm", norm, NORMS) == "bn" else _no_norm, lambda c: CReLU(),
                  expand=2, init=_looks_linear_init)
    return ShortcutFree(spec, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem)


def build_dirac(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar",
                width: float = 1.0) -> ShortcutFree:
    """diracN: Dirac-parametrised convs after NCReLU, with plainN's BN."""
    _, layers, widths, _ = depth_plan(depth, width)
    spec = Method("dirac", DiracConv, nn.BatchNorm2d, lambda c: NCReLU(), expand=2)
    return ShortcutFree(spec, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem)


def build_repvgg(depth: int, *, num_classes: int = 10, in_chans: int = 3, stem: str = "cifar",
                 width: float = 1.0) -> ShortcutFree:
    """repvggN: each conv layer a RepConv (its BNs inside), the cifar stem's too, as RepVGG's stem is one of its
    blocks; ReLU; `reparameterize_model` deploys it."""
    _, layers, widths, _ = depth_plan(depth, width)
    spec = Method("repvgg", RepConv, _no_norm, lambda c: nn.ReLU(), deploy_kind="plain", stem_conv=RepConv)
    return ShortcutFree(spec, layers, widths, num_classes=num_classes, in_chans=in_chans, stem=stem)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


def _biased_conv3x3(in_chs: int, out_chs: int, stride: int) -> nn.Conv2d:
    """A 3x3 conv with a bias: a net without normalisation keeps the shift that BN's bias gave plainN."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=True)


def _bounded(name: str, value: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise InvalidArgumentError(f"{name} must be a number from 0 to {high:g}, got {value!r}")
    return float(value)


REMEDIES = {"tat": build_tat, "iso": build_iso, "ll": build_ll, "dirac": build_dirac, "repvgg": build_repvgg}

for _family, _build in REMEDIES.items():
    for _depth in CIFAR_DEPTHS:
        register_model(f"{_family}{_depth}", partial(_build, _depth), family=_family, depth=_depth,
                       natural_stem="cifar")
