import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dissipate import theory
from dissipate.errors import InvalidArgumentError
from dissipate.theory import MeanVar, MonteCarloConfig, cantelli_bound, conditional_bound, monte_carlo, predict_moments

FAST = MonteCarloConfig(kinds=("residual",), inputs=("uniform",), depth=1, samples=1000)


def test_theorem_3_2_in_its_general_and_special_form():
    assert predict_moments("plain", 0.4, 0.3, 0.46) == MeanVar(0.0, 0.92)
    assert predict_moments("residual", 0.4, 0.3, 0.46) == MeanVar(0.4, pytest.approx(2 * 0.46 + 0.3))
    special = predict_moments("residual", 0.0, 1.5, 1.5)  # mu_x = 0: "mean mu, variance 3 sigma^2"
    assert special == MeanVar(0.0, pytest.approx(3 * 1.5))
    assert predict_moments("pnnh", 0.4, 0.3, 0.46) == predict_moments("residual", 0.4, 0.3, 0.46)  # k = n
    half = predict_moments("pnnh", 0.4, 0.3, 0.46, coder_ratio=0.5)
    assert half == MeanVar(0.2, pytest.approx(2 * 0.46 + 0.5 * 0.46 - 0.2 ** 2))
    with pytest.raises(InvalidArgumentError, match="unknown layer kind 'dense'"):
        predict_moments("dense", 0, 1, 1)


def test_a_real_layers_components_count_as_measured_and_the_coder_from_its_input():
    assert theory.component_moments("branch", -0.1, 1.0, 1.01) == MeanVar(-0.1, 1.0)
    assert theory.component_moments("identity", 0.4, 0.3, 0.46) == MeanVar(0.4, 0.3)
    assert theory.component_moments("coder", 0.4, 0.3, 0.46) == MeanVar(0.4, pytest.approx(0.3))  # k = C: E^T E = I
    assert theory.component_moments("coder", 0.4, 0.3, 0.46, 0.5) == theory.coder_component(0.4, 0.46, 0.5)
    with pytest.raises(InvalidArgumentError, match="unknown component role 'skip'"):
        theory.component_moments("skip", 0, 1, 1)


def test_monte_carlo_agrees_with_theorems_3_2_and_3_3():
    """Width 256, 1000 samples, every kind and input distribution, stacks of 3 layers: each measured mean and
    variance within 4 standard errors (computed from the samples) of the prediction, each surviving fraction at or
    above the bound, and a plain layer's surviving fraction 1/2 within 4 standard errors."""
    frame = monte_carlo()
    assert len(frame) == 3 * 4 * 3 and frame["holds"].all()
    assert ((frame["mu_meas"] - frame["mu_pred"]).abs() <= 4 * frame["mu_se"]).all()
    assert ((frame["var_meas"] - frame["var_pred"]).abs() <= 4 * frame["var_se"]).all()
    assert (frame["surv_meas"] >= frame["surv_bound"]).all()
    plain = frame[frame["kind"] == "plain"]
    assert ((plain["surv_meas"] - 0.5).abs() <= 4 * plain["surv_se"]).all() and (plain["surv_bound"] == 0).all()
    shifted = frame[frame["kind"] != "plain"]
    assert (shifted["surv_bound"] > 0.1).all() and (shifted["surv_meas"] > 0.6).all()


def test_a_wrong_prediction_fails_the_check(monkeypatch):
    """The check can fail: a variance rule off by a quarter (2.5 s2_x instead of 2 s2_x) is caught."""
    assert monte_carlo(FAST)["holds"].all()
    monkeypatch.setattr(theory, "weight_component", lambda s2_x: MeanVar(0.0, 2.5 * s2_x))
    assert not monte_carlo(FAST)["holds"].any()


def test_pnnh_with_a_narrow_coder():
    frame = monte_carlo(MonteCarloConfig(kinds=("pnnh",), inputs=("relu-gaussian",), depth=2, coder_ratio=0.5))
    assert frame["holds"].all()


ratios = st.floats(0.01, 100.0)


@settings(max_examples=200, deadline=None)
@given(mean=st.floats(-1e3, 1e3), var=st.floats(1e-6, 1e6))
def test_the_bound_lies_in_zero_one(mean, var):
    assert 0 <= cantelli_bound(mean, var) < 1


