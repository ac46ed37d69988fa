"""Figure 1, dissipation curves: how much of the input each activation site still holds, against depth.

Linear CKA with the input, the linear read-out's R^2 (and DISTS where its weights are available), for plain,
residual, PNNH and VGG nets at initialisation (on synthetic images) and trained (on the preset's data). The theory
predicts that plain nets lose the input layer by layer while residual and PNNH nets keep it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..plots import caption_line, draw_site_curves, family_depth_legend, finish_figure
from ..models.resnet import CIFAR_DEPTHS
from ._common import (COMPARED, COMPARED_DEPTHS, Context, Variant, family_models, identical_families, identical_note,
                      variants)

NAME = "dissipation_curves"
DESCRIPTION = "input kept at each layer (CKA, read-out R^2, DISTS), plain vs residual vs PNNH vs VGG"
COLUMNS = ("preset", "dataset", "state", "model", "family", "model_depth", "site", "layer", "kind", "channels",
           "surviving", "cka_input", "recon_r2", "dists_input", "dists_noise")
METRICS = {"cka_input": "linear CKA with the input (0 to 1)", "recon_r2": "read-out R$^2$ of the input (1 = all)",
           "dists_input": "DISTS, input vs read-out (0 = same)"}


@dataclass(frozen=True)
class Settings:
    init: tuple[Variant, ...]  # probed at initialisation
    trained: tuple[Variant, ...]  # trained by the preset's recipe, then probed


PRESETS = {
    "smoke": Settings(init=(*family_models(COMPARED, (20, 32)), *variants("vgg11")),
                      trained=family_models(COMPARED, (20, 32))),
    "cpu": Settings(init=(*family_models(COMPARED, COMPARED_DEPTHS), *variants("vgg11", "vgg16"),
                          *family_models(COMPARED, (18, 34))),
                    trained=family_models(COMPARED, COMPARED_DEPTHS)),
    "paper": Settings(init=(*family_models(COMPARED, COMPARED_DEPTHS), *variants("vgg11", "vgg16", "vgg19"),
                            *family_models(COMPARED, (18, 34))),
                      trained=(*family_models(COMPARED, COMPARED_DEPTHS), *variants("vgg16"))),
}
PRESETS["gpu"] = PRESETS["cpu"]  # the cpu preset's nets, trained on all of Fashion-MNIST


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    settings = PRESETS[preset]
    return [(v, "init") for v in settings.init] + [(v, "trained") for v in settings.trained]


def compute(ctx: Context) -> pd.DataFrame:
    frames = [ctx.probe_table(variant, state) for variant, state in probes(ctx.preset)]
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))  # concat drops a diverged run's None


def _panel_groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per panel column: at initialisation the CIFAR family with VGG, then the ImageNet family; then
    the trained nets."""
    cifar = frame["model_depth"].isin(CIFAR_DEPTHS) | (frame["family"] == "vgg")
    groups = []
    for state, title in (("init", "at initialisation"), ("trained", "trained")):
        in_state = frame["state"] == state
        if not in_state.any():
            continue
        data = frame.loc[in_state, "dataset"].iloc[0]
        for chosen, which in ((cifar, "CIFAR family"), (~cifar, "ImageNet family (18/34)")):
            rows = frame[in_state & chosen]
            if len(rows):
                which += " and VGG" if (rows["family"] == "vgg").any() else ""
                groups.append((f"{title} on {data}:\n{which}", rows))
    return groups


def draw(frame: pd.DataFrame) -> Figure:
    metrics = [m for m in METRICS if m in frame and frame[m].notna().any()]
    groups = _panel_groups(frame)
    figure = Figure(figsize=(4.4 * len(groups), 3.0 * len(metrics) + 1.0), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(metrics), len(groups), squeeze=False, sharey="row"))
    noise = Line2D([], [], color="crimson", linestyle="--", linewidth=1, label="noise level")
    same = identical_families(frame, ("state", "model_depth", "layer"), tuple(metrics))
    wide = tuple(twin for _, twin in same)  # drawn wide under the family that covers it
    styles = family_depth_legend(figure, [rows for _, rows in groups], extra=(noise,), wide=wide)
    for column, ((title, rows), style) in enumerate(zip(groups, styles, strict=True)):
        for row, metric in enumerate(metrics):
            axis = axes[row, column]
            draw_site_curves(axis, rows, metric, style, wide=wide)
            level = rows["dists_noise"].dropna() if metric == "dists_input" else pd.Series([0.0])  # independent: 0
            if len(level):
                axis.axhline(level.iloc[0], color="crimson", linestyle="--", linewidth=1)
            axis.set_xlabel("activation site (layers from the input)")
            if column == 0:
                axis.set_ylabel(METRICS[metric])
            axis.grid(alpha=0.3)
        axes[0, column].set_title(title, fontsize=9)
    detail = f"{frame['model'].nunique()} models; noise level: what features independent of the input score"
    note = identical_note(same, under="the wide line")
    detail += f"\n{note}" if note else ""
    return finish_figure(figure, "Dissipation: how much of the input survives each layer",
                         caption_line(frame, detail))


def headline(frame: pd.DataFrame) -> list[str]:
    """The last site's CKA and read-out R^2 of each CIFAR-family model, per state."""
    lines = []
    last = frame.groupby(["state", "model"], sort=False).tail(1)
    last = last[last["model_depth"].isin(CIFAR_DEPTHS)]
    for (state, family), rows in last.groupby(["state", "family"], sort=False):
        values = ", ".join(f"{r.model} {r.cka_input:.3f}/{r.recon_r2:.3f}" for r in rows.itertuples())
        lines.append(f"{state}, {family}, last site CKA / read-out R^2: {values}")
    return lines
