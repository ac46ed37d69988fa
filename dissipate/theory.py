"""The dissipating-inputs theory in the form the project implements (docs/design.md, section 1), and its Monte
Carlo check.

The paper's text was not available in full: the statements below are rebuilt from its abstract and from reports of
it. The moments and the route through Cantelli's inequality are as reported; the exact symbols are ours. Code and
docs call them "Theorem 3.2" and "Theorem 3.3".

For one layer with input x (n neurons, all samples pooled: mean mu_x, variance var_x, second moment s2_x = E[x^2])
and weights W with i.i.d. N(0, 2/n) entries (He-normal), independent of x, and no bias:

- Theorem 3.2. Plain z = W x: E[z] = 0, Var[z] = 2 s2_x. Residual z = W x + x: E[z] = mu_x,
  Var[z] = 2 s2_x + var_x (the paper's "mean mu, variance 3 sigma^2" is the case mu_x = 0, where s2_x = var_x).
  Any sum of independent components: the mean is the sum of the means, the variance the sum of the variances.
- Theorem 3.3. For z with mean mu > 0 and variance var, Cantelli's inequality gives P(z > 0) >= mu^2 / (mu^2 + var).
  A plain layer has mu = 0 and no positive bound (each neuron survives with probability exactly 1/2, whatever the
  input). Conditional form, per residual neuron with x_i > 0: P(z_i > 0 | x) >= x_i^2 / (x_i^2 + 2 ||x||^2 / n).
- A PNNH layer z = W x + E^T (act(E x) - act(-E x)) = W x + E^T E x, with E (k x n) of orthonormal rows drawn at
  random: E^T E is a random rank-k projection whose expectation is (k/n) I, so the code component has mean r mu_x and
  variance r s2_x - r^2 mu_x^2 (r = k/n), and the layer is the residual one when r = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd
import torch

from .errors import InvalidArgumentError

LAYER_KINDS = ("plain", "residual", "pnnh")
INPUTS = ("relu-gaussian", "uniform", "laplace", "images")
MIN_WIDTH = 4  # measured: width 1 fails by chance at layer 3 (x = 0 often, z^2 heavy-tailed); 4 holds at seeds 0-3
MAX_WIDTH = 8192
MAX_SAMPLES, MAX_DRAWN = 1_000_000, 2 ** 27  # samples, and samples x width (a 512 MiB input): more does not fit
TOLERANCE_SE = 4.0  # Monte Carlo agreement: within this many standard errors (two-sided, ~6e-5 per comparison)


@dataclass(frozen=True)
class MeanVar:
    """Mean and variance of a pre-activation (pooled over neurons and samples)."""

    mean: float
    var: float


def sum_of_components(components: Iterable[MeanVar]) -> MeanVar:
    """Theorem 3.2's rule for a sum of independent components: means add, variances add."""
    parts = list(components)
    return MeanVar(sum(p.mean for p in parts), sum(p.var for p in parts))


def concatenation(parts: Iterable[tuple[MeanVar, int]]) -> MeanVar:
    """The pooled moments of parts laid side by side along the channels, (moments, channels) each: the mixture's
    mean is the channel-weighted mean, its variance the weighted second moment less the squared mean."""
    parts = list(parts)
    total = sum(n for _, n in parts)
    mean = sum(p.mean * n for p, n in parts) / total
    return MeanVar(mean, sum((p.var + p.mean ** 2) * n for p, n in parts) / total - mean ** 2)


def pair_component(s2_x: float) -> MeanVar:
    """The +/- pair [E x; -E x] for E of orthonormal rows (k <= n) at a random orientation: each of its 2k channels
    has second moment s2_x (E||E x||^2 = k/n E||x||^2, exactly ||x||^2 when k = n), and the pair's mean is 0."""
    return MeanVar(0.0, s2_x)


def weight_component(s2_x: float) -> MeanVar:
    """W x with He-normal W independent of x: mean 0, variance 2 s2_x (E[(W x)_i^2] = 2/n E||x||^2)."""
    return MeanVar(0.0, 2.0 * s2_x)