def test_the_bound_is_zero_without_a_positive_mean():
    assert cantelli_bound(0.0, 1.0) == 0 and cantelli_bound(-2.0, 1.0) == 0


@settings(max_examples=200, deadline=None)
@given(a=ratios, b=ratios, sigma=st.floats(1e-3, 1e3))
def test_the_bound_increases_with_mean_over_sigma(a, b, sigma):
    low, high = sorted((a, b))
    assert cantelli_bound(low * sigma, sigma ** 2) <= cantelli_bound(high * sigma, sigma ** 2)


@settings(max_examples=200, deadline=None)
@given(t=ratios, scale=st.floats(1e-3, 1e3))
def test_p_positive_is_at_least_the_bound_for_distributions_with_exact_moments(t, scale):
    """mean = t * sigma > 0 for each distribution, its P(z > 0) in closed form."""
    sigma = scale
    mean = t * sigma
    bound = cantelli_bound(mean, sigma ** 2)
    gaussian = stats.norm(mean, sigma).sf(0)
    laplace = stats.laplace(mean, sigma / math.sqrt(2)).sf(0)  # variance 2 b^2
    half_width = sigma * math.sqrt(3)  # uniform on mean +- sqrt(3) sigma
    uniform = stats.uniform(mean - half_width, 2 * half_width).sf(0)
    # two-point: P(z = mean + sigma q) = p, P(z = mean - sigma / q) = 1 - p with q = sqrt((1 - p) / p), which has the
    # stated mean and variance; p = bound puts the low point at exactly 0, where Cantelli's bound is attained
    p = max(bound, 1e-12)
    q = math.sqrt((1 - p) / p)
    low = mean - sigma / q
    two_point = p + (1 - p) * (low > 0)
    for probability in (gaussian, laplace, uniform, two_point):
        assert probability >= bound - 1e-12


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 16), width=st.integers(4, 512))
def test_the_conditional_bound_is_below_the_exact_conditional_probability(seed, width):
    """Given x, (W x)_i ~ N(0, 2 ||x||^2 / n) exactly, so P(z_i > 0 | x) = Phi(x_i / sqrt(2 ||x||^2 / n))."""
    x = torch.randn(width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = stats.norm.cdf((x / (2 * x.square().mean()).sqrt()).numpy())
    bound = conditional_bound(x).numpy()
    assert (bound <= exact + 1e-12).all() and (bound[x.numpy() <= 0] == 0).all()


def test_the_conditional_bound_holds_for_sampled_weights():
    x = torch.randn(256, dtype=torch.float64).clamp_min(0) + 0.05
    weights = torch.randn(4000, 256, 256, dtype=torch.float32) * math.sqrt(2 / 256)
    survived = ((weights @ x.float()) + x.float() > 0).double()  # (draws, n)
    se = survived.std(0) / math.sqrt(len(survived))
    assert (survived.mean(0) >= conditional_bound(x) - 4 * se - 1e-9).all()


def test_inputs_have_a_positive_mean_and_images_need_a_square_width():
    generator = torch.Generator().manual_seed(0)
    for name in theory.INPUTS:
        x = theory.draw_inputs(name, 64, 256, generator)
        assert x.shape == (64, 256) and x.mean() > 0 and np.isfinite(x.numpy()).all()
    with pytest.raises(InvalidArgumentError, match="square width"):
        theory.draw_inputs("images", 4, 200, generator)


def test_a_plain_layer_survives_at_half_the_rate_of_nonzero_inputs():
    """At width 4 a ReLU'd Gaussian input is all zero with probability 1/16, and then z = W x = 0 does not survive:
    the surviving fraction is 1/2 P(x != 0), about 0.47, not 1/2 (4000 samples: 1/2 is 4 standard errors off)."""
    frame = monte_carlo(MonteCarloConfig(kinds=("plain",), widths=(4,), inputs=("relu-gaussian",), depth=1,
                                         samples=4000))
    assert frame["surv_meas"].iloc[0] == pytest.approx(15 / 32, abs=0.02) and frame["holds"].all()


def test_monte_carlo_widths_below_four_are_refused():
    with pytest.raises(InvalidArgumentError, match="widths must be from 4"):
        MonteCarloConfig(widths=(1,))
