"""What `dissipate probe` tells a reader on the terminal: a compact view of a probe frame, a legend of its columns,
and a summary of how much of the input is left at the first, the mid-depth and the last site.

Every column still goes to the CSV and JSON; this is only the view for a person.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from .models import REMEDY_FAMILIES, list_models

VIEW = ("site", "depth", "kind", "surviving", "erank/ch", "cka_input", "recon_r2", "dists_input")
LEGEND = {
    "kind": "what the site's pre-activation sums: plain, one layer's output; residual, a branch and a shortcut (above "
            "1/2 where the shortcut carries the block's non-negative input, 1/2 at a stage transition, whose "
            "shortcut is a zero-mean 1x1 conv and BN like the branch); pnnh, a branch and E^T E x; others, a remedy",
    "surviving": "fraction of pre-activations > 0; 1/2 at a plain site at initialisation, whatever the input",
    "erank/ch": "effective rank of the channel covariance per channel; 1 when every direction is used",
    "cka_input": "linear CKA between the features and the input image; 1 is the image's geometry, about 0 is "
                 "nothing left",
    "recon_r2": "R^2 of a linear read-out of the image, scored on held-out images; 1 recovers it, about 0 is "
                "nothing left",
    "dists_input": "DISTS between the image and its read-out; 0 is identical, dists_noise (in the CSV) is noise",
}
# what `surviving` says at the sites of the remedies whose activation is not ReLU's (docs/design.md, the remedies)
SURVIVING_AT = {
    "tat": "a leaky ReLU passes both signs: the fraction on its identity side; none dies",
    "dks": "a smooth activation: the fraction of positive inputs; none dies",
    "iso": "SReLU cuts at its learned threshold b (-1 at initialisation): the fraction above 0, not above b, "
           "since P(z > 0) is what Theorem 3.3 bounds and what every other net's column counts",
    "ll": "a CReLU keeps both halves: which half carries each neuron; none dies",
    "dirac": "NCReLU keeps both halves: which half carries each neuron; none dies",
}
COUNTERPART = {"plain": "resnet", "resnet": "plain", "pnnh": "resnet",  # the family to compare a probe with
               "plainvit": "vit", "vit": "plainvit", "pnnhvit": "vit",
               **dict.fromkeys(REMEDY_FAMILIES, "plain")}


def view(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns that tell the story, in VIEW's order: erank per channel, and DISTS only where it was computed."""
    shown = frame.assign(**{"erank/ch": frame["erank"] / frame["channels"]}) if "erank" in frame else frame
    columns = [c for c in VIEW if c in shown and not (c == "dists_input" and shown[c].isna().all())]
    return shown[columns]


def legend(shown: pd.DataFrame) -> list[str]:
    """One line per metric column of `shown`: its name and a few words on what it means; and what `surviving` means
    at the sites of each kind whose activation is not ReLU's."""
    width = max((len(c) for c in shown if c in LEGEND), default=0)
    lines = [f"  {column:<{width}}  {LEGEND[column]}" for column in shown if column in LEGEND]
    kinds = dict.fromkeys(shown["kind"]) if "surviving" in shown and "kind" in shown else {}
    return lines + [f"  surviving at a {kind} site: {SURVIVING_AT[kind]}" for kind in kinds if kind in SURVIVING_AT]


def summary(frame: pd.DataFrame, model: str | None = None) -> list[str]:
    """How much of the input the first, the mid-depth and the last site hold (CKA with the image, and the read-out's
    R^2 where measured), and what to probe to compare; no lines without either column."""
    measures = [c for c in ("cka_input", "recon_r2") if c in frame and frame[c].notna().any()]
    if not measures or len(frame) < 2:
        return []
    rows = {"first site": frame.iloc[0], "mid-depth": frame.iloc[len(frame) // 2], "last site": frame.iloc[-1]}
    width = max(len(row["site"]) for row in rows.values())
    lines = [f"input left ({' / '.join(measures)}; about 0 is nothing left):"]
    lines += [f"  {name:<10}  {row['site']:<{width}}  {' / '.join(_number(row[c]) for c in measures)}"
              + ("  (a stage transition: the first block of a stage, strided)" if _transition(row["site"]) else "")
              for name, row in rows.items()]
    other = counterpart(model)
    if other:
        lines.append(f"compare: dissipate probe --model {other}")
    return lines


def _transition(site: str) -> bool:
    """Whether `site` is in the first block of a ResNet-layout stage after the first (`layer3.0.act2`): the block
    that halves the resolution and, in a residual net, has a strided 1x1 conv for a shortcut."""
    return re.search(r"(^|\.)layer([2-9]|\d{2,})\.0\.", site) is not None


def counterpart(model: str | None) -> str | None:
    """The registry model of the same depth in the family to compare with: plainN -> resnetN, resnetN -> plainN,
    pnnhN -> resnetN, and likewise for the ViTs (plainvitN -> vitN, ...); None for others."""
    match = re.fullmatch(r"([a-z]+)(\d+)", model or "")
    if not match or match[1] not in COUNTERPART:
        return None
    name = f"{COUNTERPART[match[1]]}{match[2]}"
    return name if name in list_models() else None


def _number(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"
