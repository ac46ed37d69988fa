import pytest
import torch

from dissipate.errors import InvalidArgumentError
from dissipate.metrics import ChannelSurvival, always_on_fraction, dead_fraction, surviving_fraction

# (B=2, C=3, H=1, W=2): channel 0 always > 0, channel 1 never > 0 (a zero is not > 0), channel 2 mixed
PRE = torch.tensor([[[[1.0, 2.0]], [[-1.0, 0.0]], [[3.0, -2.0]]],
                    [[[0.5, 0.1]], [[-3.0, -0.1]], [[-1.0, -1.0]]]])


def test_exact_on_a_hand_made_tensor():
    assert surviving_fraction(PRE) == 5 / 12
    assert dead_fraction(PRE) == 1 / 3
    assert always_on_fraction(PRE) == 1 / 3


def test_vectors_and_tokens_use_their_channel_dim():
    vectors = torch.tensor([[1.0, -1.0], [2.0, 0.0]])  # (B, C): channel 0 always on, channel 1 dead
    assert (dead_fraction(vectors), always_on_fraction(vectors)) == (0.5, 0.5)
    tokens = vectors[:, None, :].expand(2, 3, 2)  # (B, T, C): channels last
    assert (dead_fraction(tokens), always_on_fraction(tokens)) == (0.5, 0.5)


def test_streaming_equals_whole_tensor():
    pre = torch.randn(10, 4, 3, 3)
    pre[:, 1] = pre[:, 1].abs() + 0.1  # always on
    pre[:, 2] = -pre[:, 2].abs()  # dead
    stream = ChannelSurvival()
    for part in pre.split(3):
        stream.update(part)
    assert stream.result() == pytest.approx(
        {"surviving": surviving_fraction(pre), "dead": dead_fraction(pre), "always_on": always_on_fraction(pre)})
    assert stream.result()["dead"] == 0.25 and stream.result()["always_on"] == 0.25


def test_bad_input_is_refused():
    with pytest.raises(InvalidArgumentError, match="expected a floating-point tensor"):
        surviving_fraction(torch.ones(2, 2, dtype=torch.long))
