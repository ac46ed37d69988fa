"""Size and cost of registry models: parameter counts and forward FLOPs."""

from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..errors import InvalidArgumentError
from ._registry import create_model, get_model_entry, list_models


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Forward FLOPs per image of `image_size` px, as torch.utils.flop_counter counts them (2 per multiply-add).

    Convolutions and matrix products only, attention's included (counted through its math form, which the fused
    kernels compute too): BN, LN, activations, softmax and pooling are not counted. What a forward computes once
    whatever the batch (a PNNH block's E^T E, an orthogonal coder's map) is not per image: the count is that of two
    images less that of one.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # batch statistics of one image are undefined where the feature map is 1x1
    counts = []
    try:
        for batch in (1, 2):
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
                model(torch.zeros(batch, in_chans, image_size, image_size, device=device))
            counts.append(counter.get_total_flops())
    finally:
        model.train(was_training)
    return counts[1] - counts[0]


def select_models(patterns: Sequence[str] = ()) -> list[str]:
    """Registry names matching any of `patterns` (exact names or globs), all of them when none is given."""
    if not patterns:
        return list_models()
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = list_models(pattern)
            if not matched:
                raise InvalidArgumentError(f"no model matches {pattern!r}; `dissipate models` lists them all")
        else:
            matched = [get_model_entry(pattern).name]
        names += [name for name in matched if name not in names]
    return names


def model_table(names: Iterable[str] | None = None, *, num_classes: int = 10, in_chans: int = 3,
                stem: str | None = None, image_sizes: Sequence[int] = (32, 224)) -> pd.DataFrame:
    """One row per model: family, depth, stem, parameters and forward FLOPs at each image size.

    Each row is one model (its family's own stem unless `stem` is given), measured at every size. A transformer,
    which has no stem ("-"), is built for each size, and its parameters counted at the first. Models are built
    on the meta device, so no weight is allocated and no convolution computed (about 0.5 s a model, in torch's
    Python shape functions). `names` may be any iterable, a progress bar say.
    """
    bad_sizes = [size for size in image_sizes if not isinstance(size, int) or size < 1]
    if bad_sizes:
        raise InvalidArgumentError(f"image sizes must be positive integers, got {bad_sizes}")
    rows = []
    for name in names if names is not None else list_models():
        entry = get_model_entry(name)
        sized = entry.natural_stem is None  # built for an image size: once per size

        def build(size: int | None) -> nn.Module:
            with torch.device("meta"):
                return create_model(name, num_classes=num_classes, in_chans=in_chans,
                                    **({"image_size": size} if sized else {"stem": stem}))

        model = build(image_sizes[0] if sized and image_sizes else None)
        row = {"model": name, "family": entry.family, "depth": entry.depth,
               "stem": "-" if sized else model.spec.kwargs["stem"], "params": count_parameters(model)}
        for size in image_sizes:
            try:
                row[f"flops_{size}px"] = count_flops(build(size) if sized else model, size, in_chans)
            except RuntimeError as error:  # e.g. VGG's five 2x2 max-pools need at least 32 px
                reason = str(error).strip().splitlines()[0]
                raise InvalidArgumentError(f"{name} cannot take {size}x{size} images: {reason}") from None
        rows.append(row)
    return pd.DataFrame(rows)
