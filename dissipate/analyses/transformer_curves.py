"""Dissipation in vision transformers: how much of the input each block keeps, plain vs residual vs PNNH ViTs.

Per block, at depths 6, 12 and 24: linear CKA of the block's output with the input, its effective rank per channel
(rank collapse: pure attention loses rank doubly exponentially with depth, Dong et al. 2021), and the surviving
fraction at the MLP's GELU. At initialisation on synthetic images, and trained (the depths the preset trains) on the
preset's data. Tokens are read as their patches (docs/design.md, section 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..plots import caption_line, draw_site_curves, family_depth_legend, finish_figure
from ._common import (TRANSFORMERS, Context, Variant, block_outputs, family_models, identical_families,
                      identical_note)

NAME = "transformer_curves"
DESCRIPTION = "plain vs residual vs PNNH ViTs per block: CKA with the input, erank / channels, surviving fraction"
COLUMNS = ("preset", "dataset", "state", "model", "family", "model_depth", "site", "layer", "block", "kind",
           "channels", "surviving", "erank_per_channel", "cka_input", "block_output")
PANELS = {"cka_input": ("block outputs", "linear CKA with the input (0 to 1)"),
          "erank_per_channel": ("block outputs", "effective rank / channels (fraction)"),
          "surviving": ("MLP activations", "surviving fraction (GELU input > 0)")}


@dataclass(frozen=True)
class Settings:
    init: tuple[Variant, ...]
    trained: tuple[Variant, ...]


PRESETS = {
    "smoke": Settings(family_models(TRANSFORMERS, (6,)), ()),
    # the deepest the cpu preset trains in about ten minutes on two cores (depth 12 would double it)
    "cpu": Settings(family_models(TRANSFORMERS, (6, 12, 24)), family_models(TRANSFORMERS, (6,))),
    "gpu": Settings(family_models(TRANSFORMERS, (6, 12, 24)), family_models(TRANSFORMERS, (6, 12, 24))),
    "paper": Settings(family_models(TRANSFORMERS, (6, 12, 24)), family_models(TRANSFORMERS, (6, 12, 24))),
}


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    settings = PRESETS[preset]
    return [(v, "init") for v in settings.init] + [(v, "trained") for v in settings.trained]


def compute(ctx: Context) -> pd.DataFrame:
    tables = [ctx.probe_table(variant, state) for variant, state in probes(ctx.preset)]
    frame = pd.concat(tables, ignore_index=True)  # concat drops the None of a run that diverged
    frame["erank_per_channel"] = frame["erank"] / frame["channels"]
    frame["block"] = frame["site"].str.extract(r"^blocks\.(\d+)\.", expand=False).astype(float) + 1
    frame["block_output"] = block_outputs(frame)
    return frame.reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    states = [s for s in ("init", "trained") if (frame["state"] == s).any()]
    figure = Figure(figsize=(4.3 * len(PANELS), 3.3 * len(states) + 0.8), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(states), len(PANELS), squeeze=False))
    panels = [frame[frame["state"] == state].assign(layer=lambda rows: rows["block"]) for state in states]
    same = identical_families(frame[frame["block_output"]], ("state", "model_depth", "block"), ("cka_input",))
    wide = tuple(twin for _, twin in same)  # drawn wide under the family whose line covers it
    styles = family_depth_legend(figure, panels, wide=wide)
    for row, (state, rows, style) in enumerate(zip(states, panels, styles, strict=True)):
        for column, (metric, (sites, label)) in enumerate(PANELS.items()):
            axis = axes[row, column]
            chosen = rows[rows["block_output"]] if sites == "block outputs" else rows[rows["surviving"].notna()]
            draw_site_curves(axis, chosen, metric, style, wide=wide)
            axis.set_title(f"{'at initialisation' if state == 'init' else 'trained'} on {rows['dataset'].iloc[0]}: "
                           f"{sites}", fontsize=9)
            axis.set_xlabel("block (from the input)")
            axis.set_ylabel(label)
            if metric == "surviving":  # 0.48 to 0.52 is the flat line it is, not a zig-zag
                axis.set_ylim(0, 1)
            axis.grid(alpha=0.3)
    detail = "tokens read as their patches; d = 192, 3 heads"
    note = identical_note(same, under="the wide line")
    return finish_figure(figure, "Vision transformers: how much of the input survives each block",
                         caption_line(frame, detail + (f"\n{note}" if note else "")))


def headline(frame: pd.DataFrame) -> list[str]:
    """The last block's erank / channels and CKA of each ViT, per state."""
    last = frame[frame["block_output"]].groupby(["state", "model"], sort=False).tail(1)
    return [f"{state}, last block erank/C / CKA: " + ", ".join(
        f"{r.model} {r.erank_per_channel:.3f}/{r.cka_input:.3f}" for r in rows.itertuples())
        for state, rows in last.groupby("state", sort=False)]
