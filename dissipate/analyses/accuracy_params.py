"""Figure 5 (the paper's Figure 3), accuracy against parameter count: plain, residual and PNNH nets at each depth;
and at the shallowest depth, the width frontier: ResNet and plain nets at widths 0.5, 0.71 and 1 (`width`, about a
quarter, a half and all of the parameters), against PNNH nets with a narrower coder (`coder_ratio` k/C < 1) or
learner (`learner_ratio` < 1). That is the control the efficiency claim needs: at equal parameters, does PNNH beat a
narrower ResNet? The runs that decide it take several seeds (SEEDED); each point is their mean, with its 95% interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation
from matplotlib.ticker import NullLocator

from ..data import load_data
from ..models import count_flops, count_parameters, create_model
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, caption_line, finish_figure, plain_log_axis
from ._common import (COMPARED, COMPARED_DEPTHS, TRANSFORMERS, Context, Variant, chance_accuracy, family_models,
                      mark_chance, seeded)
from ._stats import mean_interval

NAME = "accuracy_params"
DESCRIPTION = ("final test accuracy against parameters at every depth, and the width frontier: ResNet and plain at "
               "widths 0.5, 0.71 and 1 against PNNH at coder/learner ratios below 1")
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "base_model", "coder_ratio", "learner_ratio",
           "width", "seed", "params", "image_size", "flops", "epochs", "test_acc", "best_test_acc", "train_loss",
           "status")
SEEDED = True
NARROW_MARKERS = ("D", "^", "v", "s", "P", "X", "<", ">", "p", "h")  # a hollow marker per narrower PNNH net
WIDTHS = (0.5, 0.71)  # the width controls, beside width 1: about a quarter and a half of the parameters


@dataclass(frozen=True)
class Settings:
    models: tuple[Variant, ...]  # at seed 0
    seeded: tuple[Variant, ...] = ()  # of `models`, those that decide a claim: at every seed of --seeds
    datasets: tuple[str | None, ...] = (None,)  # None: the preset's own


def _narrow_pnnh(depths: tuple[int, ...], *options: dict) -> tuple[Variant, ...]:
    return tuple(Variant(f"pnnh{depth}", option) for depth in depths for option in options)


def _narrow_grid(depth: int, coders: tuple[float, ...], learners: tuple[float, ...]) -> tuple[Variant, ...]:
    """pnnhDEPTH at every coder and learner ratio of the grid but (1, 1), the full-width net."""
    grid = [{name: ratio for name, ratio in (("coder_ratio", c), ("learner_ratio", m)) if ratio != 1}
            for c in coders for m in learners]
    return _narrow_pnnh((depth,), *(options for options in grid if options))


def _width_controls(families: tuple[str, ...], depths: tuple[int, ...]) -> tuple[Variant, ...]:
    return tuple(Variant(f"{family}{depth}", {"width": width}) for depth in depths for family in families
                 for width in WIDTHS)


def narrow_models(preset: str) -> tuple[Variant, ...]:
    """The PNNH nets of `preset` narrower than full width, which throughput times too."""
    return tuple(v for v in PRESETS[preset].models if v.options and v.family == "pnnh")


DECISIVE_PNNH = _narrow_pnnh((20,), {"coder_ratio": 0.5}, {"coder_ratio": 0.25, "learner_ratio": 0.25})


# The decisive runs, at every seed: plain against ResNet at depths 20 and 56 (the loss of the input, degradation),
# the width controls, and the two PNNH nets that the on-par and efficiency claims compare (claims.py): a narrower
# coder at full width (k/C = 0.5, not ResNet's function), and the narrowest, at about ResNet-20-x0.71's parameters.
# PNNH at its defaults is ResNet's function, and its run the same run: seeds would repeat ResNet's.
PRESETS = {
    "smoke": Settings((*family_models(COMPARED, (20, 32)), *_width_controls(("resnet",), (20,)), *DECISIVE_PNNH),
                      seeded=(*family_models(("plain", "resnet"), (20,)), *_width_controls(("resnet",), (20,)),
                              *DECISIVE_PNNH)),
    # the efficiency claim, measured: which narrower PNNH matches ResNet at its depth (the tables' headline), and
    # whether it beats a ResNet of its parameters
    "cpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *_width_controls(("plain", "resnet"), (20,)),
                     *_narrow_pnnh((20,), {"coder_ratio": 0.25, "learner_ratio": 0.25}, {"learner_ratio": 0.25},
                                   {"learner_ratio": 0.5}, {"coder_ratio": 0.5}),
                     *_narrow_pnnh((56,), {"learner_ratio": 0.5}), *family_models(TRANSFORMERS, (6,))),
                    seeded=(*family_models(("plain", "resnet"), (20, 56)), *_width_controls(("plain", "resnet"), (20,)),
                            *DECISIVE_PNNH)),
    "gpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *_width_controls(("plain", "resnet"), (20, 56)),
                     *_narrow_grid(20, (0.25, 0.5, 1), (0.25, 0.5, 1)),
                     *_narrow_pnnh((56,), {"learner_ratio": 0.5}, {"coder_ratio": 0.25, "learner_ratio": 0.5},
                                   {"coder_ratio": 0.25, "learner_ratio": 0.25}),
                     *family_models(TRANSFORMERS, (6, 12, 24))),
                    seeded=(*family_models(("plain", "resnet"), (20, 56)), *_width_controls(("plain", "resnet"), (20,)),
                            *DECISIVE_PNNH)),
    "paper": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *family_models(TRANSFORMERS, (6, 12, 24)),
                       *_width_controls(("plain", "resnet"), COMPARED_DEPTHS),
                       *_narrow_pnnh(COMPARED_DEPTHS, {"coder_ratio": 0.5}, {"coder_ratio": 0.25},
                                     {"learner_ratio": 0.5}, {"coder_ratio": 0.5, "learner_ratio": 0.5},
                                     {"coder_ratio": 0.25, "learner_ratio": 0.25})),
                      seeded=(*family_models(("plain", "resnet"), (20, 56)),
                              *_width_controls(("plain", "resnet"), (20,)), *DECISIVE_PNNH),
                      datasets=("cifar10", "cifar100")),
}


def runs(preset: str, seeds: int = 1) -> list[tuple[Variant, str | None]]:
    """Every net at seed 0, and the decisive ones at the other seeds too."""
    settings = PRESETS[preset]
    extra = [v for v in seeded(settings.seeded, seeds) if v.seed]
    return [(variant, data) for data in settings.datasets for variant in (*settings.models, *extra)]


def compute(ctx: Context) -> pd.DataFrame:
    rows, shapes = [], {}
    for variant, data in runs(ctx.preset, ctx.seeds):
        run = ctx.trained(variant, data)
        data = data or ctx.recipe.data
        if data not in shapes:  # the classes, channels and size the run's net was built for
            shapes[data] = load_data(data, image_size=ctx.recipe.image_size, length=1, root=ctx.data_dir)
        shape = shapes[data]
        with torch.device("meta"):  # the net's shape, without allocating its weights
            net = create_model(variant.model, num_classes=shape.num_classes, in_chans=shape.in_chans,
                               image_size=shape.image_size, **variant.options)
        ratios = {name: variant.options.get(name, 1.0) if variant.family == "pnnh" else None
                  for name in ("coder_ratio", "learner_ratio")}
        final = run.log.iloc[-1] if run.diverged is None else {}
        rows.append({"preset": ctx.preset, "dataset": shape.name, "model": variant.label, "family": variant.family,
                     "model_depth": variant.depth, "base_model": variant.model, **ratios,
                     "width": variant.options.get("width", 1.0), "seed": variant.seed,
                     "params": count_parameters(net), "image_size": shape.image_size,
                     "flops": count_flops(net, shape.image_size, shape.in_chans), "epochs": ctx.recipe.epochs,
                     "test_acc": final.get("test_acc"), "best_test_acc": run.log["test_acc"].max(),
                     "train_loss": final.get("train_loss"),
                     "status": "ok" if run.diverged is None else f"diverged in epoch {run.diverged}"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _is_full_width(frame: pd.DataFrame) -> pd.Series:
    return frame["model"] == frame["base_model"]


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and net: the mean final test accuracy of its seeds, its 95% interval (`low`, `high`; NaN
    for one seed), the seeds that finished (`seeds`) and those that diverged (`diverged`)."""
    rows = []
    for _, group in frame.groupby(["dataset", "model"], sort=False):
        mean, low, high = mean_interval(group["test_acc"])
        first = group.iloc[0]
        rows.append({**{c: first[c] for c in ("preset", "dataset", "model", "family", "model_depth", "base_model",
                                                "width", "params", "flops", "image_size", "epochs")},
                     "test_acc": mean, "low": low, "high": high, "train_loss": group["train_loss"].mean(),
                     "best_test_acc": group["best_test_acc"].mean(), "seeds": int(group["test_acc"].notna().sum()),
                     "diverged": int(group["test_acc"].isna().sum()),
                     "status": "ok" if group["test_acc"].notna().any() else first["status"]})
    return pd.DataFrame(rows)