def identity_component(mu_x: float, var_x: float) -> MeanVar:
    return MeanVar(mu_x, var_x)


def coder_component(mu_x: float, s2_x: float, coder_ratio: float = 1.0) -> MeanVar:
    """E^T E x for a random E of orthonormal rows, k = coder_ratio * n: mean r mu_x, variance r s2_x - (r mu_x)^2."""
    r = coder_ratio
    return MeanVar(r * mu_x, r * s2_x - (r * mu_x) ** 2)


def predict_moments(kind: str, mu_x: float, var_x: float, s2_x: float, coder_ratio: float = 1.0) -> MeanVar:
    """Theorem 3.2: the pre-activation's mean and variance for a plain, residual or PNNH layer on input x."""
    if kind == "plain":
        return weight_component(s2_x)
    if kind == "residual":
        return sum_of_components([weight_component(s2_x), identity_component(mu_x, var_x)])
    if kind == "pnnh":
        return sum_of_components([weight_component(s2_x), coder_component(mu_x, s2_x, coder_ratio)])
    raise InvalidArgumentError(f"unknown layer kind {kind!r}; choose one of {', '.join(LAYER_KINDS)}")


COMPONENT_ROLES = ("branch", "identity", "coder", "weight", "pair")


def component_moments(role: str, mean: float, var: float, s2: float, coder_ratio: float = 1.0) -> MeanVar:
    """One measured part of a real layer's pre-activation, as Theorem 3.2 counts it: the branch and the identity
    as measured; the others from the moments of their input x: the coder's E^T E x (coder_component), a He-normal
    linear layer's W x (weight_component) and a code pair [E x; -E x] (pair_component)."""
    if role == "coder":
        return coder_component(mean, s2, coder_ratio)
    if role == "weight":
        return weight_component(s2)
    if role == "pair":
        return pair_component(s2)
    if role in ("branch", "identity"):
        return MeanVar(mean, var)
    raise InvalidArgumentError(f"unknown component role {role!r}; choose one of {', '.join(COMPONENT_ROLES)}")


def cantelli_bound(mean: float, var: float) -> float:
    """Theorem 3.3: a lower bound on P(z > 0) from z's mean and variance, mu^2 / (mu^2 + var) for mu > 0, else 0."""
    if not mean > 0:
        return 0.0
    return mean * mean / (mean * mean + var) if var > 0 else 1.0


def conditional_bound(x: torch.Tensor) -> torch.Tensor:
    """Theorem 3.3, per neuron of a residual layer given its input x (..., n): x_i^2 / (x_i^2 + 2 ||x||^2 / n) where
    x_i > 0, else 0."""
    spread = 2 * x.square().mean(-1, keepdim=True)  # 2 ||x||^2 / n, the variance of (W x)_i given x
    return torch.where(x > 0, x.square() / (x.square() + spread), torch.zeros_like(x))


@dataclass(frozen=True)
class MonteCarloConfig:
    """Level 1 of the bound-check: random layers, and stacks of them, over widths and input distributions."""

    kinds: tuple[str, ...] = LAYER_KINDS
    widths: tuple[int, ...] = (256,)  # n; "images" needs a square (16x16 crops at 256)
    depth: int = 3  # layers per stack; each is measured on the previous one's output (x <- relu(z))
    inputs: tuple[str, ...] = INPUTS
    samples: int = 1000  # independent draws of (x, W, E) per layer: the standard errors come from these
    coder_ratio: float = 1.0  # k / n of the PNNH layers
    seed: int = 0

    def __post_init__(self) -> None:
        for name, values, known in (("kinds", self.kinds, LAYER_KINDS), ("inputs", self.inputs, INPUTS)):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise InvalidArgumentError(f"Monte Carlo {name} must be among {', '.join(known)}, got {values}")
        checks = [("samples", 2 <= self.samples <= MAX_SAMPLES, f"from 2 (the standard errors need two) to "
                                                               f"{MAX_SAMPLES}"),
                  ("depth", self.depth >= 1, "at least 1"), ("coder_ratio", 0 < self.coder_ratio <= 1, "in (0, 1]"),
                  ("widths", bool(self.widths) and MIN_WIDTH <= min(self.widths) <= max(self.widths) <= MAX_WIDTH,
                   f"from {MIN_WIDTH} (narrower stacks of layers have moments too heavy-tailed for standard errors "
                   f"to judge) to {MAX_WIDTH} (each sample draws a width x width weight matrix)"),
                  ("widths", bool(self.widths) and max(self.widths) * self.samples <= MAX_DRAWN,
                   f"at most {MAX_DRAWN} neurons over all samples ({self.samples} samples here)")]
        for name, valid, rule in checks:
            if not valid:
                raise InvalidArgumentError(f"Monte Carlo {name} must be {rule}, got {getattr(self, name)}")
        if "images" in self.inputs and any(round(w ** 0.5) ** 2 != w for w in self.widths):
            raise InvalidArgumentError(f"images as inputs need square widths (16x16 = 256), got {self.widths}")


