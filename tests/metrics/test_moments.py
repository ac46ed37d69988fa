import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dissipate.metrics import Moments, moments


def test_moments_of_a_known_tensor():
    mean, var, s2 = moments(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert (mean, var, s2) == pytest.approx((2.5, 1.25, 7.5))


@settings(max_examples=25, deadline=None)
@given(mean_to_std=st.floats(-10, 10), scale=st.floats(1e-2, 1e2), seed=st.integers(0, 2 ** 16),
       sizes=st.lists(st.integers(1, 50), min_size=1, max_size=6))
def test_streaming_equals_whole_tensor_even_with_a_large_mean(mean_to_std, scale, seed, sizes):
    """Batches of float32 with |mean| up to 10 standard deviations (activations sit below that). The variance is
    E[x^2] - E[x]^2 from float32 sums, so its error is a few float32 epsilons of E[x^2], not of the variance."""
    x = (torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
         + mean_to_std) * scale
    stream = Moments()
    for part in x.split(sizes):
        stream.update(part.float())
    mean, var, s2 = moments(x.float())
    assert stream.result()[0] == pytest.approx(mean, rel=1e-5, abs=1e-4 * scale)
    assert stream.result()[1] == pytest.approx(var, rel=1e-3, abs=1e-6 * s2)


def test_empty_stream_is_nan():
    assert all(math.isnan(v) for v in Moments().result())


@pytest.mark.parametrize("mean_to_std", [100.0, 1000.0, -3000.0])
def test_the_streamed_variance_holds_where_the_mean_is_far_above_the_spread(mean_to_std):
    x = torch.randn(1 << 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + mean_to_std
    stream = Moments()
    for part in x.float().split(1000):
        stream.update(part)
    mean, var, s2 = stream.result()
    exact = x.float().double()  # the float32 values the stream saw
    assert mean == pytest.approx(exact.mean().item(), rel=1e-9)
    assert var == pytest.approx(exact.var(unbiased=False).item(), rel=1e-4)
    assert s2 == pytest.approx(exact.square().mean().item(), rel=1e-9)