def _points(axis, rows: pd.DataFrame, **style) -> None:
    """Each row's mean accuracy (%) against its parameters (millions), with its 95% interval where it has one."""
    error = (100 * (rows["test_acc"] - rows["low"]), 100 * (rows["high"] - rows["test_acc"]))
    axis.errorbar(rows["params"] / 1e6, 100 * rows["test_acc"], yerr=[e.fillna(0).to_numpy() for e in error],
                  capsize=2.5, **{"markersize": 4.5, **style})


def _frontier_depth(summary: pd.DataFrame) -> int | None:
    """The depth of the width frontier: the shallowest depth with width controls."""
    controls = summary[summary["width"] != 1]
    return int(controls["model_depth"].min()) if len(controls) else None


def draw(frame: pd.DataFrame) -> Figure:
    summary = summarise(frame)
    datasets = list(dict.fromkeys(summary["dataset"]))
    frontier = _frontier_depth(summary)
    panels = 2 if frontier is not None else 1
    figure = Figure(figsize=(5.4 * panels, 4.4 * len(datasets)), layout="constrained")
    axes = figure.subplots(len(datasets), panels, squeeze=False)
    for row, data in enumerate(datasets):
        every = summary[summary["dataset"] == data]
        rows = every[every["test_acc"].notna()]
        full = rows[_is_full_width(rows)]
        narrow = rows[(rows["family"] == "pnnh") & ~_is_full_width(rows)]
        depths = axes[row, 0]
        for family, group in full.groupby("family", sort=False):
            _points(depths, group.sort_values("params"), marker="o", color=FAMILY_COLOURS[family], gid=family,
                    label=FAMILY_LABELS[family])
        _narrow_points(depths, narrow[narrow["model_depth"] != frontier], lambda r: r.model)
        plain_log_axis(depths, "x")
        _depth_axis(depths, full)
        depths.set_title(f"{data}: every depth, full width", fontsize=10)
        chance = chance_accuracy(every)
        mark_chance(depths, chance)
        _legend_below(depths)
        if frontier is not None:
            _draw_frontier(axes[row, 1], rows[rows["model_depth"] == frontier], frontier, chance)
        diverged = every[every["diverged"] > 0]
        if len(diverged):
            depths.text(0.02, 0.02, "diverged: " + ", ".join(f"{r.model} ({r.diverged} of {r.diverged + r.seeds})"
                                                           for r in diverged.itertuples()),
                        transform=depths.transAxes, fontsize=7, color="crimson")
        for axis in axes[row]:
            axis.set_xlabel("parameters (millions, log)")
            axis.set_ylabel("final test accuracy (%)")
            axis.grid(alpha=0.3, which="both")
    epochs = int(frame["epochs"].max())
    seeds = int(summary["seeds"].max())
    detail = (f"final epoch of {epochs}; points with bars: mean of {seeds} seeds and its 95% interval; without: "
              "one seed" if seeds > 1 else f"final epoch of {epochs}; one seed each")
    return finish_figure(figure, "Accuracy against parameters", caption_line(frame, detail))


