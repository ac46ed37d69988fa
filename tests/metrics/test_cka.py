import itertools
import math

import pytest
import torch

from dissipate.errors import InvalidArgumentError
from dissipate.metrics import MinibatchCKA, hsic_unbiased, linear_cka
from dissipate.metrics.cka import gram_linear


def test_cka_of_x_with_itself_is_one():
    x = torch.randn(64, 3, 8, 8)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)


def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling():
    x = torch.randn(200, 30, dtype=torch.float64)
    y = x[:, :10] @ torch.randn(10, 20, dtype=torch.float64) + 0.5 * torch.randn(200, 20, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    reference = linear_cka(x, y)
    assert 0.2 < reference < 0.95
    assert linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-4)
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(reference, rel=1e-4)


def test_cka_against_independent_noise_is_near_zero():
    """For independent isotropic X (d1) and Y (d2), the debiased HSIC is a sum of d1*d2 centred terms of variance
    2/n^2 each, against HSIC(X, X) ~ d1 and HSIC(Y, Y) ~ d2: CKA has standard deviation sqrt(2)/n. 4 of those."""
    n = 512
    x, y = torch.randn(n, 40, dtype=torch.float64), torch.randn(n, 25, dtype=torch.float64)
    assert abs(linear_cka(x, y)) < 4 * math.sqrt(2) / n


def test_unbiased_hsic_equals_its_u_statistic():
    """Song et al.'s estimator in closed form against the mean over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq, on a sample small enough to enumerate."""
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 2, dtype=torch.float64)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    terms = [k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
             for i, j, q, r in itertools.permutations(range(7), 4)]
    assert hsic_unbiased(k, l).item() == pytest.approx(sum(terms).item() / len(terms), rel=1e-10)


def test_minibatch_cka_agrees_with_full_cka():
    x = torch.randn(1024, 16, dtype=torch.float64)
    y = x @ torch.randn(16, 8, dtype=torch.float64) + torch.randn(1024, 8, dtype=torch.float64)
    stream = MinibatchCKA()
    for xs, ys in zip(x.split(128), y.split(128), strict=True):
        stream.update(gram_linear(xs), gram_linear(ys))
    assert stream.result() == pytest.approx(linear_cka(x, y), abs=0.03)


def test_small_minibatches_are_skipped_and_counted():
    stream = MinibatchCKA()
    stream.update(gram_linear(torch.randn(3, 5)), gram_linear(torch.randn(3, 5)))
    assert stream.skipped == 1 and math.isnan(stream.result())
    with pytest.raises(InvalidArgumentError, match="at least 4 samples"):
        hsic_unbiased(torch.eye(3), torch.eye(3))
    with pytest.raises(InvalidArgumentError, match="same samples"):
        linear_cka(torch.randn(8, 2), torch.randn(9, 2))
