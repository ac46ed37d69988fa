"""Figure 6 (the paper's Figure 4), training throughput: images per second of `dissipate train`'s own loop for each
model and depth, on synthetic images of a fixed size. A configuration that runs out of memory is kept as a labelled
missing bar ("OOM").
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..errors import OutOfMemory
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, caption_line, finish_figure
from ..probe import resolve_device
from ..train import TrainConfig, train
from . import accuracy_params
from ._common import COMPARED, COMPARED_DEPTHS, TRANSFORMERS, Context, Variant, family_models

NAME = "throughput"
DESCRIPTION = "training images per second per model and depth, out-of-memory shown as a labelled missing bar"
COLUMNS = ("preset", "dataset", "device", "model", "family", "model_depth", "image_size", "batch_size",
           "images_per_s", "peak_mem_mb", "status")


@dataclass(frozen=True)
class Setting:
    """Models measured at one image size and batch size."""

    models: tuple[Variant, ...]
    image_size: int
    batch_size: int
    images: int  # per epoch; the last of `epochs` epochs is timed (the first carries the start-up costs)
    epochs: int = 2


@dataclass(frozen=True)
class Settings:
    groups: tuple[Setting, ...]


PRESETS = {
    "smoke": Settings((Setting(family_models(COMPARED, (20,)), image_size=16, batch_size=32, images=64),)),
    "cpu": Settings((Setting(family_models(COMPARED, COMPARED_DEPTHS), image_size=32, batch_size=64, images=256),
                     Setting(family_models(COMPARED, (18, 34)), image_size=64, batch_size=64, images=256),
                     Setting(accuracy_params.narrow_models("cpu"), image_size=32, batch_size=64, images=256),
                     Setting(family_models(TRANSFORMERS, (6,)), image_size=32, batch_size=64, images=256))),
    "gpu": Settings((Setting(family_models(COMPARED, COMPARED_DEPTHS), image_size=32, batch_size=512, images=16384),
                     Setting(family_models(COMPARED, (18, 34)), image_size=224, batch_size=256, images=4096),
                     Setting(accuracy_params.narrow_models("gpu"), image_size=32, batch_size=512, images=16384),
                     Setting(family_models(TRANSFORMERS, (6, 12, 24)), image_size=32, batch_size=512,
                             images=16384))),
    "paper": Settings((Setting(family_models(COMPARED, COMPARED_DEPTHS), image_size=32, batch_size=1024,
                               images=16384),
                       Setting(family_models(COMPARED, (18, 34)), image_size=224, batch_size=512, images=8192),
                       Setting(family_models(TRANSFORMERS, (6, 12, 24)), image_size=32, batch_size=512,
                               images=8192))),
}


def plan(preset: str) -> list[str]:
    return [f"throughput: {', '.join(v.label for v in group.models)} at {group.image_size} px, batch "
            f"{group.batch_size}, {group.epochs} epochs of {group.images} synthetic images (the last timed)"
            for group in PRESETS[preset].groups]


def measure(model: str, image_size: int, batch_size: int, images: int, epochs: int = 2, device: str = "auto",
            compile: bool = False, data: str = "synthetic", **model_kwargs) -> dict | None:
    """The last epoch's log row of a short training run of `model` (on synthetic images by default), or None when it
    ran out of memory. On CUDA: bf16 autocast and channels_last. The learning rate is small (0.001, after a warm-up
    over the untimed first epoch) because this measures speed, not learning: without warm-up, resnet34 diverged at
    0.1 and pnnh110 at 0.01. The test split is not scored: after four steps plain110's batch-norm statistics have
    not settled, and its eval pass overflowed to NaN."""
    on_cuda = resolve_device(device).type == "cuda"
    config = TrainConfig(model=model, data=data, epochs=epochs, batch_size=batch_size, lr=0.001, warmup=1,
                         subset=images, test_subset=batch_size, image_size=image_size, device=device, amp=on_cuda,
                         channels_last=on_cuda, compile=compile, model_kwargs=model_kwargs)
    try:
        with tempfile.TemporaryDirectory() as out:
            return train(config, out, test_each_epoch=False)[-1]  # speed only: no eval pass to overflow
    except OutOfMemory:
        if on_cuda:
            torch.cuda.empty_cache()
        return None


def compute(ctx: Context) -> pd.DataFrame:
    device = resolve_device(ctx.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for group in PRESETS[ctx.preset].groups:
        for variant in group.models:
            ctx.say(f"timing {variant.label} at {group.image_size} px, batch {group.batch_size}")
            row = measure(variant.model, group.image_size, group.batch_size, group.images, group.epochs, ctx.device,
                          **variant.options) or {}
            rows.append({"preset": ctx.preset, "dataset": "synthetic", "device": device_name, "model": variant.label,
                         "family": variant.family, "model_depth": variant.depth, "image_size": group.image_size,
                         "batch_size": group.batch_size, "images_per_s": row.get("images_per_s", np.nan),
                         "peak_mem_mb": row.get("peak_mem_mb", np.nan), "status": "ok" if row else "OOM"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def full_width(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of nets at their family's width (the figure's bars), not the narrower PNNH nets timed for the table."""
    return frame[frame["model"] == frame["family"] + frame["model_depth"].astype(str)]