def _depth_axis(axis, full: pd.DataFrame) -> None:
    """The depth of the full-width nets, on an axis over the panel at their parameters (no label among the points):
    the nets of a depth within 20% of each other's parameters (plain, ResNet and PNNH) share a tick, and ticks within
    12% of each other one label ("6/110")."""
    ticks: list[tuple[float, str]] = []
    for depth, group in full.groupby("model_depth"):
        params = sorted(group["params"] / 1e6)
        start = 0
        for end in range(1, len(params) + 1):
            if end == len(params) or params[end] / params[end - 1] > 1.2:
                ticks.append((math.exp(np.mean(np.log(params[start:end]))), str(depth)))
                start = end
    merged: list[tuple[float, str]] = []
    for at, label in sorted(ticks):
        if merged and at / merged[-1][0] < 1.12:
            at, label = math.sqrt(at * merged[-1][0]), f"{merged.pop()[1]}/{label}"
        merged.append((at, label))
    top = axis.secondary_xaxis("top")
    top.set_xticks([at for at, _ in merged], [label for _, label in merged], fontsize=8)
    top.xaxis.set_minor_locator(NullLocator())
    top.set_xlabel("depth of the net (layers; at its parameters)", fontsize=8)


def _draw_frontier(axis, rows: pd.DataFrame, depth: int, chance: float | None = None) -> None:
    """Depth `depth`: ResNet and plain at each width (a line per family), and PNNH with a narrower coder or learner
    (its full-width net is ResNet's function, so it is not drawn again)."""
    for family, group in rows[rows["family"] != "pnnh"].groupby("family", sort=False):
        group = group.sort_values("params")
        _points(axis, group, marker="o", color=FAMILY_COLOURS[family], gid=family,
                label=f"{FAMILY_LABELS[family]}, width {', '.join(f'{w:g}' for w in group['width'])}")
        for r in group.itertuples():
            axis.annotate(f"x{r.width:g}", (r.params / 1e6, 100 * r.test_acc), fontsize=6.5,
                          textcoords="offset points", xytext=(4, -9), color=FAMILY_COLOURS[family])
    narrow = rows[(rows["family"] == "pnnh") & ~_is_full_width(rows)]
    _narrow_points(axis, narrow, lambda r: f"PNNH {r.model.removeprefix(r.base_model).strip()}")
    ticks = sorted({round(p / 1e6, 2) for p in rows["params"]})
    plain_log_axis(axis, "x", ticks=[t for i, t in enumerate(ticks) if i == 0 or t / ticks[i - 1] > 1.15])
    axis.set_title(f"depth {depth}: the width frontier", fontsize=10)
    mark_chance(axis, chance)
    _legend_below(axis)


