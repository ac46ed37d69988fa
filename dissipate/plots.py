"""Figures from result frames. Each function takes a DataFrame and a path, and writes a PNG atomically.

Figures are drawn on `matplotlib.figure.Figure` directly (no pyplot state, no display backend), so that plotting
works in scripts, tests and headless machines alike.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._io import atomic_write

KIND_COLOURS = {"plain": "#7f7f7f", "residual": "#1f77b4", "pnnh": "#ff7f0e", "unknown": "#2ca02c"}


def _probe_panels(frame: pd.DataFrame) -> list[tuple[str, pd.Series, str | None]]:
    """(title, values, reference column) for each panel the frame has data for."""
    panels = []
    if "surviving" in frame:
        panels.append(("surviving fraction", frame["surviving"], None))
    if "erank" in frame:
        panels.append(("effective rank / channels", frame["erank"] / frame["channels"], None))
    for column, title in (("cka_input", "linear CKA with the input"), ("recon_r2", "linear read-out R$^2$"),
                          ("dists_input", "DISTS(input, read-out)")):
        if column in frame and frame[column].notna().any():
            panels.append((title, frame[column], "dists_noise" if column == "dists_input" else None))
    return panels


def plot_probe(frame: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> None:
    """The probe's main columns against depth, one panel each, each site coloured by its kind."""
    panels = _probe_panels(frame)
    if not panels:
        return
    columns = 2 if len(panels) in (2, 4) else min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    depth = frame["depth"].to_numpy()
    for axis, (label, values, reference) in zip(axes, panels, strict=False):  # spare axes are hidden below
        axis.plot(depth, values.to_numpy(), color="0.8", linewidth=1, zorder=1)
        for kind, colour in KIND_COLOURS.items():
            chosen = (frame["kind"] == kind).to_numpy()
            if chosen.any():
                axis.scatter(depth[chosen], values.to_numpy()[chosen], s=14, color=colour, label=kind, zorder=2)
        if reference and reference in frame and frame[reference].notna().any():
            axis.axhline(frame[reference].iloc[0], color="crimson", linestyle="--", linewidth=1, label="noise level")
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("activation site (depth)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    axes[0].legend(fontsize=8)
    figure.suptitle(title or f"{frame.attrs.get('model', '')} on {frame.attrs.get('data', '')}")
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=110))


def plot_bound_check(frame: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> None:
    """Measured surviving fraction (dots, coloured by kind) against Theorem 3.3's bound (black ticks) at every site,
    one panel per model of a bound-check frame; sites where the bound fails are ringed in red."""
    groups = list(frame.groupby(["level", "model"], sort=False))
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, ((level, model), group) in zip(axes, groups, strict=False):  # spare axes are hidden below
        position = np.arange(1, len(group) + 1)
        for kind, colour in KIND_COLOURS.items():
            chosen = (group["kind"] == kind).to_numpy()
            if chosen.any():
                axis.scatter(position[chosen], group["surv_meas"].to_numpy()[chosen], s=16, color=colour,
                             label=f"measured ({kind})", zorder=2)
        axis.scatter(position, group["surv_bound"].to_numpy(), marker="_", s=90, color="black",
                     label="Theorem 3.3 bound", zorder=3)
        failed = ~group["holds"].astype(bool).to_numpy()
        if failed.any():
            axis.scatter(position[failed], group["surv_meas"].to_numpy()[failed], s=90, facecolors="none",
                         edgecolors="crimson", label="below the bound", zorder=4)
        axis.axhline(0.5, color="0.6", linestyle=":", linewidth=1)
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"{model} ({level})", fontsize=10)
        axis.set_xlabel("site (forward order)")
        axis.set_ylabel("fraction of pre-activations > 0")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    for axis in axes[len(groups):]:
        axis.set_visible(False)
    legend = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    figure.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), 5), fontsize=8)
    figure.suptitle(title or "surviving fraction against its bound")
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=suffix, dpi=110))
