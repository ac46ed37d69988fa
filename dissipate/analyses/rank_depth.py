"""Figure 3, rank against depth: the effective rank of each block output's features (over channels), block by block,
and at the last site against the depth of the net. A net that loses its input also loses the directions it spanned.
The table keeps every site; `block_output` marks the ones drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..plots import (FAMILY_COLOURS, FAMILY_LABELS, UNDER_WIDTH, caption_line, draw_site_curves, family_depth_legend,
                     finish_figure, plain_log_axis)
from ..models.resnet import CIFAR_DEPTHS
from ._common import (COMPARED, COMPARED_DEPTHS, Context, Variant, block_outputs, family_models, identical_families,
                      identical_note)

NAME = "rank_depth"
DESCRIPTION = "effective rank of each block's output, block by block, and at the last site against the net's depth"
COLUMNS = ("preset", "dataset", "state", "model", "family", "model_depth", "site", "layer", "kind", "channels",
           "erank", "nrank", "srank", "erank_per_channel", "block_output")


@dataclass(frozen=True)
class Settings:
    init: tuple[Variant, ...]
    trained: tuple[Variant, ...]


PRESETS = {
    "smoke": Settings(family_models(COMPARED, (20, 32)), family_models(COMPARED, (20, 32))),
    "cpu": Settings(family_models(COMPARED, (*COMPARED_DEPTHS, 18, 34)), family_models(COMPARED, COMPARED_DEPTHS)),
    "paper": Settings(family_models(COMPARED, (20, 32, 44, 56, 110, 18, 34)),
                      family_models(COMPARED, COMPARED_DEPTHS)),
}
PRESETS["gpu"] = PRESETS["cpu"]  # the cpu preset's nets, trained on all of Fashion-MNIST


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    settings = PRESETS[preset]
    return [(v, "init") for v in settings.init] + [(v, "trained") for v in settings.trained]


def compute(ctx: Context) -> pd.DataFrame:
    tables = [ctx.probe_table(variant, state) for variant, state in probes(ctx.preset)]
    frame = pd.concat(tables, ignore_index=True)  # concat drops the None of a run that diverged
    frame["erank_per_channel"] = frame["erank"] / frame["channels"]
    frame["block_output"] = block_outputs(frame)
    return frame.reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    states = [s for s in ("init", "trained") if (frame["state"] == s).any()]
    figure = Figure(figsize=(4.6 * (len(states) + 1), 4.3), layout="constrained")
    axes = figure.subplots(1, len(states) + 1, squeeze=False)[0]
    outputs = frame[frame["block_output"] & frame["model_depth"].isin(CIFAR_DEPTHS)]  # the CIFAR set: one x scale
    outputs = outputs.assign(layer=outputs.groupby(["state", "model"]).cumcount() + 1)
    same = identical_families(outputs, ("state", "model_depth", "layer"), ("erank_per_channel",))
    wide = tuple(twin for _, twin in same)  # drawn wide under the family that covers it
    panels = [outputs[outputs["state"] == s] for s in states]
    styles = family_depth_legend(figure, panels, wide=wide)
    for axis, state, rows, style in zip(axes, states, panels, styles, strict=False):
        draw_site_curves(axis, rows, "erank_per_channel", style, wide=wide)
        axis.set_title(f"{'at initialisation' if state == 'init' else 'trained'} on {rows['dataset'].iloc[0]}",
                       fontsize=9)
        axis.set_xlabel("block output (blocks from the input; the stem is 1)")
        axis.set_ylabel("effective rank / channels (fraction)")
        axis.grid(alpha=0.3)
    last = frame.groupby(["state", "model"], sort=False).tail(1)
    summary = axes[-1]
    cifar = last["model_depth"].isin(CIFAR_DEPTHS)
    for (state, family, in_cifar), rows in last.groupby(["state", "family", cifar], sort=False):
        rows = rows.sort_values("model_depth")  # lines join the CIFAR family; the ImageNet family's 18/34 stand apart
        under = family in wide
        summary.plot(rows["model_depth"], rows["erank_per_channel"], marker="o" if state == "init" else "s",
                     linestyle=("-" if state == "init" else "--") if in_cifar else "", color=FAMILY_COLOURS[family],
                     gid=family, fillstyle="full" if in_cifar and not under else "none",
                     markersize=10 if under else 6, linewidth=UNDER_WIDTH if under else 1.5, zorder=1.9 if under else 2,
                     label=f"{FAMILY_LABELS[family]}, {state}" + ("" if in_cifar else " (18/34)"))
    _depth_ticks(summary, sorted(last["model_depth"].unique()))
    summary.set_ylabel("last site: effective rank / channels (fraction)")
    summary.set_title("last site against depth", fontsize=9)
    summary.grid(alpha=0.3)
    grey = dict(color="0.35", markersize=5)
    keys = [Line2D([], [], marker="o", linestyle="-", label="at initialisation", **grey),
            Line2D([], [], marker="s", linestyle="--", label="trained", **grey)]
    if (~cifar).any():
        keys.append(Line2D([], [], marker="o", linestyle="", fillstyle="none", label="18/34 (ImageNet-style)", **grey))
    if wide:
        keys.append(Line2D([], [], marker="o", linestyle="-", linewidth=UNDER_WIDTH, markersize=9, fillstyle="none",
                           color="0.35", label=f"wide, ringed: {', '.join(FAMILY_LABELS[f] for f in wide)}"))
    summary.legend(handles=keys, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    detail = "effective rank: exp of the entropy of the singular values"
    note = identical_note(same, under="the wide line, ringed")
    return finish_figure(figure, "Effective rank against depth", caption_line(frame, detail + (f"\n{note}" if note
                                                                                              else "")))


def _depth_ticks(axis, depths: list[int]) -> None:
    """The depth axis (log): the CIFAR family's depths on the first row of labels, the others (the ImageNet family's
    18 and 34) on a second row under them, so that 18 and 20 do not run together."""
    cifar = [d for d in depths if d in CIFAR_DEPTHS]
    others = [d for d in depths if d not in CIFAR_DEPTHS]
    plain_log_axis(axis, "x", cifar or others)
    if cifar and others:
        axis.xaxis.set_ticks(others, [str(d) for d in others], minor=True)
        axis.tick_params(axis="x", which="minor", pad=16, length=3)
    axis.set_xlabel("depth of the net (layers, log" + ("; lower row: ImageNet-style)" if cifar and others else ")"))


def headline(frame: pd.DataFrame) -> list[str]:
    last = frame.groupby(["state", "model"], sort=False).tail(1)
    return [f"{state}, last site erank/C: " + ", ".join(f"{r.model} {r.erank_per_channel:.3f}"
                                                         for r in rows.itertuples())
            for state, rows in last.groupby("state", sort=False)]