def draw_inputs(name: str, samples: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(samples, width) layer inputs, each with a positive mean (as activations and pixels have):
    relu-gaussian relu(N(0, 1)); uniform U(0, 1); laplace Laplace(1, 1) (both signs); images: 16x16 (for width 256)
    grey crops of the probe's synthetic dead-leaves images, pixels in [0, 1]."""
    if name == "relu-gaussian":
        return torch.randn(samples, width, generator=generator).clamp_min(0)
    if name == "uniform":
        return torch.rand(samples, width, generator=generator)
    if name == "laplace":
        u = torch.rand(samples, width, generator=generator) - 0.5
        return 1.0 - u.sign() * torch.log1p(-2 * u.abs())  # inverse CDF of Laplace(1, 1)
    if name == "images":
        side = int(round(width ** 0.5))
        if side * side != width:
            raise InvalidArgumentError(f"images as inputs need a square width (16x16 = 256), got {width}")
        from .data import DeadLeaves

        leaves = DeadLeaves(samples, image_size=2 * side, seed=int(torch.randint(2 ** 31, (1,), generator=generator)))
        corner = torch.randint(side + 1, (samples, 2), generator=generator)
        grey = leaves.draw(range(samples))[0].mean(1)
        crops = [grey[i, r:r + side, c:c + side] for i, (r, c) in enumerate(corner.tolist())]
        return torch.stack(crops).reshape(samples, width)
    raise InvalidArgumentError(f"unknown input distribution {name!r}; choose one of {', '.join(INPUTS)}")


def random_layer(kind: str, x: torch.Tensor, generator: torch.Generator, coder_ratio: float = 1.0) -> torch.Tensor:
    """Pre-activations z (samples, n) of one random layer per sample: fresh He-normal W (and, for PNNH, a fresh E of
    orthonormal rows), as the theorems assume. The PNNH code really crosses the ReLU: E^T (relu(E x) - relu(-E x))."""
    samples, width = x.shape
    z = torch.empty_like(x)
    chunk = max(1, 2 ** 24 // width ** 2)  # (chunk, n, n) weights at a time
    for start in range(0, samples, chunk):
        part = x[start:start + chunk]
        weights = torch.randn(len(part), width, width, generator=generator) * (2.0 / width) ** 0.5
        out = torch.bmm(weights, part[:, :, None])[:, :, 0]  # W x
        if kind == "residual":
            out = out + part
        elif kind == "pnnh":
            k = max(1, round(coder_ratio * width))
            # a fresh E per sample; with k = n, E^T E = I whatever E is, so one E per chunk is the same in distribution
            draws = len(part) if k < width else 1
            basis, _ = torch.linalg.qr(torch.randn(draws, width, k, generator=generator))  # E^T: (n, k)
            basis = basis.expand(len(part), width, k)
            code = torch.bmm(basis.transpose(1, 2), part[:, :, None])  # E x: (chunk, k, 1)
            out = out + torch.bmm(basis, code.clamp_min(0) - (-code).clamp_min(0))[:, :, 0]
        elif kind != "plain":
            raise InvalidArgumentError(f"unknown layer kind {kind!r}; choose one of {', '.join(LAYER_KINDS)}")
        z[start:start + len(part)] = out
    return z


def measured_moments(z: torch.Tensor) -> dict[str, float]:
    """Pooled mean, variance and surviving fraction of z (samples, n), with standard errors from the spread of the
    per-sample values (samples are independent; neurons within one sample are not); delta method for the variance."""
    per_sample = torch.stack([z.mean(1), z.square().mean(1), (z > 0).double().mean(1)], dim=1).double()
    count = len(per_sample)
    mean, second, surviving = per_sample.mean(0).tolist()
    covariance = torch.cov(per_sample[:, :2].T) / count
    gradient = torch.tensor([-2 * mean, 1.0], dtype=torch.float64)  # d(second - mean^2)
    return {"mu_meas": mean, "mu_se": covariance[0, 0].sqrt().item(), "var_meas": second - mean * mean,
            "var_se": (gradient @ covariance @ gradient).sqrt().item(), "surv_meas": surviving,
            "surv_se": per_sample[:, 2].std().item() / count ** 0.5}


def monte_carlo_holds(kind: str, predicted: MeanVar, measured: dict[str, float], bound: float,
                      nonzero: float = 1.0) -> bool:
    """Level 1 passes a layer when the measured mean and variance are within TOLERANCE_SE standard errors of
    Theorem 3.2, the surviving fraction is at or above Theorem 3.3's bound, and, for a plain layer, the surviving
    fraction is 1/2 P(x != 0) within TOLERANCE_SE standard errors (`nonzero`: the fraction of inputs that are not
    all zero; an all-zero x gives z = 0, which does not survive)."""
    within = (abs(measured["mu_meas"] - predicted.mean) <= TOLERANCE_SE * measured["mu_se"]
              and abs(measured["var_meas"] - predicted.var) <= TOLERANCE_SE * measured["var_se"])
    half = kind != "plain" or abs(measured["surv_meas"] - nonzero / 2) <= TOLERANCE_SE * measured["surv_se"]
    return bool(within and half and measured["surv_meas"] >= bound)


def monte_carlo(config: MonteCarloConfig | None = None) -> pd.DataFrame:
    """Level 1: for each layer kind, width, input distribution and depth in a stack, Theorem 3.2's predicted moments
    (from the measured moments of that layer's input) against the measured ones, and the measured surviving fraction
    against Theorem 3.3's bound. One row per layer; `holds` as `monte_carlo_holds` decides: a False is a bug."""
    config = config or MonteCarloConfig()
    generator = torch.Generator().manual_seed(config.seed)
    rows = []
    for kind in config.kinds:
        for width in config.widths:
            for name in config.inputs:
                x = draw_inputs(name, config.samples, width, generator)
                for layer in range(1, config.depth + 1):
                    pooled = x.double()
                    mu_x, s2_x = pooled.mean().item(), pooled.square().mean().item()
                    predicted = predict_moments(kind, mu_x, s2_x - mu_x ** 2, s2_x, config.coder_ratio)
                    z = random_layer(kind, x, generator, config.coder_ratio)
                    measured = measured_moments(z)
                    bound = cantelli_bound(predicted.mean, predicted.var)
                    rows.append({"level": "monte-carlo", "model": f"{kind}-w{width}", "site": f"{name}/layer{layer}",
                                 "kind": kind, "mu_pred": predicted.mean, "var_pred": predicted.var, **measured,
                                 "surv_bound": bound, "margin": measured["surv_meas"] - bound,
                                 "holds": monte_carlo_holds(kind, predicted, measured, bound,
                                                            nonzero=(x != 0).any(1).double().mean().item())})
                    x = z.clamp_min(0)
    columns = ["level", "model", "site", "kind", "mu_pred", "mu_meas", "mu_se", "var_pred", "var_meas", "var_se",
               "surv_meas", "surv_se", "surv_bound", "holds", "margin"]
    return pd.DataFrame(rows, columns=columns)
