"""Figures from result frames. Each function takes a DataFrame and a path, and writes a PNG atomically.

Figures are drawn on `matplotlib.figure.Figure` directly (no pyplot state, no display backend), so that plotting
works in scripts, tests and headless machines alike.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from ._io import atomic_write

KIND_COLOURS = {"plain": "#7f7f7f", "residual": "#1f77b4", "pnnh": "#ff7f0e", "unknown": "#2ca02c",
                # the remedies' sites (models/remedies.py), in their families' colours below
                "tat": "#8c564b", "dks": "#c49c94", "iso": "#bcbd22", "ll": "#e377c2", "dirac": "#9edae5",
                "repvgg": "#393b79"}


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
    """The probe's main columns against depth, one panel each, each site coloured by its kind (see
    `probe_figure`), written to `path` as PNG; nothing without a column to draw."""
    figure = probe_figure(frame, title)
    if figure is not None:
        atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=110))


def probe_figure(frame: pd.DataFrame, title: str | None = None) -> Figure | None:
    """The figure of `plot_probe`. Every panel's quantity lies in [0, 1] (R^2 and CKA can dip below 0), so each
    axis spans at least 0 to 1: a surviving fraction of 0.49 to 0.51 is drawn as the flat line it is, not as
    structure."""
    panels = _probe_panels(frame)
    if not panels:
        return None
    figure, axes = _panel_grid(len(panels))
    depth = frame["depth"].to_numpy()
    for axis, (label, values, reference) in zip(axes, panels, strict=True):
        axis.plot(depth, values.to_numpy(), color="0.8", linewidth=1, zorder=1)
        for kind in dict.fromkeys(frame["kind"]):  # every kind present is drawn, those without a colour of their own too
            chosen = (frame["kind"] == kind).to_numpy()
            axis.scatter(depth[chosen], values.to_numpy()[chosen], s=14, color=KIND_COLOURS.get(kind, "black"),
                         label=kind, zorder=2)
        if reference and reference in frame and frame[reference].notna().any():
            axis.axhline(frame[reference].iloc[0], color="crimson", linestyle="--", linewidth=1, label="noise level")
        _depth_panel(axis, label)
    _figure_legend(figure, axes, columns=6)
    figure.suptitle(title or f"{frame.attrs.get('model', '')} on {frame.attrs.get('data', '')}")
    return figure


def plot_probes(series: dict[str, pd.DataFrame], path: str | os.PathLike) -> None:
    """`probes_figure(series)` written to `path`, in the format its suffix names (.png or .pdf)."""
    figure = probes_figure(series)
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=suffix, dpi=110))


def probes_figure(series: dict[str, pd.DataFrame]) -> Figure:
    """Several probes on the probe figure's axes (`probe_figure`'s panels, each spanning at least 0 to 1), one
    colour per probe, with a legend: models, checkpoints, or the epochs of a training run's probes.csv."""
    panels = {label: _probe_panels(frame) for label, frame in series.items()}
    titles = [title for title, _, _ in next(iter(panels.values()))]
    figure, axes = _panel_grid(len(titles), legend_rows=len(series) // 4 + 1)
    colours = [f"C{k % 10}" for k in range(len(series))]
    for axis, title in zip(axes, titles, strict=True):
        for colour, (label, frame) in zip(colours, series.items(), strict=True):
            values = {t: v for t, v, _ in panels[label]}.get(title)
            if values is None:  # a column this probe has no number in (DISTS without its weights)
                continue
            axis.plot(frame["depth"], values, color=colour, marker="o", markersize=3, linewidth=1.2, label=label)
        _depth_panel(axis, title)
    _figure_legend(figure, axes[:1], columns=4)
    figure.suptitle(f"{len(series)} probes compared")
    return figure


def _panel_grid(count: int, legend_rows: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure of `count` panels, two or three to a row (spare axes hidden), with room for a legend under them."""
    columns = 2 if count in (2, 4) else min(count, 3)
    rows = -(-count // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows + 0.3 * legend_rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis in axes[count:]:
        axis.set_visible(False)
    return figure, axes[:count]


def _depth_panel(axis, title: str) -> None:
    """A probe panel's axes: against the site's depth, spanning at least 0 to 1 (every quantity drawn lies in [0, 1],
    R^2 and CKA dipping below 0), so that 0.49 to 0.51 is drawn as the flat line it is, not as structure."""
    low, high = axis.get_ylim()
    axis.set_ylim(min(0.0, low) - 0.02, max(1.0, high) + 0.02)
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("activation site (depth)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)


def _figure_legend(figure: Figure, axes, columns: int) -> None:
    """One legend under the figure, for every label in its panels (once each), where it covers no point."""
    legend = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)}
    figure.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=min(len(legend), columns),
                  fontsize=8)


def plot_bound_check(frame: pd.DataFrame, path: str | os.PathLike, title: str | None = None) -> None:
    """`draw_bound_check`'s figure, written to `path` (its suffix, png or pdf, is the format)."""
    figure = draw_bound_check(frame, title)
    suffix = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write(path, lambda f: figure.savefig(f, format=suffix, dpi=110, bbox_inches="tight"))


def draw_bound_check(frame: pd.DataFrame, title: str | None = None) -> Figure:
    """Measured surviving fraction (dots, coloured by kind) against Theorem 3.3's bound (black ticks) at every site,
    one panel per model of a bound-check frame; sites where the bound fails are ringed in red."""
    groups = list(frame.groupby(["level", "model"], sort=False))
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, ((level, model), group) in zip(axes, groups, strict=False):  # spare axes are hidden below
        position = np.arange(1, len(group) + 1)
        for kind in dict.fromkeys(group["kind"]):
            chosen = (group["kind"] == kind).to_numpy()
            axis.scatter(position[chosen], group["surv_meas"].to_numpy()[chosen], s=16,
                         color=KIND_COLOURS.get(kind, "black"), label=f"measured ({kind})", zorder=2)
        if group["surv_bound"].notna().any():  # a plain net's sites predict nothing: no bound to list
            axis.scatter(position, group["surv_bound"].to_numpy(), marker="_", s=90, color="black",
                         label="Theorem 3.3 bound", zorder=3)
        failed = group["holds"].astype("boolean").eq(False).fillna(False).to_numpy(dtype=bool)  # NA: no prediction
        if failed.any():
            axis.scatter(position[failed], group["surv_meas"].to_numpy()[failed], s=90, facecolors="none",
                         edgecolors="crimson", label="below the bound", zorder=4)
        axis.axhline(0.5, color="0.6", linestyle=":", linewidth=1, label="1/2 (a plain site)")
        axis.set_ylim(-0.02, 1.02)
        if len(groups) > 1:  # one panel is named by the figure's title
            axis.set_title(f"{model} ({level})", fontsize=10)
        axis.set_xlabel("site (forward order)")
        axis.set_ylabel("fraction of pre-activations > 0")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    for axis in axes[len(groups):]:
        axis.set_visible(False)
    _figure_legend(figure, axes, columns=2 * columns)
    figure.suptitle(title or "surviving fraction against its bound")
    return figure


# -- the analyses' figures (dissipate.analyses): one colour per family across every figure --------------------------

FAMILY_COLOURS = {"plain": KIND_COLOURS["plain"], "resnet": KIND_COLOURS["residual"], "pnnh": KIND_COLOURS["pnnh"],
                  "vgg": "#9467bd", "plainvit": "#3b3b3b", "vit": "#17becf", "pnnhvit": "#d62728",  # ViTs: kin hues
                  **{family: KIND_COLOURS[family] for family in ("tat", "iso", "ll", "dirac", "repvgg")}}
FAMILY_LABELS = {"plain": "plain", "resnet": "residual (ResNet)", "pnnh": "PNNH", "vgg": "VGG (plain, BN)",
                 "plainvit": "plain ViT", "vit": "ViT (residual)", "pnnhvit": "PNNH-ViT", "tat": "TAT (no BN)",
                 "iso": "ISONet (no BN)", "ll": "looks-linear", "dirac": "DiracNet", "repvgg": "RepVGG"}
KIND_FAMILY = {"plain": "plain", "residual": "resnet", "pnnh": "pnnh"}  # a site's kind drawn in its family's colour
DEPTH_LINESTYLES = ("-", "--", ":", "-.")  # the shallowest model of a family solid, deeper ones dashed, dotted
UNDER_WIDTH = 3.2  # the width of a line drawn under another that would cover it (ResNet under PNNH at its defaults)


def depth_linestyles(frame: pd.DataFrame) -> dict[str, str]:
    """{model: linestyle}: within each family, models in order of depth get solid, dashed, dotted, dash-dot."""
    styles = {}
    for _, group in frame.drop_duplicates("model").sort_values("model_depth").groupby("family"):
        for index, model in enumerate(group["model"]):
            styles[model] = DEPTH_LINESTYLES[index % len(DEPTH_LINESTYLES)]
    return styles


def family_depth_legend(figure: Figure, panels: list[pd.DataFrame], extra: tuple = (),
                        wide: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Each panel's {model: linestyle}, and one legend beside the figure: a colour per family (the families in `wide`
    as wide lines, as `draw_site_curves` draws them), a line style per depth (within each panel the shallowest net of
    a family is solid, the next dashed, ...), then the `extra` handles."""
    styles = [depth_linestyles(panel) for panel in panels]
    depths: dict[str, set[int]] = {}
    for panel, style in zip(panels, styles, strict=True):
        for model, depth in panel.drop_duplicates("model")[["model", "model_depth"]].itertuples(index=False):
            depths.setdefault(style[model], set()).add(int(depth))
    present = set().union(*(panel["family"] for panel in panels))
    handles = [Line2D([], [], color=colour, label=FAMILY_LABELS[family],
                      linewidth=UNDER_WIDTH if family in wide else 1.5)
               for family, colour in FAMILY_COLOURS.items() if family in present]
    handles += [Line2D([], [], color="0.35", linestyle=linestyle, label="depth " + "/".join(map(str, sorted(d))))
                for linestyle, d in sorted(depths.items(), key=lambda item: DEPTH_LINESTYLES.index(item[0]))]
    handles += list(extra)
    figure.legend(handles=handles, loc="outside right upper", fontsize=8)
    return styles


def draw_site_curves(axis, frame: pd.DataFrame, column: str, styles: dict[str, str],
                     wide: tuple[str, ...] = ()) -> None:
    """`column` against each site's layer, one line per model of `frame`, coloured by family; the families in `wide`
    drawn UNDER_WIDTH wide under the others, so that a line that another covers (the same function) still shows."""
    for model, group in frame.groupby("model", sort=False):
        family = group["family"].iloc[0]
        axis.plot(group["layer"], group[column], color=FAMILY_COLOURS.get(family, KIND_COLOURS["unknown"]),
                  linestyle=styles.get(model, "-"), linewidth=UNDER_WIDTH if family in wide else 1.4, label=model,
                  gid=family, zorder=1.9 if family in wide else 2)


def plain_log_axis(axis, which: str = "x", ticks: list[float] | None = None) -> None:
    """A log axis labelled with plain numbers (20, 56, 110; 0.3, 1) rather than powers of ten: at `ticks`, or by
    default at 1, 2, 3 and 5 times the powers of ten within the drawn range (fewer as the range widens, so that the
    labels never overlap). A range too narrow to hold two of those gets every 1 to 9 times a power of ten, and one
    narrower still its two ends (to two significant digits): an axis always has two labelled ticks at least."""
    getattr(axis, f"set_{which}scale")("log")
    target = getattr(axis, f"{which}axis")
    if ticks is None:
        low, high = getattr(axis, f"get_{which}lim")()
        span = math.log10(high / low)
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for steps in ((1, 2, 3, 5) if span <= 1.5 else (1, 2, 5) if span <= 3 else (1,), tuple(range(1, 10))):
            ticks = [round(m * 10.0 ** d, 12) for d in decades for m in steps if low <= m * 10.0 ** d <= high]
            if len(ticks) >= 2:
                break
        else:
            ticks = _ends(low, high)
    target.set_ticks(ticks, [f"{t:g}" for t in ticks])
    target.set_minor_locator(NullLocator())


def _ends(low: float, high: float) -> list[float]:
    """Two round numbers just inside [low, high], to as few significant digits (two at least) as tell them apart."""
    for digits in range(2, 8):
        unit = 10.0 ** (math.floor(math.log10(low)) - digits + 1)
        first, last = math.ceil(low / unit) * unit, math.floor(high / unit) * unit
        if first < last:
            return [round(first, 12), round(last, 12)]
    return [low, high]


def caption_line(frame: pd.DataFrame, detail: str = "") -> str:
    """'preset cpu · fashion-mnist · ...' from a result frame's preset and dataset columns."""
    datasets = ", ".join(dict.fromkeys(str(d) for d in frame["dataset"].dropna()))
    return " · ".join(part for part in (f"preset {frame['preset'].iloc[0]}", f"data: {datasets}", detail) if part)


def finish_figure(figure: Figure, title: str, caption: str) -> Figure:
    """The figure's title, and its caption line (preset and data) under everything."""
    figure.suptitle(title, fontsize=12)
    figure.supxlabel(caption, fontsize=8, color="0.3", gid="caption")  # laid out by constrained layout
    return figure


def save_figure(figure: Figure, stem: str | os.PathLike, formats: tuple[str, ...] = ("png",)) -> list[str]:
    """Write `figure` as STEM.png (and STEM.pdf, ...) atomically; the paths written."""
    paths = []
    for fmt in formats:
        path = f"{os.fspath(stem)}.{fmt}"
        atomic_write(path, lambda f, fmt=fmt: figure.savefig(f, format=fmt, dpi=130, bbox_inches="tight"))
        paths.append(path)
    return paths
