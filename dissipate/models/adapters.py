"""Adapters: what our own blocks declare, declared for the common families nobody here wrote.

Our blocks carry `site_kinds` ({activation path: plain | residual | pnnh}) and `site_components` ({activation path:
{role: source module}}: what the pre-activation adds up, for Theorem 3.2's prediction). `adapt(model)` sets the same
attributes on the blocks of:

- torchvision's ResNet (basic and bottleneck blocks) and VGG;
- timm's ResNet (basic and bottleneck blocks) and vision transformer blocks.

The activation after a residual add is `residual`, and its parts are the branch's last BN (or its squeeze-excite
module, where the block has one) and the shortcut (the block's input, or its downsample). torchvision's blocks call
one ReLU module several times, so their sites are `relu`, `relu#1` (and `relu#2`): the k-th call is named `#k`, as
the recorder names it. A model that no adapter knows still probes, with kind `unknown`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

Adapter = Callable[[nn.Module], None]


def _shortcut(block: nn.Module) -> str:
    """The source of a residual block's shortcut: its input (""), or its downsample module's output."""
    return "" if getattr(block, "downsample", None) is None else "downsample"


def _torchvision_resnet_block(block: nn.Module) -> None:
    calls = 3 if hasattr(block, "bn3") else 2  # the bottleneck's one ReLU runs three times, the basic block's two
    last = f"relu#{calls - 1}"
    block.site_kinds = {"relu": "plain", **{f"relu#{k}": "plain" for k in range(1, calls - 1)}, last: "residual"}
    block.site_components = {last: {"branch": f"bn{calls}", "identity": _shortcut(block)}}


def _timm_resnet_block(block: nn.Module) -> None:
    acts = 3 if hasattr(block, "act3") else 2
    last = f"act{acts}"
    branch = "se" if getattr(block, "se", None) is not None else f"bn{acts}"
    block.site_kinds = {**{f"act{k}": "plain" for k in range(1, acts)}, last: "residual"}
    block.site_components = {last: {"branch": branch, "identity": _shortcut(block)}}


def _timm_vit_block(block: nn.Module) -> None:
    block.site_kinds = {"mlp.act": "plain"}  # W1 LN2(a): no shortcut reaches the MLP's activation


def _every_relu_plain(model: nn.Module) -> None:
    """A net without shortcuts (VGG): every activation is plain; the declaration sits on the model itself."""
    model.site_kinds = {path: "plain" for path, module in model.named_modules() if isinstance(module, nn.ReLU)}


# (module the class is defined in, class name) -> adapter; matched by name so that timm need not be installed
BLOCKS: dict[tuple[str, str], Adapter] = {
    ("torchvision.models.resnet", "BasicBlock"): _torchvision_resnet_block,
    ("torchvision.models.resnet", "Bottleneck"): _torchvision_resnet_block,
    ("timm.models.resnet", "BasicBlock"): _timm_resnet_block,
    ("timm.models.resnet", "Bottleneck"): _timm_resnet_block,
    ("timm.models.vision_transformer", "Block"): _timm_vit_block,
}
MODELS: dict[tuple[str, str], Adapter] = {
    ("torchvision.models.vgg", "VGG"): _every_relu_plain,
    ("torchvision.models.resnet", "ResNet"): lambda model: setattr(model, "site_kinds", {"relu": "plain"}),
    ("timm.models.resnet", "ResNet"): lambda model: setattr(model, "site_kinds", {"act1": "plain"}),
}


def _key(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__name__


def adapt(model: nn.Module) -> nn.Module:
    """Declare site kinds and theory parts on every module of `model` that an adapter knows; `model`, for chaining.
    Modules that already declare their own are left alone."""
    for module in model.modules():
        adapter = MODELS.get(_key(module)) if module is model else BLOCKS.get(_key(module))
        if adapter is not None and not hasattr(module, "site_kinds"):
            adapter(module)
    return model

