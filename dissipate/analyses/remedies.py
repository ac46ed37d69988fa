"""The shortcut-free remedies side by side (docs/design.md, "Shortcut-free remedies"): TAT, ISONet, looks-linear,
DiracNet and RepVGG, each built on the plain net's convs and widths, beside plain, ResNet and PNNH. Which keep the
input, which train, and at what cost?

Left and middle: the input kept at the last site at initialisation (linear CKA with the input; the read-out's R^2)
against the final test accuracy once trained, one point per family and depth. Right: the dissipation curve of each
family at the deepest depth, at initialisation: CKA at each block's output against its relative depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..data import load_data
from ..models import REMEDY_FAMILIES, count_flops, count_parameters, create_model
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, caption_line, finish_figure
from ._common import (COMPARED, COMPARED_DEPTHS, RATE_SCALE, Context, Variant, block_outputs, chance_accuracy,
                      family_models, mark_chance)

NAME = "remedies"
DESCRIPTION = ("the shortcut-free remedies (TAT, ISONet, looks-linear, DiracNet, RepVGG) beside plain, ResNet and "
               "PNNH: input kept at initialisation against trained accuracy, and per block at the deepest depth")
FAMILIES = (*COMPARED, *REMEDY_FAMILIES)
COLUMNS = ("preset", "dataset", "state", "model", "family", "model_depth", "site", "layer", "kind", "surviving",
           "cka_input", "recon_r2", "params", "flops", "test_acc", "train_loss", "status", "train_minutes")
RUN_COLUMNS = ("params", "flops", "test_acc", "train_loss", "status", "train_minutes")  # per net, on each of its rows


@dataclass(frozen=True)
class Settings:
    init: tuple[Variant, ...]  # probed at initialisation
    trained: tuple[Variant, ...]  # trained by the preset's recipe (each family its own optimiser), then probed


PRESETS = {
    "smoke": Settings(family_models(FAMILIES, (20,)), family_models(FAMILIES, (20,))),
    # trained at depths 20 and 56 only: the remedies' runs at depth 110 would add about half an hour on two cores
    "cpu": Settings(family_models(FAMILIES, COMPARED_DEPTHS), family_models(FAMILIES, (20, 56))),
    "gpu": Settings(family_models(FAMILIES, COMPARED_DEPTHS), family_models(FAMILIES, COMPARED_DEPTHS)),
    "paper": Settings(family_models(FAMILIES, COMPARED_DEPTHS), family_models(FAMILIES, COMPARED_DEPTHS)),
}


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    settings = PRESETS[preset]
    return [(v, "init") for v in settings.init] + [(v, "trained") for v in settings.trained]


def compute(ctx: Context) -> pd.DataFrame:
    settings = PRESETS[ctx.preset]
    shape = load_data(ctx.recipe.data, image_size=ctx.recipe.image_size, length=1, root=ctx.data_dir)
    trained = {v.label for v in settings.trained}
    runs = {}
    for variant in {v.label: v for v in (*settings.init, *settings.trained)}.values():
        with torch.device("meta"):  # the net's shape, without allocating its weights
            net = create_model(variant.model, num_classes=shape.num_classes, in_chans=shape.in_chans,
                               image_size=shape.image_size, **variant.options)
        facts = {"params": count_parameters(net), "flops": count_flops(net, shape.image_size, shape.in_chans)}
        if variant.label in trained:
            run = ctx.trained(variant)
            final = run.log.iloc[-1] if run.diverged is None else {}
            facts.update(test_acc=final.get("test_acc"), train_loss=final.get("train_loss"),
                         status="ok" if run.diverged is None else f"diverged in epoch {run.diverged}",
                         train_minutes=run.log["epoch_s"].sum() / 60)
        runs[variant.label] = facts
    frames = []
    for variant, state in probes(ctx.preset):
        table = ctx.probe_table(variant, state)
        if table is not None:  # a run that diverged has no trained net to probe
            frames.append(table.assign(**runs[variant.label]))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))


def last_sites(frame: pd.DataFrame, state: str = "init") -> pd.DataFrame:
    """Each net's last site in the probes of `state`: how much of the input reaches its head."""
    rows = frame[frame["state"] == state]
    return rows.loc[rows.groupby("model", sort=False)["layer"].idxmax()]