def _narrow_points(axis, narrow: pd.DataFrame, label) -> None:
    """The PNNH nets with a narrower coder or learner: hollow, a marker each (NARROW_MARKERS), named (`label(row)`)
    in the legend rather than beside the point, where the names ran into their neighbours."""
    for index, r in enumerate(narrow.itertuples()):
        _points(axis, narrow.iloc[[index]], marker=NARROW_MARKERS[index % len(NARROW_MARKERS)], linestyle="",
                markerfacecolor="none", markersize=7, color=FAMILY_COLOURS["pnnh"], gid="pnnh", label=label(r))


def _legend_below(axis) -> None:
    """The panel's legend under it (under its axis label, whatever the panel's height), where it covers no point."""
    below = axis.transAxes + ScaledTranslation(0, -36 / 72, axis.get_figure().dpi_scale_trans)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncol=2)


def _accuracy(row) -> str:
    if row.status != "ok":
        return row.status
    interval = f" [{100 * row.low:.1f}, {100 * row.high:.1f}]" if pd.notna(row.low) else ""
    return f"{100 * row.test_acc:.1f}%{interval}"


def headline(frame: pd.DataFrame) -> list[str]:
    summary = summarise(frame)
    lines = []
    full = summary[_is_full_width(summary)]
    for (data, depth), rows in full.groupby(["dataset", "model_depth"]):
        lines.append(f"{data} depth {depth}: " + ", ".join(
            f"{r.model} {_accuracy(r)} ({r.params / 1e6:.2f}M)" for r in rows.itertuples()))
    for r in summary[~_is_full_width(summary)].itertuples():
        lines.append(f"{r.dataset} {r.model}: {_accuracy(r)} ({r.params / 1e6:.2f}M)")
    return lines