def draw(frame: pd.DataFrame) -> Figure:
    frame = full_width(frame)
    groups = list(frame.groupby(["image_size", "model_depth"], sort=False))
    figure = Figure(figsize=(max(6.0, 1.3 * len(groups) + 2), 4.2), layout="constrained")
    axis = figure.subplots()
    top = np.nanmax(frame["images_per_s"].to_numpy()) if frame["images_per_s"].notna().any() else 1.0
    labelled: set[str] = set()
    for position, (_, rows) in enumerate(groups):
        families = list(dict.fromkeys(rows["family"]))  # the families timed at this depth and size
        width = 0.8 / len(families)
        for offset, family in enumerate(families):
            row = rows[rows["family"] == family]
            x = position - 0.4 + width * (offset + 0.5)
            label = None if family in labelled else FAMILY_LABELS[family]
            labelled.add(family)
            if row["status"].iloc[0] == "OOM":
                axis.bar(x, 0.06 * top, width, fill=False, hatch="//", edgecolor=FAMILY_COLOURS[family], gid=family,
                         label=label)
                axis.text(x, 0.07 * top, "OOM", ha="center", va="bottom", fontsize=7, rotation=90)
            else:
                axis.bar(x, row["images_per_s"].iloc[0], width, color=FAMILY_COLOURS[family], gid=family,
                         label=label)
    ticks = [f"depth {depth}{' (ViT)' if rows['family'].isin(TRANSFORMERS).all() else ''}\n{size} px"
             for (size, depth), rows in groups]
    axis.set_xticks(range(len(groups)), ticks)
    axis.set_xlabel("net depth (layers) and image size (px)")
    axis.set_ylabel("training throughput (images/s)")
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=8)
    batches = ", ".join(str(b) for b in dict.fromkeys(frame["batch_size"]))
    return finish_figure(figure, f"Training throughput on {frame['device'].iloc[0]}",
                         caption_line(frame, f"batch {batches}; hatched bar: out of memory"))


def headline(frame: pd.DataFrame) -> list[str]:
    lines = []
    for (size, depth), rows in full_width(frame).groupby(["image_size", "model_depth"], sort=False):
        speed = dict(zip(rows["family"], rows["images_per_s"], strict=True))
        base = "vit" if "vit" in speed else "resnet"  # the residual net of the same depth
        ratios = ", ".join(f"{family}/{base} {speed[family] / speed[base]:.2f}x" for family in speed
                           if family != base and base in speed)
        lines.append(f"depth {depth} at {size} px: " + ", ".join(f"{r.model} {r.images_per_s:.0f}/s"
                                                                  for r in rows.itertuples()) + f" ({ratios})")
    return lines
