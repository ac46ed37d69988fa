"""The intervals and the verdict rule that decide the claims (dissipate.analyses._stats), on constructed inputs."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from dissipate.analyses._stats import (FAILS, HOLDS, MIN_SEEDS, OPEN, difference_interval, mean_interval,
                                       verdict)


def test_the_mean_interval_is_students_t_from_the_textbook_formula():
    values = [0.71, 0.74, 0.78, 0.73]
    mean, low, high = mean_interval(values)
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx((mean - half, mean + half), rel=1e-12)


def test_one_value_has_no_interval_and_equal_values_an_exact_one():
    assert math.isnan(mean_interval([0.5])[1]) and math.isnan(mean_interval([0.5])[2])
    assert mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert mean_interval([0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)  # a diverged run's NaN is left out


def test_the_difference_interval_is_welchs_and_exact_for_two_constant_sides():
    a, b = [0.80, 0.82, 0.85], [0.70, 0.71, 0.76, 0.74]
    difference, low, high = difference_interval(a, b)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert difference == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((difference - half, difference + half), rel=1e-9)
    assert difference_interval([0.7] * 3, [0.7] * 3) == (0.0, 0.0, 0.0)  # PNNH at its defaults against ResNet


@pytest.mark.parametrize("low, high, expected", [(0.01, 0.3, HOLDS), (-0.3, -0.01, FAILS), (-0.1, 0.2, OPEN),
                                                 (0.0, 0.2, OPEN)])
def test_a_difference_counts_when_its_interval_excludes_zero(low, high, expected):
    assert verdict(low, high, seeds=MIN_SEEDS) == expected


@pytest.mark.parametrize("low, high, expected", [(-0.004, 0.008, HOLDS), (-0.03, -0.02, FAILS), (0.02, 0.05, FAILS),
                                                 (-0.005, 0.02, OPEN), (-0.02, 0.02, OPEN)])
def test_on_par_means_the_interval_lies_within_the_margin(low, high, expected):
    assert verdict(low, high, seeds=5, test="on par", margin=0.01) == expected


@given(low=st.floats(-10, 10), width=st.floats(0, 10), seeds=st.integers(0, MIN_SEEDS - 1),
       test=st.sampled_from(["greater", "on par"]))
def test_too_few_seeds_are_inconclusive_never_holds(low, width, seeds, test):
    assert verdict(low, low + width, seeds, test, margin=1.0) == OPEN


def test_no_interval_is_inconclusive_and_a_reversed_one_or_unknown_test_is_refused():
    assert verdict(float("nan"), float("nan"), seeds=10) == OPEN
    with pytest.raises(ValueError, match="above its high end"):
        verdict(0.3, 0.1, seeds=3)
    with pytest.raises(ValueError, match="unknown test"):
        verdict(0.1, 0.3, seeds=3, test="less")
