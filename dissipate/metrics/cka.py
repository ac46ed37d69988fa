"""Linear CKA between a layer's features and the input image, over samples.

CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear Gram matrices K = X X^T, L = Y Y^T of the flattened
samples. HSIC is the unbiased estimator of Song et al. (2012), so the minibatch form of Nguyen et al. (2021), which
averages HSIC over minibatches before taking the ratio, is unbiased in each term and needs memory for one
minibatch's Gram matrices only. CKA(X, X) = 1, and CKA is invariant to orthogonal maps and isotropic scaling.

References:
    Kornblith, Norouzi, Lee and Hinton. Similarity of Neural Network Representations Revisited. ICML 2019.
    Nguyen, Raghu and Kornblith. Do Wide and Deep Networks Learn the Same Things? ICLR 2021.
    Song, Smola, Gretton, Bedo and Borgwardt. Feature Selection via Dependence Maximization. JMLR 2012.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError
from ._validate import check_tensor


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """(n, n) linear Gram matrix of the samples of `x` (n, ...), flattened, in float64."""
    flat = x.detach().reshape(x.shape[0], -1).float()
    return (flat @ flat.T).double()


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741  (the papers' symbol)
    """Unbiased HSIC estimate from two (n, n) Gram matrices, n >= 4 (Song et al. 2012, eq. 5):
    [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)), with K~, L~ zero-diagonal."""
    n = k.shape[0]
    if n < 4:
        raise InvalidArgumentError(f"unbiased HSIC needs at least 4 samples, got {n}")
    k = k - torch.diag(torch.diag(k))
    l = l - torch.diag(torch.diag(l))  # noqa: E741
    k_sum, l_sum = k.sum(0), l.sum(0)  # column sums: K~ 1 and L~ 1
    trace = (k * l).sum()  # tr(K~ L~), both symmetric
    return (trace + k_sum.sum() * l_sum.sum() / ((n - 1) * (n - 2)) - 2 * (k_sum @ l_sum) / (n - 2)) / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between the samples of `x` (n, ...) and `y` (n, ...), with the unbiased HSIC, over all n at once."""
    check_tensor(x, "x")
    check_tensor(y, "y")
    if x.shape[0] != y.shape[0]:
        raise InvalidArgumentError(f"x and y must hold the same samples: expected {x.shape[0]} in y, got {y.shape[0]}")
    cka = MinibatchCKA()
    cka.update(gram_linear(x), gram_linear(y))
    return cka.result()


class MinibatchCKA:
    """Streaming minibatch CKA: the sums over minibatches of HSIC(K, L), HSIC(K, K) and HSIC(L, L).

    Minibatches of fewer than 4 samples have no unbiased HSIC and are skipped (counted in `skipped`)."""

    def __init__(self) -> None:
        self.cross: torch.Tensor | float = 0.0
        self.self_x: torch.Tensor | float = 0.0
        self.self_y: torch.Tensor | float = 0.0
        self.batches = 0
        self.skipped = 0

    def update(self, gram_x: torch.Tensor, gram_y: torch.Tensor) -> None:
        if gram_x.shape[0] < 4:
            self.skipped += 1
            return
        self.cross = self.cross + hsic_unbiased(gram_x, gram_y)
        self.self_x = self.self_x + hsic_unbiased(gram_x, gram_x)
        self.self_y = self.self_y + hsic_unbiased(gram_y, gram_y)
        self.batches += 1

    def result(self) -> float:
        denominator = float(self.self_x) * float(self.self_y)
        if self.batches == 0 or denominator <= 0:
            return float("nan")
        return float(self.cross) / math.sqrt(denominator)