def draw(frame: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(16.5, 4.6), layout="constrained")
    cka, recon, curves = figure.subplots(1, 3)
    init = last_sites(frame, "init").set_index("model")
    trained = frame.drop_duplicates("model").set_index("model")["test_acc"].dropna()
    for axis, metric, label in ((cka, "cka_input", "linear CKA with the input at the last site, at init (0 to 1)"),
                                (recon, "recon_r2", "read-out R$^2$ of the input at the last site, at init (1 = all)")):
        for side, (family, rows) in enumerate(init[init.index.isin(trained.index)].groupby("family", sort=False)):
            rows = rows.sort_values("model_depth")
            axis.plot(rows[metric], 100 * trained[rows.index], color=FAMILY_COLOURS[family], gid=family,
                      label=FAMILY_LABELS[family], linewidth=0.8, alpha=0.9, **_ringed(family))
            for index, (model, r) in enumerate(rows.iterrows()):  # the deeper net's label above its point, and
                # every other family's on the left, so that neighbouring points' labels do not overprint
                axis.annotate(str(r.model_depth), (r[metric], 100 * trained[model]), fontsize=7,
                              textcoords="offset points", color=FAMILY_COLOURS[family],
                              xytext=(4 if side % 2 == 0 else -13, -9 if index % 2 == 0 else 4))
        axis.margins(x=0.08)
        mark_chance(axis, chance_accuracy(frame[frame["state"] == "trained"]))
        axis.set_xlabel(label)
        axis.set_ylabel("final test accuracy, trained (%)")
        axis.grid(alpha=0.3)
    handles, _ = cka.get_legend_handles_labels()  # beside the figure, where it covers no point
    figure.legend(handles=[*handles, Line2D([], [], linestyle="", label="numbers: depth")], fontsize=8,
                  loc="outside right upper")
    _draw_curves(curves, frame)
    not_trained = sorted(set(init.index) - set(trained.index), key=lambda m: (init.loc[m, "model_depth"], m))
    failed = frame.loc[frame["status"].fillna("ok") != "ok"].drop_duplicates("model")
    notes = [f"{r.model} {r.status}" for r in failed.itertuples()]
    depths = sorted({int(init.loc[m, "model_depth"]) for m in not_trained})
    if depths:
        notes.append(f"depth {', '.join(map(str, depths))}: probed at init only (right panel), not trained here")
    detail = ("one seed each; TAT and ISONet train with AdamW, the others with the preset's SGD, each family at its "
              "swept rate (" + ", ".join(f"{f} x{k:g}" for f, k in RATE_SCALE.items()) + ")")
    if notes:  # under the figure: in a panel, a note ran into the points and the chance line wherever it was put
        detail += "\nleft and middle: " + "; ".join(notes)
    return finish_figure(figure, "Shortcut-free remedies: the input kept at initialisation, and what trains",
                         caption_line(frame, detail))


def _ringed(family: str) -> dict:
    """ResNet as a ring around its point: PNNH at its defaults is ResNet's function, and would hide it."""
    return dict(marker="o", markersize=9, markerfacecolor="none") if family == "resnet" else dict(marker="o")


def _draw_curves(axis, frame: pd.DataFrame) -> None:
    """CKA with the input at each block's output, at initialisation, for every family at the deepest depth."""
    init = frame[frame["state"] == "init"]
    deepest = init["model_depth"].max()
    rows = init[init["model_depth"] == deepest]
    rows = rows[block_outputs(rows)]
    for family, group in rows.groupby("family", sort=False):
        group = group.sort_values("layer")
        axis.plot(group["layer"] / group["layer"].max(), group["cka_input"], color=FAMILY_COLOURS[family],
                  gid=family, label=FAMILY_LABELS[family], linewidth=3 if family == "resnet" else 1.2)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel(f"block output's position (fraction of the {deepest} layers)")
    axis.set_ylabel("linear CKA with the input, at init (0 to 1)")
    axis.set_title(f"depth {deepest} at initialisation, block by block\n(ResNet: the wide line)", fontsize=10)
    axis.grid(alpha=0.3)


def headline(frame: pd.DataFrame) -> list[str]:
    init = last_sites(frame, "init")
    lines = []
    for depth, rows in init.groupby("model_depth"):
        parts = []
        for r in rows.itertuples():
            trained = frame.loc[(frame["model"] == r.model), ["test_acc", "status"]].iloc[0]
            outcome = ("" if pd.isna(trained.status) else f", {trained.status}" if trained.status != "ok"
                       else f", {100 * trained.test_acc:.1f}%")
            parts.append(f"{r.model} {r.cka_input:.2f}{outcome}")
        lines.append(f"depth {depth}, last-site CKA at init (and trained accuracy): " + ", ".join(parts))
    return lines
