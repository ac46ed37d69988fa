"""The bound-check (docs/design.md, section 1): Theorem 3.2's moments and Theorem 3.3's bound against measurement.

Three levels, named in every row's `level`:
- "monte-carlo": random layers (`theory.monte_carlo`); a row that does not hold is a bug.
- "init": a real network at initialisation; the theorems' assumptions hold, so its bounds must hold too.
- "trained": a trained network; the assumptions no longer hold, so a bound that fails is a finding, not an error.

For a real network each site's prediction is the sum of the measured moments of the parts its block declares (the
branch and the shortcut, or the branch and the coder), as the probe's `theory` metrics compute it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from .data import ImageData
from .errors import InvalidArgumentError
from .probe import ProbeConfig, Progress, probe
from .theory import MonteCarloConfig, monte_carlo

COLUMNS = ("level", "model", "site", "kind", "mu_pred", "mu_meas", "var_pred", "var_meas", "surv_meas", "surv_bound",
           "holds", "margin")
LEVELS = ("monte-carlo", "init", "trained")
MUST_HOLD = ("monte-carlo", "init")  # a row of these levels that does not hold fails the check (exit code 1)
# Theorem 3.2's variance in a real net: var_meas / var_pred within [1 / VAR_TOLERANCE, VAR_TOLERANCE]. Measured at
# initialisation (resnet20/56/18/50, pnnh20/56/18, seeds 0 and 1, 128 synthetic images): 0.89 to 1.08.
VAR_TOLERANCE = 4 / 3

# what each column of the table means, in a few words (the CLI prints it under the table)
LEGEND = {
    "level": "monte-carlo: random layers drawn afresh; init: a net at initialisation; trained: a net with loaded "
             "weights, whose violations are findings, not failures",
    "mu_pred": "Theorem 3.2's mean of the pre-activation, from the measured moments of the site's declared parts",
    "mu_meas": "the measured mean of the pre-activation",
    "var_pred": "Theorem 3.2's variance, likewise; var_meas is the measured one",
    "surv_meas": "the measured fraction of pre-activations > 0",
    "surv_bound": "Theorem 3.3's lower bound on that fraction (Cantelli's, from mu_pred and var_pred)",
    "holds": f"surv_meas >= surv_bound and var_meas within x{VAR_TOLERANCE:.3g} of var_pred; n/a: the site's block declares no "
             "parts (a plain layer), so nothing is predicted",
    "margin": "surv_meas - surv_bound; at or above 0 where the bound holds",
}


def legend() -> list[str]:
    """One line per column of the table that needs a word: its name and what it means."""
    width = max(map(len, LEGEND))
    return [f"  {column:<{width}}  {meaning}" for column, meaning in LEGEND.items()]
# the site kinds whose activation Theorems 3.2 and 3.3 (about ReLU, which kills one half) do not describe, and why
NOT_APPLICABLE = {
    "tat": "TAT's leaky ReLU passes both signs, so no neuron dies",
    "dks": "a DKS-transformed smooth activation has no dead half",
    "iso": "SReLU, max(x, b), cuts at its learned threshold b (-1 at initialisation), not at 0",
    "ll": "a CReLU keeps both halves, relu(x) and relu(-x), so nothing dies",
    "dirac": "NCReLU keeps both halves, max(x, 0) and min(x, 0), so nothing dies",
}
NOT_AN_ACTIVATION = "they are not activations (attention and block outputs)"


def check_monte_carlo(config: MonteCarloConfig | None = None) -> pd.DataFrame:
    """Level 1: `theory.monte_carlo`'s rows, with their standard errors (mu_se, var_se, surv_se) after COLUMNS."""
    frame = monte_carlo(config)
    return frame[[*COLUMNS, *(c for c in frame.columns if c not in COLUMNS)]]


def check_network(model: nn.Module, data: ImageData | str = "synthetic", config: ProbeConfig | None = None,
                  level: str | None = None, progress: Progress | None = None, **overrides) -> pd.DataFrame:
    """Levels 2 and 3: one row per activation site of `model` on `data` (probe settings from `config` and
    `overrides`). `level` is "init" or "trained"; by default the one `network_level` reads off the model, and the
    table's attrs say which and why (`level_reason`). See `check_rows` for when a row holds."""
    if level not in (None, *LEVELS[1:]):
        raise InvalidArgumentError(f"a network is checked at level 'init' or 'trained', not {level!r}")
    level, reason = (level, "named by the caller") if level else network_level(model)
    frame = probe(model, data, config, progress, **{**overrides, "metrics": ("survival", "moments", "theory")})
    table = check_rows(frame, level)
    table.attrs["level_reason"] = reason
    return table


