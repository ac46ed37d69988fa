"""Table 1: accuracy, parameters, FLOPs and training throughput of every trained net, as CSV and Markdown. It joins
the results of the accuracy-against-parameters, throughput and remedies analyses (computing them where they are
missing). A net run at several seeds has one row: the mean of its seeds, with the 95% interval of its accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._io import atomic_write
from ..models import REMEDY_FAMILIES
from . import accuracy_params, remedies, throughput
from ._common import COMPARED, Context

NAME = "tables"
DESCRIPTION = "accuracy, parameters, FLOPs and throughput per trained net (CSV and Markdown)"
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "width", "params", "image_size", "flops", "seeds",
           "test_acc", "low", "high", "best_test_acc", "train_loss", "status", "throughput_px", "images_per_s",
           "acc_vs_resnet", "params_vs_resnet", "speed_vs_resnet")
INPUTS = (accuracy_params, throughput, remedies)  # the analyses it joins: their results stamp its cache
MATCH = 0.01  # "matches ResNet": final test accuracy at most one point below the ResNet of its depth
MARKDOWN_COLUMNS = {"model": "model", "params": "params (M)", "flops": "GFLOPs / image", "seeds": "seeds",
                    "test_acc": "test acc. (%)",
                    "train_loss": "final train loss", "images_per_s": "train images/s",
                    "acc_vs_resnet": "vs ResNet: acc. (points)", "params_vs_resnet": "params", "speed_vs_resnet": "images/s"}


@dataclass(frozen=True)
class Settings:
    """The table takes its rows from accuracy_params and its speeds from throughput, at the same preset."""


PRESETS = {"smoke": Settings(), "cpu": Settings(), "gpu": Settings(), "paper": Settings()}


def compute(ctx: Context) -> pd.DataFrame:
    accuracy = accuracy_params.summarise(ctx.result(accuracy_params)[0])
    accuracy = accuracy[accuracy["family"].isin(COMPARED)]  # the CNNs: PNNH against the ResNet of its depth
    remedy = ctx.result(remedies)[0]
    remedy = remedy[(remedy["state"] == "trained") & remedy["family"].isin(REMEDY_FAMILIES)].drop_duplicates("model")
    remedy = remedy.assign(width=1.0, seeds=remedy["test_acc"].notna().astype(int),
                           image_size=accuracy["image_size"].iloc[0] if len(accuracy) else None)
    speed, _ = ctx.result(throughput)
    speed = speed.drop_duplicates("model")[["model", "image_size", "images_per_s"]]  # its first (smallest) size
    joined = pd.concat([accuracy, remedy.reindex(columns=accuracy.columns)], ignore_index=True).merge(
        speed.rename(columns={"image_size": "throughput_px"}), on="model", how="left")
    resnet = joined[(joined["family"] == "resnet") & (joined["width"] == 1)].set_index(["dataset", "model_depth"])
    same_depth = resnet.reindex(pd.MultiIndex.from_frame(joined[["dataset", "model_depth"]]))
    for column, value in (("acc_vs_resnet", "test_acc"), ("params_vs_resnet", "params"),
                          ("speed_vs_resnet", "images_per_s")):
        compared = same_depth[value].to_numpy()
        joined[column] = joined[value] - compared if column == "acc_vs_resnet" else joined[value] / compared
    return joined.reindex(columns=list(COLUMNS))


def narrowest(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and depth, the PNNH net with the fewest parameters whose accuracy matches ResNet's (MATCH)."""
    matching = frame[(frame["family"] == "pnnh") & (frame["acc_vs_resnet"] >= -MATCH - 1e-9)]
    return matching.sort_values("params").drop_duplicates(["dataset", "model_depth"]).sort_values(
        ["dataset", "model_depth"])


def headline(frame: pd.DataFrame) -> list[str]:
    best = narrowest(frame).set_index(["dataset", "model_depth"])
    lines = []
    resnets = frame[(frame["family"] == "resnet") & (frame["width"] == 1)]
    for data, depth in resnets[["dataset", "model_depth"]].itertuples(index=False):
        if (data, depth) not in best.index:
            lines.append(f"{data} depth {depth}: no PNNH within {100 * MATCH:.0f} point of ResNet")
            continue
        r = best.loc[(data, depth)]
        lines.append(f"{data} depth {depth}: the narrowest PNNH within {100 * MATCH:.0f} point of ResNet is "
                     f"{r.model}, {100 * r.test_acc:.1f}% ({100 * r.acc_vs_resnet:+.1f} points), "
                     f"{r.params_vs_resnet:.2f}x the parameters, {r.speed_vs_resnet:.2f}x the training images/s "
                     "(seed means; claims.md weighs their intervals)")
    return lines


def markdown(frame: pd.DataFrame) -> str:
    """One Markdown table per dataset, in the units a reader wants (millions, GFLOPs, percent)."""
    shown = frame.assign(params=frame["params"] / 1e6, flops=frame["flops"] / 1e9, test_acc=100 * frame["test_acc"],
                         acc_vs_resnet=100 * frame["acc_vs_resnet"])
    half = 100 * (frame["high"] - frame["low"]) / 2
    shown["test_acc"] = [f"{a:.2f}" + (f" ± {h:.2f}" if pd.notna(h) else "") for a, h in zip(shown["test_acc"], half)]
    formats = {"params": "{:.2f}", "flops": "{:.3f}", "seeds": "{:.0f}", "train_loss": "{:.3f}",
               "images_per_s": "{:.0f}", "acc_vs_resnet": "{:+.1f}", "params_vs_resnet": "{:.2f}x",
               "speed_vs_resnet": "{:.2f}x"}
    parts = []
    for data, rows in shown.groupby("dataset", sort=False):
        size = int(rows["image_size"].iloc[0])
        parts.append(f"**{data}** ({size} px; preset {rows['preset'].iloc[0]}; throughput on synthetic images at "
                     f"{', '.join(f'{p:.0f}' for p in rows['throughput_px'].dropna().unique())} px; test accuracy: "
                     "the mean over the seeds ± half its 95% interval)\n")
        remedy = rows["family"].isin(REMEDY_FAMILIES)
        parts += _markdown_table(rows[~remedy], formats)
        if remedy.any():
            parts += ["The shortcut-free remedies (one seed; not timed for throughput):", "",
                      *_markdown_table(rows[remedy], formats)]
    best = headline(frame)
    if best:
        parts += ["The narrowest PNNH whose mean final test accuracy is within one point of the ResNet of its depth "
                  "(claims.md weighs it against the seeds' spread and a ResNet of its parameters):", "",
                  *(f"- {line}" for line in best), ""]
    return "\n".join(parts)


def _markdown_table(rows: pd.DataFrame, formats: dict[str, str]) -> list[str]:
    lines = ["| " + " | ".join(MARKDOWN_COLUMNS.values()) + " |", "|" + "---|" * len(MARKDOWN_COLUMNS)]
    for row in rows.itertuples():
        cells = [("n/a" if pd.isna(getattr(row, c)) else formats.get(c, "{}").format(getattr(row, c)))
                 for c in MARKDOWN_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def render(frame: pd.DataFrame, out: Path, formats: tuple[str, ...]) -> list[str]:
    """tables.md beside tables.csv: there is no figure."""
    path = out / f"{NAME}.md"
    atomic_write(path, lambda f: f.write(markdown(frame).encode()))
    return [str(path)]
