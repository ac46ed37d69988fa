"""Means, 95% intervals, and the rule that turns them into a claim's verdict (docs/design.md, section 6).

A preset runs each comparison that decides a claim at several seeds (--seeds). A seed's run is one draw; the
interval says how far the mean of such draws may be from the mean that many more seeds would give:

    mean_interval([0.74, 0.76, 0.75])          # (0.75, 0.725, 0.775): Student's t, 2 degrees of freedom
    difference_interval(a, b)                   # mean(a) - mean(b) and Welch's interval for it
    verdict(low, high, seeds=3)                 # "holds" when the interval of the difference excludes 0 above it
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

LEVEL = 0.95  # the intervals' confidence
MIN_SEEDS = 3  # fewer seeds than this decide nothing: the verdict is "inconclusive", whatever the interval
HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive at this scale"
VERDICTS = (HOLDS, FAILS, OPEN)


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float)
    return x[np.isfinite(x)]


def mean_interval(values: Iterable[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the finite `values`: their mean and its 95% Student-t interval. The bounds are NaN for
    fewer than two values (one draw has no spread to measure) and equal the mean when every value is the same."""
    x = _finite(values)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    if np.ptp(x) == 0:
        return mean, mean, mean
    from scipy import stats  # on first use: scipy.stats takes most of a second to import, at every command's start

    interval = stats.ttest_1samp(x, 0.0).confidence_interval(LEVEL)
    return mean, float(interval.low), float(interval.high)


def difference_interval(a: Iterable[float], b: Iterable[float]) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): the difference of two independent samples' means (runs of two nets, seed by
    seed, are not pairs) and its 95% Welch interval. NaN bounds when either side has fewer than two finite values;
    when both sides are constant (two nets that compute one function), the difference is exact."""
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan, math.nan
    difference = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return difference, math.nan, math.nan
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return difference, difference, difference
    from scipy import stats

    interval = stats.ttest_ind(x, y, equal_var=False).confidence_interval(LEVEL)
    return difference, float(interval.low), float(interval.high)


def verdict(low: float, high: float, seeds: int, test: str = "greater", margin: float = 0.0) -> str:
    """The verdict on a claim from the 95% interval [low, high] of its difference, measured at `seeds` seeds (the
    fewest of the two sides):

    - fewer than MIN_SEEDS seeds, or no interval: inconclusive, never holds;
    - test "greater" (the claim: the difference is above 0): holds when the interval excludes 0 from above, does
      not hold when it excludes 0 from below, inconclusive when it straddles 0;
    - test "on par" (the claim: no difference beyond `margin`): holds when the interval lies within [-margin,
      margin], does not hold when it lies wholly outside, inconclusive when it straddles either end.
    """
    if seeds < MIN_SEEDS or not (math.isfinite(low) and math.isfinite(high)):
        return OPEN
    if low > high:
        raise ValueError(f"an interval's low end {low} is above its high end {high}")
    if test == "greater":
        return HOLDS if low > 0 else FAILS if high < 0 else OPEN
    if test == "on par":
        if -margin <= low and high <= margin:
            return HOLDS
        return FAILS if low > margin or high < -margin else OPEN
    raise ValueError(f"unknown test {test!r}; choose greater or on par")
