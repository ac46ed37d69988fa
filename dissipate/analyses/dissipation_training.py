"""Dissipation through training: how much of the input the mid-depth and the last block keep, epoch by epoch.

Every training run of a preset probes the same test images at initialisation (epoch 0) and after each epoch
(`dissipate train --probe-every`); this draws linear CKA with the input, effective rank per channel and the surviving
fraction of two block outputs, the one at mid-depth and the last, against the epoch, for plain, residual and PNNH
nets at each depth. A plain net's input has dissipated at initialisation; the question is what training does to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ..plots import FAMILY_COLOURS, FAMILY_LABELS, UNDER_WIDTH, caption_line, finish_figure
from ._common import (COMPARED, COMPARED_DEPTHS, RECIPES, Context, Variant, block_outputs, family_models,
                      identical_families, identical_note)

NAME = "dissipation_training"
DESCRIPTION = "input kept at mid-depth and at the last block, epoch by epoch, plain vs residual vs PNNH"
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "epoch", "position", "site", "layer", "kind",
           "channels", "surviving", "erank_per_channel", "cka_input")
METRICS = {"cka_input": "linear CKA with the input (0 to 1)", "erank_per_channel": "effective rank / channels "
           "(fraction)", "surviving": "surviving fraction (of pre-activations)"}
POSITIONS = {"mid-depth": "--", "last": "-"}  # block outputs drawn, and their line styles


@dataclass(frozen=True)
class Settings:
    models: tuple[Variant, ...]


PRESETS = {  # the training curves' runs: each probes as it trains
    "smoke": Settings(family_models(COMPARED, (20, 32))),
    "cpu": Settings(family_models(COMPARED, COMPARED_DEPTHS)),
    "paper": Settings(family_models(COMPARED, COMPARED_DEPTHS)),
}
PRESETS["gpu"] = PRESETS["cpu"]  # the cpu preset's nets, trained on all of Fashion-MNIST


def runs(preset: str, seeds: int = 1) -> list[tuple[Variant, None]]:
    return [(variant, None) for variant in PRESETS[preset].models]


def plan(preset: str) -> list[str]:
    recipe = RECIPES[preset]
    return [f"dissipation through training: each run probes {recipe.train_probe_images} test images at epoch 0 and "
            f"every {recipe.probe_every} epochs ({recipe.train_probe_metrics})"]


def compute(ctx: Context) -> pd.DataFrame:
    frames = []
    for variant in PRESETS[ctx.preset].models:
        probes = ctx.trained(variant).probes
        if not len(probes):
            continue
        per_epoch = probes[block_outputs(probes, by=("epoch",))].groupby("epoch")
        chosen = pd.concat([per_epoch.nth(per_epoch.size().iloc[0] // 2).assign(position="mid-depth"),
                            per_epoch.nth(-1).assign(position="last")])
        frames.append(chosen.assign(preset=ctx.preset, dataset=ctx.recipe.data, model=variant.label,
                                    family=variant.family, model_depth=variant.depth, layer=chosen["depth"],
                                    erank_per_channel=chosen["erank"] / chosen["channels"]))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    return frame.reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    depths = sorted(frame["model_depth"].unique())
    figure = Figure(figsize=(4.0 * len(METRICS), 2.9 * len(depths) + 0.6), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(depths), len(METRICS), squeeze=False, sharex=True))
    same = identical_families(frame, ("model_depth", "epoch", "position"), tuple(METRICS))
    wide = {twin for _, twin in same}  # drawn wide under the family whose line covers it
    for row, depth in enumerate(depths):
        for column, (metric, label) in enumerate(METRICS.items()):
            axis = axes[row, column]
            for (model, position), rows in frame[frame["model_depth"] == depth].groupby(["model", "position"],
                                                                                         sort=False):
                family = rows["family"].iloc[0]
                under = family in wide
                axis.plot(rows["epoch"], rows[metric], color=FAMILY_COLOURS[family], gid=family, marker="o",
                          markersize=6 if under else 3, linestyle=POSITIONS[position],
                          linewidth=UNDER_WIDTH if under else 1.5, zorder=1.9 if under else 2)
            axis.set_ylim(min(0.0, axis.get_ylim()[0]), max(1.0, axis.get_ylim()[1]))
            axis.set_title(f"depth {depth}", fontsize=9)
            axis.set_ylabel(label, fontsize=8)
            axis.set_xlabel("epoch (0: at initialisation)")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
    present = [family for family in FAMILY_COLOURS if family in set(frame["family"])]
    handles = [Line2D([], [], color=FAMILY_COLOURS[f], label=FAMILY_LABELS[f],
                      linewidth=UNDER_WIDTH if f in wide else 1.5) for f in present]
    handles += [Line2D([], [], color="0.35", linestyle=style, label=f"{position} block output")
                for position, style in POSITIONS.items()]
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    note = identical_note(same, under="the wide line")
    return finish_figure(figure, "Dissipation through training: the input kept, epoch by epoch",
                         caption_line(frame, "the same test images probed after every epoch" + (f"\n{note}" if note
                                                                                                 else "")))


def headline(frame: pd.DataFrame) -> list[str]:
    """The last block output's CKA at epoch 0 and at the end, per model."""
    last = frame[frame["position"] == "last"]
    lines = []
    for depth, rows in last.groupby("model_depth"):
        ends = rows.groupby("model", sort=False)["cka_input"].agg(["first", "last"])
        lines.append(f"depth {depth}, last block CKA epoch 0 -> end: " + ", ".join(
            f"{model} {r['first']:.3f} -> {r['last']:.3f}" for model, r in ends.iterrows()))
    return lines