def network_level(model: nn.Module) -> tuple[str, str]:
    """("init" or "trained", why): what the net is, not how it is normalised. A net is trained once weights were
    loaded into it (any `load_state_dict` into a model that `create_model` made, which records it) or its batch norm
    has seen a batch in training mode; else it is at initialisation, where every bound must hold. A model that
    `create_model` did not make, with no batch norm that has seen data, records nothing: its level must be named.

    The default is the net, not a guess from batch norm (the first version's rule), since a net without it (a ViT,
    a normaliser-free remedy) would otherwise reach the trained level at initialisation and pass whatever it
    measured. A net trained in the caller's own loop without batch norm has no record either way: name its level."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.num_batches_tracked is not None]
    if any(int(m.num_batches_tracked) > int(getattr(m, "calibration_batches", 0)) for m in norms):  # past a probe's
        return "trained", "its batch norm has seen data in training mode"  # calibration, which is not training
    if getattr(model, "weights_loaded", None) is None:
        raise InvalidArgumentError(f"{type(model).__name__} was not made by create_model, so nothing records whether "
                                   "weights were loaded into it; pass level='init' or level='trained'")
    if model.weights_loaded:
        return "trained", "weights were loaded into it"
    return "init", "no weights were loaded into it and no batch norm has seen data"


def check_rows(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """The bound-check rows of a probe frame that has the survival, moments and theory columns (any probe with
    those families, such as a cached one): one per site, at `level`. A row holds when the measured surviving fraction
    is at or above the bound predicted from the site's parts (`margin` is the difference) and the measured variance
    is Theorem 3.2's within VAR_TOLERANCE; `holds` is NA (no prediction) where the site's block declares no parts."""
    table = pd.DataFrame({"level": level, "model": frame.attrs.get("model", ""), "site": frame["site"],
                          "kind": frame["kind"], "mu_pred": frame["mu_pred"], "mu_meas": frame["pre_mean"],
                          "var_pred": frame["var_pred"], "var_meas": frame["pre_var"],
                          "surv_meas": frame["surviving"], "surv_bound": frame["surv_bound"]})
    table["margin"] = table["surv_meas"] - table["surv_bound"]
    ratio = table["var_meas"] / table["var_pred"]
    holds = (table["margin"] >= 0) & ratio.between(1 / VAR_TOLERANCE, VAR_TOLERANCE)
    broken = ~np.isfinite(table["mu_meas"]) & table["mu_meas"].notna() | _non_finite(frame)
    table["holds"] = holds.astype("boolean").mask(table["mu_pred"].isna()).mask(broken, False)
    table.attrs.update(frame.attrs)
    return table[list(COLUMNS)]


def inapplicable(frame: pd.DataFrame) -> pd.Series:
    """Why the theorems do not apply at each row, "" where they do: a declared site that is not an activation, or an
    activation they do not describe (NOT_APPLICABLE). Such rows have no prediction, and can neither hold nor fail."""
    reasons = frame["kind"].map(NOT_APPLICABLE).fillna("")
    # a declared output has measured moments and no surviving fraction; a non-finite site has neither, and fails
    not_activation = frame["surv_meas"].isna() & frame["mu_meas"].notna() & frame["level"].ne("monte-carlo")
    return reasons.mask(not_activation & reasons.eq(""), NOT_AN_ACTIVATION).mask(not_holding(frame), "")


def _non_finite(frame: pd.DataFrame) -> pd.Series:
    """The sites whose pre-activations were NaN or infinite (the probe gives their moments as NaN, with a note):
    a net that computes no numbers there meets no bound."""
    return frame["pre_mean"].isna() & frame["pre_var"].isna() & frame["surviving"].isna()


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail the check: bounds of the must-hold levels that do not hold."""
    return frame[frame["level"].isin(MUST_HOLD) & not_holding(frame)]


def findings(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of trained networks whose bound does not hold: findings about training, not failures."""
    return frame[(frame["level"] == "trained") & not_holding(frame)]


def verdicts(frame: pd.DataFrame) -> pd.Series:
    """`holds` as a nullable boolean: True, False, or NA for no prediction (also as read back from a CSV)."""
    return frame["holds"].astype("boolean")


def not_holding(frame: pd.DataFrame) -> pd.Series:
    """True for the rows whose check fails (False where it holds or makes no prediction)."""
    return verdicts(frame).eq(False).fillna(False).astype(bool)
