import math

import numpy as np
import pytest
import torch

from dissipate.metrics import ChannelCovariance, effective_rank, numerical_rank, singular_values, stable_rank
from dissipate.metrics.rank import channel_covariance, decompose_together


def as_feature_map(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """(N, C) rows -> (batch, C, h, w) feature maps holding the same rows."""
    n, c = rows.shape
    side = int(math.isqrt(n // batch))
    return rows.reshape(batch, side, side, c).permute(0, 3, 1, 2)


@pytest.mark.parametrize("rank", [1, 5, 17, 32])
def test_features_of_known_rank_give_that_nrank(rank):
    rows = torch.randn(4096, rank) @ torch.randn(rank, 32) + torch.randn(32)  # rank `rank` after centring
    stream = ChannelCovariance()
    for part in as_feature_map(rows, 16).split(4):
        stream.update(part)
    assert stream.result()["nrank"] == rank
    result = stream.result()  # float32 rounding leaves the null space at ~1e-7 of the top: erank barely notices
    assert 1 <= result["srank"] <= rank * (1 + 1e-4) and 1 <= result["erank"] <= rank * (1 + 1e-4)


def test_identity_covariance_gives_full_erank_and_srank():
    centred = torch.randn(1024, 48, dtype=torch.float64)
    centred -= centred.mean(0)
    q, _ = torch.linalg.qr(centred)  # orthonormal, still centred columns
    white = q * math.sqrt(1024 - 1)  # covariance exactly I
    sigma = singular_values(channel_covariance(white))
    assert effective_rank(sigma) == pytest.approx(48, rel=1e-9)
    assert stable_rank(sigma) == pytest.approx(48, rel=1e-9)
    assert numerical_rank(sigma) == 48


def test_erank_uses_singular_values_not_their_squares():
    sigma = torch.tensor([4.0, 1.0], dtype=torch.float64)
    p = np.array([0.8, 0.2])  # sigma / sum(sigma); the squares would give 16/17, 1/17
    assert effective_rank(sigma) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert stable_rank(sigma) == pytest.approx(17 / 16)


def test_streaming_covariance_matches_a_direct_svd():
    rows = torch.randn(2048, 24) @ torch.randn(24, 24) + 5.0  # a large mean, correlated channels
    stream = ChannelCovariance()
    for part in as_feature_map(rows, 32).split(8):
        stream.update(part)
    centred = rows.double().numpy() - rows.double().numpy().mean(0)
    expected = np.linalg.svd(centred, compute_uv=False) ** 2 / (len(rows) - 1)  # covariance eigenvalues
    assert singular_values(stream.covariance()).numpy() == pytest.approx(expected, rel=1e-4, abs=1e-6 * expected[0])


def test_tokens_use_the_last_dim_as_channels():
    tokens = torch.randn(8, 16, 6) @ torch.diag(torch.tensor([1.0, 1, 1, 0, 0, 0]))  # 3 live channels of 6
    stream = ChannelCovariance()
    stream.update(tokens)
    assert stream.result()["nrank"] == 3


@pytest.mark.parametrize("mean_to_std", [100.0, 1000.0])
def test_a_rank_one_feature_with_channel_means_far_above_its_spread_has_nrank_one(mean_to_std):
    """Trained nets carry channel means near 1000: the covariance must not cancel away in float32."""
    v = torch.randn(32)
    rows = torch.randn(4096, 1) * v + mean_to_std * v.abs()  # each channel: mean `mean_to_std` times its std
    stream = ChannelCovariance()
    for part in as_feature_map(rows, 16).split(4):
        stream.update(part)
    result = stream.result()
    assert result["nrank"] == 1 and result["erank"] == pytest.approx(1, abs=1e-3)
    expected = torch.outer(v, v).double()
    assert torch.allclose(stream.covariance(), expected, rtol=0.1, atol=1e-3 * expected.abs().max().item())


def test_covariances_decomposed_together_give_each_its_own_ranks():
    """One batched eigvalsh per matrix size (the probe's path on an accelerator) against each stream alone."""
    generator = torch.Generator().manual_seed(0)
    streams, alone = [], []
    for channels in (8, 12, 8):
        spread = torch.linspace(0.1, 2, channels)[:, None, None]
        features = torch.randn(64, channels, 4, 4, generator=generator) * spread
        stream = ChannelCovariance()
        stream.update(features)
        streams.append(stream)
        alone.append(stream.result())
    decompose_together([*streams, ChannelCovariance()])  # one without data is left alone
    assert all(stream.gram is None and stream.sigma.shape == (c,) for stream, c in zip(streams, (8, 12, 8)))
    for stream, expected in zip(streams, alone, strict=True):
        assert stream.result() == pytest.approx(expected, rel=1e-10)
