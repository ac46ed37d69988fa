"""Figure 2, the theory against measurement: Theorem 3.3's bound on the surviving fraction, and Theorem 3.2's
predicted mean and variance of each pre-activation, against what was measured.

Three levels (as `dissipate bound-check`): random layers (Monte Carlo), nets at initialisation, trained nets. The
network levels reuse the probes of the dissipation curves, which carry the survival, moments and theory columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..bound_check import COLUMNS as CHECK_COLUMNS
from ..bound_check import VAR_TOLERANCE, check_monte_carlo, check_rows, verdicts
from ..plots import FAMILY_COLOURS, FAMILY_LABELS, KIND_FAMILY, caption_line, finish_figure, plain_log_axis
from ..theory import MonteCarloConfig
from ._common import (COMPARED, COMPARED_DEPTHS, Context, Variant, family_models, identical_families,
                      identical_note)

NAME = "theory_check"
DESCRIPTION = "Theorem 3.3's survival bound and Theorem 3.2's moments against measurement, at three levels"
COLUMNS = ("preset", "dataset", "family", "model_depth", *CHECK_COLUMNS, "mu_se", "var_se", "surv_se")
LEVEL_TITLES = {"monte-carlo": "random layers (Monte Carlo)", "init": "nets at initialisation",
                "trained": "trained nets"}


@dataclass(frozen=True)
class Settings:
    monte_carlo: MonteCarloConfig
    init: tuple[Variant, ...]
    trained: tuple[Variant, ...]


PRESETS = {
    "smoke": Settings(MonteCarloConfig(widths=(64,), samples=50, depth=2), family_models(COMPARED, (20,)),
                      family_models(COMPARED, (20,))),
    "cpu": Settings(MonteCarloConfig(), family_models(COMPARED, COMPARED_DEPTHS),
                    family_models(COMPARED, COMPARED_DEPTHS)),
    "paper": Settings(MonteCarloConfig(widths=(256, 1024), samples=4000), family_models(COMPARED, COMPARED_DEPTHS),
                      family_models(COMPARED, COMPARED_DEPTHS)),
}
PRESETS["gpu"] = PRESETS["cpu"]  # the cpu preset's nets, trained on all of Fashion-MNIST


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    settings = PRESETS[preset]
    return [(v, "init") for v in settings.init] + [(v, "trained") for v in settings.trained]


def plan(preset: str) -> list[str]:
    mc = PRESETS[preset].monte_carlo
    return [f"Monte Carlo: {len(mc.kinds)} layer kinds x {len(mc.inputs)} inputs x {mc.depth} stacked layers, widths "
            f"{', '.join(map(str, mc.widths))}, {mc.samples} draws each"]


def compute(ctx: Context) -> pd.DataFrame:
    settings = PRESETS[ctx.preset]
    ctx.say("Monte Carlo: random layers against the theorems")
    frames = [check_monte_carlo(settings.monte_carlo).assign(preset=ctx.preset, dataset="random layers")]
    for variant, state in probes(ctx.preset):
        table = ctx.probe_table(variant, state)
        if table is None:  # a run that diverged has no trained net to check
            continue
        rows = check_rows(table, state).assign(model=variant.label, preset=ctx.preset,
                                               dataset=table["dataset"].iloc[0], family=variant.family,
                                               model_depth=variant.depth)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True).reindex(columns=list(COLUMNS))


def draw(frame: pd.DataFrame) -> Figure:
    levels = [level for level in LEVEL_TITLES if (frame["level"] == level).any()]
    figure = Figure(figsize=(13, 3.4 * len(levels) + 0.6), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(levels), 3, squeeze=False))
    for row, level in enumerate(levels):
        rows = frame[frame["level"] == level]
        families = rows["kind"].map(KIND_FAMILY).fillna("unknown")
        survival, mean, variance = axes[row]
        random_layers = level == "monte-carlo"  # in nets, the predicted mean is the measured one by construction
        pairs = [(survival, "surv_bound", "surv_meas"), (variance, "var_pred", "var_meas")]
        if random_layers:
            pairs.insert(1, (mean, "mu_pred", "mu_meas"))
        else:
            _draw_variance_ratio(mean, rows, families)
        shown = {}  # each panel's drawn rows: a site with half a pair is not drawn, nor counted
        for axis, x, y in pairs:
            drawn = shown[axis] = _drawn(rows, x, y, log=axis is variance)
            _scatter(axis, rows[drawn], families[drawn], x, y)
            values = rows.loc[drawn, [x, y]].to_numpy()
            low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
            axis.plot([low, high], [low, high], color="black", linewidth=0.8,
                      label="measured = bound" if x == "surv_bound" else "measured = predicted")
            axis.grid(alpha=0.3)
        bounds = shown[survival]
        failed = rows[bounds & (rows["margin"] < 0)]
        if len(failed):
            survival.scatter(failed["surv_bound"], failed["surv_meas"], s=70, facecolors="none", edgecolors="crimson",
                             label=f"below the bound ({len(failed)})")
        survival.set_xlabel("Theorem 3.3 bound (fraction of units)")
        survival.set_ylabel("measured surviving (fraction of units)")
        survival.set_title(f"{LEVEL_TITLES[level]}: {int(bounds.sum()) - len(failed)} of {int(bounds.sum())} sites "
                           "on or above the bound", fontsize=9)
        if random_layers:
            mean.set_xlabel("predicted mean (pre-activation units)")
            mean.set_ylabel("measured mean (pre-activation units)")
            mean.set_title(f"Theorem 3.2: mean, {int(shown[mean].sum())} sites", fontsize=9)
        _fit_log(variance, rows.loc[shown[variance], ["var_pred", "var_meas"]], ("x", "y"))
        variance.set_xlabel("predicted variance (squared units, log)")
        variance.set_ylabel("measured variance (squared units, log)")
        variance.set_title(f"Theorem 3.2: variance, {int(shown[variance].sum())} sites", fontsize=9)
        survival.set_xlim(-0.02, 1.02)
        survival.set_ylim(-0.02, 1.02)
        survival.legend(fontsize=7, loc="lower right")
    nets = frame[frame["level"] != "monte-carlo"]
    detail = f"{nets['model'].nunique()} nets; one dot per activation site with a prediction"
    predicted = _drawn(nets, "surv_bound", "surv_meas")
    if not predicted.all():
        detail += f" ({int((~predicted).sum())} sites of the nets have none, the plain nets' among them)"
    same = identical_families(nets[predicted], ("level", "model_depth", "site"), ("surv_meas", "var_meas", "var_pred"))
    note = identical_note(same, marks="dots", under="the rings")
    return finish_figure(figure, "The theory against measurement, site by site",
                         caption_line(frame, detail + (f"\n{note}" if note else "")))


def _drawn(rows: pd.DataFrame, x: str, y: str, log: bool = False) -> pd.Series:
    """The rows with a point to draw at (`x`, `y`): both finite, and on a log axis both positive."""
    values = rows[[x, y]].apply(pd.to_numeric, errors="coerce")
    finite = np.isfinite(values).all(axis=1)
    return finite & (values > 0).all(axis=1) if log else finite


def _scatter(axis, rows: pd.DataFrame, families: pd.Series, x: str, y: str) -> None:
    """One dot per row in its family's colour; ResNet's as a ring, since PNNH's dots (the same function at its
    defaults) would hide them."""
    for family, group in rows.groupby(families, sort=False):
        ring = family == "resnet"
        colour = FAMILY_COLOURS.get(family, "#2ca02c")
        axis.scatter(group[x], group[y], s=40 if ring else 12, alpha=0.8 if ring else 0.7, linewidths=1,
                     facecolors="none" if ring else colour, edgecolors=colour, gid=family, zorder=2 if ring else 2.5,
                     label=f"{FAMILY_LABELS.get(family, family)} site" + (" (ring)" if ring else ""))


def _fit_log(axis, values: pd.DataFrame, which: tuple[str, ...]) -> None:
    """Log axes `which` that fit the drawn `values` (all positive): their range and a margin, no more, the same on
    each axis so that a diagonal is one."""
    if len(values):
        low, high = float(values.min().min()), float(values.max().max())
        for name in which:
            getattr(axis, f"set_{name}lim")(low / 1.15, high * 1.15)
    for name in which:
        plain_log_axis(axis, name)


def _draw_variance_ratio(axis, rows: pd.DataFrame, families: pd.Series) -> None:
    """Measured over predicted variance per site, against the prediction, with level 2's tolerance band: in a net,
    what Theorem 3.2 can get wrong (its mean is summed from measured parts, so it agrees by construction). Sites
    outside the band are ringed in red, and the title counts the sites drawn and those within it."""
    drawn = _drawn(rows, "var_pred", "var_meas", log=True)  # sites with no prediction have no ratio
    ratio = rows.loc[drawn, "var_meas"] / rows.loc[drawn, "var_pred"]
    axis.axhspan(1 / VAR_TOLERANCE, VAR_TOLERANCE, color="0.9", zorder=0,
                 label=f"tolerance (x{VAR_TOLERANCE:.3g} either way)")
    axis.axhline(1, color="black", linewidth=0.8, label="measured = predicted")
    _scatter(axis, rows[drawn].assign(ratio=ratio), families[drawn], "var_pred", "ratio")
    outside = ~ratio.between(1 / VAR_TOLERANCE, VAR_TOLERANCE)
    if outside.any():
        axis.scatter(rows.loc[ratio.index[outside], "var_pred"], ratio[outside], s=90, facecolors="none",
                     edgecolors="crimson", label=f"outside the tolerance ({int(outside.sum())})", zorder=3)
    _fit_log(axis, rows.loc[drawn, ["var_pred"]], ("x",))
    axis.set_xlabel("predicted variance (squared units, log)")
    axis.set_ylabel("measured / predicted variance (ratio)")
    axis.set_title(f"Theorem 3.2: variance ratio, {int((~outside).sum())} of {len(ratio)} sites within "
                   f"x{VAR_TOLERANCE:.3g}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")


def headline(frame: pd.DataFrame) -> list[str]:
    lines = []
    for level, rows in frame.groupby("level", sort=False):
        ratio = (rows["var_meas"] / rows["var_pred"]).dropna()  # sites with no prediction have no ratio
        bounds, verdict = rows["margin"].dropna(), verdicts(rows)
        lines.append(f"{level}: {int((bounds >= 0).sum())} of {len(bounds)} bounds hold, and {int(verdict.sum())} of "
                     f"{int(verdict.notna().sum())} sites with the variance too; smallest margin "
                     f"{rows['margin'].min():.3f}; measured/predicted variance {ratio.min():.2f} to {ratio.max():.2f}")
    return lines
