"""Signal propagation plots (Brock, De and Smith 2021, "Characterizing signal propagation to close the performance
gap in unnormalized ResNets"): the statistics that researchers of normaliser-free nets read, block by block, at
initialisation.

At each block's output site (the last activation of each block), of its pre-activation, what the block sums before
its last non-linearity (a post-activation ResNet's residual stream: branch plus shortcut), over the batch and the
positions of each channel c:

- the average channel squared mean, mean_c (mean x_c)^2;
- the average channel variance, mean_c var x_c;
- and the residual branch's average channel variance, where the block declares its branch (ResNet, PNNH).

They are timm's `avg_sq_ch_mean`, `avg_ch_var` and `avg_ch_var_residual` (a test checks ours against those
definitions). The net is probed as the dissipation curves are: its BN statistics set from the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure

from ..data import load_data
from ..models import REMEDY_FAMILIES
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, caption_line, finish_figure
from ..probe import calibrate_batchnorm, probe_model
from ..record import record, record_components
from ._common import COMPARED, Context, Variant, family_models

NAME = "signal_propagation"
DESCRIPTION = ("signal propagation at initialisation, block by block: average channel squared mean and variance, "
               "and the residual branch's variance (Brock et al. 2021)")
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "site", "block", "avg_sq_ch_mean", "avg_ch_var",
           "avg_ch_var_residual")
STATISTICS = {"avg_sq_ch_mean": "average channel squared mean", "avg_ch_var": "average channel variance",
              "avg_ch_var_residual": "residual branch: average channel variance"}


@dataclass(frozen=True)
class Settings:
    models: tuple[Variant, ...]


PRESETS = {
    "smoke": Settings(family_models((*COMPARED, *REMEDY_FAMILIES), (20,))),
    "cpu": Settings(family_models((*COMPARED, *REMEDY_FAMILIES), (56,))),
}
PRESETS["gpu"] = PRESETS["paper"] = Settings(family_models((*COMPARED, *REMEDY_FAMILIES), (110,)))


def channel_statistics(x: torch.Tensor) -> tuple[float, float]:
    """(average channel squared mean, average channel variance) of x, (N, C, ...): each channel's mean and variance
    (unbiased, as timm's) over the batch and the positions, averaged over the channels."""
    x = x.detach().double().transpose(0, 1).flatten(1)  # (C, N * positions)
    return float(x.mean(1).square().mean()), float(x.var(1).mean())


def measure(net: torch.nn.Module, images: torch.Tensor) -> pd.DataFrame:
    """One row per block output site of `net` (in eval mode) on `images`: the three statistics (the residual's NaN
    where the block declares no branch)."""
    rows: dict[str, dict] = {}
    branches: dict[str, float] = {}

    def on_site(site, pre: torch.Tensor, post: torch.Tensor) -> None:
        if site.activation:
            mean, var = channel_statistics(pre)
            rows[site.name] = {"site": site.name, "avg_sq_ch_mean": mean, "avg_ch_var": var}

    def on_component(component, value: torch.Tensor) -> None:
        if component.role == "branch":
            branches[component.site] = channel_statistics(value)[1]

    with torch.no_grad(), record(net, on_site), record_components(net, on_component):
        net(images)
    frame = pd.DataFrame(list(rows.values()))
    parents = frame["site"].str.rpartition(".")[0]
    frame = frame[~parents.duplicated(keep="last")].reset_index(drop=True)  # each block's last site: its output
    frame["avg_ch_var_residual"] = frame["site"].map(branches).astype(float)
    frame.insert(1, "block", range(len(frame)))
    return frame


def compute(ctx: Context) -> pd.DataFrame:
    r = ctx.recipe
    data = load_data(r.init_data, image_size=r.init_image_size, length=r.probe_images, root=ctx.data_dir)
    images = data.normalize(torch.stack([data.dataset[i][0] for i in range(len(data.dataset))]))
    frames = []
    for variant in PRESETS[ctx.preset].models:
        net = probe_model(variant.model, data, seed=variant.seed, **variant.options)
        calibrate_batchnorm(net, images.split(64))
        frames.append(measure(net, images).assign(preset=ctx.preset, dataset=data.name, model=variant.label,
                                                  family=variant.family, model_depth=variant.depth))
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(15, 4.4), layout="constrained")
    axes = figure.subplots(1, len(STATISTICS))
    for axis, (column, label) in zip(axes, STATISTICS.items(), strict=True):
        for model, rows in frame.groupby("model", sort=False):
            rows = rows.dropna(subset=[column])
            if len(rows):
                family = rows["family"].iloc[0]
                axis.plot(rows["block"], rows[column], color=FAMILY_COLOURS[family], gid=family,
                          label=FAMILY_LABELS[family], marker="o", markersize=2.5,
                          linewidth=3 if family == "resnet" else 1.2)
        values = frame[column].dropna()
        if len(values) and values.min() > 0 and values.max() / values.min() > 10:  # a log axis only where it spans
            axis.set_yscale("log")
        axis.set_xlabel("block (0 = the stem; each block's output site)")
        axis.set_ylabel(f"{label} (squared units{', log' if axis.get_yscale() == 'log' else ''})")
        axis.set_title(label, fontsize=10)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, ncol=2)
    depths = ", ".join(str(d) for d in sorted(frame["model_depth"].unique()))
    return finish_figure(figure, f"Signal propagation at initialisation, depth {depths}",
                         caption_line(frame, "pre-activation of each block's output site; ResNet: the wide line "
                                             "(PNNH at its defaults is its function); the residual panel has only "
                                             "the nets whose blocks declare a branch"))


def headline(frame: pd.DataFrame) -> list[str]:
    last = frame.groupby("model", sort=False).tail(1)
    return ["last block, average channel squared mean / variance: " + ", ".join(
        f"{r.model} {r.avg_sq_ch_mean:.3g}/{r.avg_ch_var:.3g}" for r in last.itertuples())]
