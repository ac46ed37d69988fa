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


def hsic_operator(l: torch.Tensor) -> torch.Tensor:  # noqa: E741  (the papers' symbol)
    """U (n, n) such that the unbiased HSIC of any symmetric K with L is <K, U> = sum(K * U), n >= 4.

    Song et al.'s estimator (2012, eq. 5), [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] /
    (n (n-3)) with K~, L~ zero-diagonal, is linear in K~: it is <K~, M> with M = [L~ + (1^T L~ 1) / ((n-1)(n-2))
    1 1^T - (L~ 1 1^T + 1 1^T L~) / (n-2)] / (n (n-3)), and <K~, M> = <K, U> for U, M with its diagonal zeroed."""
    n = l.shape[0]
    if n < 4:
        raise InvalidArgumentError(f"unbiased HSIC needs at least 4 samples, got {n}")
    l = l.clone()  # noqa: E741
    l.diagonal().zero_()
    column = l.sum(0)  # L~ 1
    u = l + column.sum() / ((n - 1) * (n - 2)) - (column[:, None] + column[None, :]) / (n - 2)
    u.diagonal().zero_()
    return u / (n * (n - 3))


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """Unbiased HSIC estimate from two (n, n) Gram matrices, n >= 4 (Song et al. 2012, eq. 5; see hsic_operator)."""
    return torch.dot(k.reshape(-1), hsic_operator(l).reshape(-1))


class Reference:
    """The fixed side of a minibatch's CKA (the images): its Gram matrix's HSIC operator and its HSIC with itself,
    made once per minibatch and shared by every site, so that a site's HSIC with it is one dot product."""

    def __init__(self, gram: torch.Tensor):
        self.operator = hsic_operator(gram).reshape(-1)
        self.hsic = torch.dot(gram.reshape(-1), self.operator)


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
    """Streaming minibatch CKA: the sums over minibatches of HSIC(K, L), HSIC(K, K) and HSIC(L, L), kept as one
    tensor on the Gram matrices' device.

    Minibatches of fewer than 4 samples have no unbiased HSIC and are skipped (counted in `skipped`)."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | float = 0.0  # (3,): cross, self_x, self_y
        self.batches = 0
        self.skipped = 0

    def update(self, gram_x: torch.Tensor, gram_y: torch.Tensor | Reference) -> None:
        """Add one minibatch: `gram_x` against `gram_y`, or against its Reference (made once for many updates)."""
        if gram_x.shape[0] < 4:
            self.skipped += 1
            return
        reference = gram_y if isinstance(gram_y, Reference) else Reference(gram_y)
        flat = gram_x.reshape(-1)
        self.sums = self.sums + torch.stack([torch.dot(flat, reference.operator),
                                             torch.dot(flat, hsic_operator(gram_x).reshape(-1)), reference.hsic])
        self.batches += 1

    def result(self) -> float:
        if self.batches == 0:
            return float("nan")
        cross, self_x, self_y = self.sums.tolist()
        return cross / math.sqrt(self_x * self_y) if self_x * self_y > 0 else float("nan")
