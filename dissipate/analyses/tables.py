"""Table 1: accuracy, parameters, FLOPs and training throughput of every trained net, as CSV and Markdown. It joins
the results of the accuracy-against-parameters and throughput analyses (computing them where they are missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .._io import atomic_write
from . import accuracy_params, throughput
from ._common import Context

NAME = "tables"
DESCRIPTION = "accuracy, parameters, FLOPs and throughput per trained net (CSV and Markdown)"
COLUMNS = ("preset", "dataset", "model", "family", "model_depth", "params", "image_size", "flops", "test_acc",
           "best_test_acc", "train_loss", "status", "throughput_px", "images_per_s")
MARKDOWN_COLUMNS = {"model": "model", "params": "params (M)", "flops": "GFLOPs / image", "test_acc": "test acc. (%)",
                    "train_loss": "final train loss", "images_per_s": "train images/s"}


@dataclass(frozen=True)
class Settings:
    """The table takes its rows from accuracy_params and its speeds from throughput, at the same preset."""


PRESETS = {"smoke": Settings(), "cpu": Settings(), "paper": Settings()}


def compute(ctx: Context) -> pd.DataFrame:
    accuracy, _ = ctx.result(accuracy_params)
    speed, _ = ctx.result(throughput)
    speed = speed.drop_duplicates("model")[["model", "image_size", "images_per_s"]]  # its first (smallest) size
    joined = accuracy.merge(speed.rename(columns={"image_size": "throughput_px"}), on="model", how="left")
    return joined.reindex(columns=list(COLUMNS))


def markdown(frame: pd.DataFrame) -> str:
    """One Markdown table per dataset, in the units a reader wants (millions, GFLOPs, percent)."""
    shown = frame.assign(params=frame["params"] / 1e6, flops=frame["flops"] / 1e9, test_acc=100 * frame["test_acc"])
    formats = {"params": "{:.2f}", "flops": "{:.3f}", "test_acc": "{:.2f}", "train_loss": "{:.3f}",
               "images_per_s": "{:.0f}"}
    parts = []
    for data, rows in shown.groupby("dataset", sort=False):
        size = int(rows["image_size"].iloc[0])
        parts.append(f"**{data}** ({size} px; preset {rows['preset'].iloc[0]}; throughput on synthetic images at "
                     f"{', '.join(f'{p:.0f}' for p in rows['throughput_px'].dropna().unique())} px)\n")
        parts.append("| " + " | ".join(MARKDOWN_COLUMNS.values()) + " |")
        parts.append("|" + "---|" * len(MARKDOWN_COLUMNS))
        for row in rows.itertuples():
            cells = [("n/a" if pd.isna(getattr(row, c)) else formats.get(c, "{}").format(getattr(row, c)))
                     for c in MARKDOWN_COLUMNS]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def render(frame: pd.DataFrame, out: Path, formats: tuple[str, ...]) -> list[str]:
    """tables.md beside tables.csv: there is no figure."""
    path = out / f"{NAME}.md"
    atomic_write(path, lambda f: f.write(markdown(frame).encode()))
    return [str(path)]
