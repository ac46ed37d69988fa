"""Figure 4, training curves: train loss and test accuracy against epoch, plain vs residual vs PNNH at each depth.
He et al.'s degradation, where it happens, shows here: a deeper plain net ending with a higher training loss than a
shallower one, where residual (and PNNH) nets do not. The figure's titles name what is plotted; the headline gives
the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..plots import FAMILY_COLOURS, UNDER_WIDTH, caption_line, finish_figure
from ..train import LOG_COLUMNS
from ._common import (COMPARED, COMPARED_DEPTHS, TRANSFORMERS, Context, Variant, chance_accuracy, family_models,
                      identical_families, identical_note, mark_chance)

NAME = "training_curves"
DESCRIPTION = "train loss and test accuracy per epoch, plain vs residual vs PNNH at each depth"
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", *LOG_COLUMNS, "status")


@dataclass(frozen=True)
class Settings:
    models: tuple[Variant, ...]


PRESETS = {
    "smoke": Settings(family_models(COMPARED, (20, 32))),
    # the ViTs at the depth the cpu preset trains in about ten minutes on two cores
    "cpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *family_models(TRANSFORMERS, (6,)))),
    "gpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *family_models(TRANSFORMERS, (6, 12, 24)))),
    "paper": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *family_models(TRANSFORMERS, (6, 12, 24)))),
}


def runs(preset: str, seeds: int = 1) -> list[tuple[Variant, None]]:
    return [(variant, None) for variant in PRESETS[preset].models]


def compute(ctx: Context) -> pd.DataFrame:
    frames = []
    for variant in PRESETS[ctx.preset].models:
        run = ctx.trained(variant)
        log = run.log.assign(status="ok")
        if run.diverged:  # its last row: the epoch whose loss was not finite
            log = pd.concat([log, pd.DataFrame([{"epoch": run.diverged, "status": "diverged"}])], ignore_index=True)
        frames.append(log.assign(preset=ctx.preset, dataset=ctx.recipe.data, model=variant.label,
                                 family=variant.family, model_depth=variant.depth))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    depths = sorted(frame["model_depth"].unique())
    figure = Figure(figsize=(4.2 * len(depths), 6.4), layout="constrained")
    axes = figure.subplots(2, len(depths), squeeze=False, sharey="row")
    same = identical_families(frame, ("model_depth", "epoch"), ("train_loss", "test_acc"))
    wide = {twin for _, twin in same}  # drawn wide under the family whose line covers it
    for column, depth in enumerate(depths):
        loss, accuracy = axes[0, column], axes[1, column]
        for model, rows in frame[frame["model_depth"] == depth].groupby("model", sort=False):
            family = rows["family"].iloc[0]
            under = family in wide
            style = dict(color=FAMILY_COLOURS[family], gid=family, marker="o", markersize=6 if under else 3,
                         linewidth=UNDER_WIDTH if under else 1.5, zorder=1.9 if under else 2, label=model)
            loss.plot(rows["epoch"], rows["train_loss"], **style)
            accuracy.plot(rows["epoch"], 100 * rows["test_acc"], **style)
            for epoch in rows.loc[rows["status"] == "diverged", "epoch"]:  # marked at the top of the panel
                loss.plot([epoch], [0.96], transform=loss.get_xaxis_transform(), marker="X", markersize=9,
                          linestyle="", color=FAMILY_COLOURS[family], gid=family, label=f"{model} diverged")
        vit = frame.loc[frame["model_depth"] == depth, "family"].isin(TRANSFORMERS).all()
        loss.set_title(f"depth {depth}" + (" (ViT blocks)" if vit else ""), fontsize=10)
        loss.set_ylabel("train loss (cross-entropy, nats)" if column == 0 else "")
        accuracy.set_ylabel("test accuracy (%)" if column == 0 else "")
        for axis in (loss, accuracy):
            axis.set_xlabel("epoch (passes over the training set)")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
        loss.legend(fontsize=7)
    chance = [mark_chance(accuracy, chance_accuracy(frame)) for accuracy in axes[1]]
    if chance[0] is not None:
        axes[1, 0].legend(handles=chance[:1], fontsize=7, loc="upper left")
    epochs = int(frame["epoch"].max())
    detail = f"{epochs} epochs; train loss is the mean over each epoch's batches"
    note = identical_note(same, under="the wide line")
    return finish_figure(figure, "Training curves: loss and test accuracy per epoch",
                         caption_line(frame, detail + (f"\n{note}" if note else "")))


def headline(frame: pd.DataFrame) -> list[str]:
    last = frame.groupby("model", sort=False).tail(1)
    return [f"depth {depth}, final train loss / test accuracy: " + ", ".join(
        f"{r.model} diverged in epoch {r.epoch}" if r.status == "diverged" else
        f"{r.model} {r.train_loss:.3f}/{100 * r.test_acc:.1f}%" for r in rows.itertuples())
        for depth, rows in last.groupby("model_depth")]
