"""Figure 5 (the paper's Figure 3), accuracy against parameter count: plain, residual and PNNH nets at each depth,
and PNNH nets with a narrower coder (`coder_ratio` k/C < 1) or learner (`learner_ratio` < 1), which cost fewer
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..data import load_data
from ..models import count_flops, count_parameters, create_model
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, caption_line, finish_figure, plain_log_axis
from ._common import COMPARED, COMPARED_DEPTHS, TRANSFORMERS, Context, Variant, family_models

NAME = "accuracy_params"
DESCRIPTION = "final test accuracy against parameters, with PNNH at coder/learner ratios below 1"
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "base_model", "coder_ratio", "learner_ratio",
           "params", "image_size", "flops", "epochs", "test_acc", "best_test_acc", "train_loss", "status")


@dataclass(frozen=True)
class Settings:
    models: tuple[Variant, ...]
    datasets: tuple[str | None, ...] = (None,)  # None: the preset's own


def _narrow_pnnh(depths: tuple[int, ...], *options: dict) -> tuple[Variant, ...]:
    return tuple(Variant(f"pnnh{depth}", option) for depth in depths for option in options)


def _narrow_grid(depth: int, coders: tuple[float, ...], learners: tuple[float, ...]) -> tuple[Variant, ...]:
    """pnnhDEPTH at every coder and learner ratio of the grid but (1, 1), the full-width net."""
    grid = [{name: ratio for name, ratio in (("coder_ratio", c), ("learner_ratio", m)) if ratio != 1}
            for c in coders for m in learners]
    return _narrow_pnnh((depth,), *(options for options in grid if options))


def narrow_models(preset: str) -> tuple[Variant, ...]:
    """The PNNH nets of `preset` narrower than full width, which throughput times too."""
    return tuple(v for v in PRESETS[preset].models if v.options)


PRESETS = {
    "smoke": Settings((*family_models(COMPARED, (20, 32)),
                       *_narrow_pnnh((20,), {"coder_ratio": 0.5}, {"learner_ratio": 0.5}))),
    # the efficiency claim, measured: which narrower PNNH matches ResNet at its depth (the tables' headline)
    "cpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *_narrow_grid(20, (0.25, 0.5, 1), (0.25, 0.5, 1)),
                     *_narrow_pnnh((56,), {"learner_ratio": 0.5}, {"coder_ratio": 0.25, "learner_ratio": 0.5},
                                   {"coder_ratio": 0.25, "learner_ratio": 0.25}),
                     *family_models(TRANSFORMERS, (6,)))),
    "gpu": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *_narrow_grid(20, (0.25, 0.5, 1), (0.25, 0.5, 1)),
                     *_narrow_pnnh((56,), {"learner_ratio": 0.5}, {"coder_ratio": 0.25, "learner_ratio": 0.5},
                                   {"coder_ratio": 0.25, "learner_ratio": 0.25}),
                     *family_models(TRANSFORMERS, (6, 12, 24)))),
    "paper": Settings((*family_models(COMPARED, COMPARED_DEPTHS), *family_models(TRANSFORMERS, (6, 12, 24)),
                       *_narrow_pnnh(COMPARED_DEPTHS, {"coder_ratio": 0.5}, {"coder_ratio": 0.25},
                                     {"learner_ratio": 0.5}, {"coder_ratio": 0.5, "learner_ratio": 0.5})),
                      datasets=("cifar10", "cifar100")),
}


def runs(preset: str) -> list[tuple[Variant, str | None]]:
    settings = PRESETS[preset]
    return [(variant, data) for data in settings.datasets for variant in settings.models]


def compute(ctx: Context) -> pd.DataFrame:
    rows, shapes = [], {}
    for variant, data in runs(ctx.preset):
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
                     "params": count_parameters(net), "image_size": shape.image_size,
                     "flops": count_flops(net, shape.image_size, shape.in_chans), "epochs": ctx.recipe.epochs,
                     "test_acc": final.get("test_acc"), "best_test_acc": run.log["test_acc"].max(),
                     "train_loss": final.get("train_loss"),
                     "status": "ok" if run.diverged is None else f"diverged in epoch {run.diverged}"})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _is_full_width(frame: pd.DataFrame) -> pd.Series:
    return frame["model"] == frame["base_model"]


def draw(frame: pd.DataFrame) -> Figure:
    datasets = list(dict.fromkeys(frame["dataset"]))
    figure = Figure(figsize=(5.6 * len(datasets), 4.4), layout="constrained")
    axes = figure.subplots(1, len(datasets), squeeze=False)[0]
    for axis, data in zip(axes, datasets, strict=True):
        every = frame[frame["dataset"] == data]
        rows = every[every["test_acc"].notna()]
        for family, group in rows[_is_full_width(rows)].groupby("family", sort=False):
            group = group.sort_values("params")
            axis.plot(group["params"] / 1e6, 100 * group["test_acc"], marker="o", color=FAMILY_COLOURS[family],
                      gid=family, label=FAMILY_LABELS[family])
            for r in group.itertuples():
                axis.annotate(str(r.model_depth), (r.params / 1e6, 100 * r.test_acc), fontsize=7,
                              textcoords="offset points", xytext=(4, -9))
        narrow = rows[~_is_full_width(rows)]
        if len(narrow):
            axis.scatter(narrow["params"] / 1e6, 100 * narrow["test_acc"], marker="D", s=30, facecolors="none",
                         edgecolors=FAMILY_COLOURS["pnnh"], gid="pnnh", label="PNNH, narrower coder or learner")
            for r in narrow.itertuples():
                axis.annotate(r.model.removeprefix(r.base_model).strip(), (r.params / 1e6, 100 * r.test_acc),
                              fontsize=6.5, textcoords="offset points", xytext=(5, 3), color=FAMILY_COLOURS["pnnh"])
        plain_log_axis(axis, "x")
        diverged = every[every["test_acc"].isna()]
        if len(diverged):
            axis.text(0.02, 0.02, "diverged, not shown: " + ", ".join(diverged["model"]), transform=axis.transAxes,
                      fontsize=7, color="crimson")
        axis.set_xlabel("parameters (millions, log)")
        axis.set_ylabel("final test accuracy (%)")
        axis.set_title(data, fontsize=10)
        axis.grid(alpha=0.3, which="both")
        handles, labels = axis.get_legend_handles_labels()
        handles.append(Line2D([], [], linestyle="", label="numbers: depth"))
        axis.legend(handles=handles, fontsize=7)
    epochs = int(frame["epochs"].max())
    return finish_figure(figure, "Accuracy against parameters", caption_line(frame, f"final epoch of {epochs}"))


def _accuracy(row) -> str:
    return f"{100 * row.test_acc:.1f}%" if row.status == "ok" else row.status


def headline(frame: pd.DataFrame) -> list[str]:
    lines = []
    full = frame[_is_full_width(frame)]
    for (data, depth), rows in full.groupby(["dataset", "model_depth"]):
        lines.append(f"{data} depth {depth}: " + ", ".join(
            f"{r.model} {_accuracy(r)} ({r.params / 1e6:.2f}M)" for r in rows.itertuples()))
    for r in frame[~_is_full_width(frame)].itertuples():
        lines.append(f"{r.dataset} {r.model}: {_accuracy(r)} ({r.params / 1e6:.2f}M)")
    return lines
