import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dissipate.errors import InvalidArgumentError
from dissipate.models import count_parameters, create_model
from dissipate.models._layers import make_act
from dissipate.models.pnnh import PNNHBlock
from dissipate.models.resnet import BasicBlock

from ..helpers import randomize_batchnorm

ACTS = ["relu", "gelu", "silu"]


@pytest.mark.parametrize("act", ACTS)
@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=64))
def test_activation_of_a_minus_activation_of_minus_a_is_a(act, values):
    """act(a) - act(-a) = a for act(a) = a g(a) with g(a) + g(-a) = 1: the code crosses the non-linearity intact."""
    a = torch.tensor(values, dtype=torch.float64)
    module = make_act(act)
    torch.testing.assert_close(module(a) - module(-a), a, rtol=1e-12, atol=1e-12)


def _copy_learner(residual: BasicBlock, pnnh: PNNHBlock) -> None:
    for name in ("conv1", "bn1", "conv2", "bn2"):
        getattr(pnnh, name).load_state_dict(getattr(residual, name).state_dict())


@pytest.mark.parametrize("act", ACTS)
def test_pnnh_block_with_full_coder_is_the_residual_block(act):
    residual = BasicBlock(16, 16, act=act)
    randomize_batchnorm(residual)
    pnnh = PNNHBlock(16, coder_ratio=1.0, act=act)
    _copy_learner(residual, pnnh)
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), residual.eval()(x), rtol=0, atol=1e-5)


def test_pnnh_block_without_its_code_is_a_plain_block():
    """Structurally plain: with E = 0 nothing of x reaches the output but through the learner's two layers."""
    plain = BasicBlock(16, 16, residual=False)
    randomize_batchnorm(plain)
    pnnh = PNNHBlock(16)
    _copy_learner(plain, pnnh)
    with torch.no_grad():
        pnnh.coder.zero_()
        x = torch.randn(4, 16, 8, 8)
        torch.testing.assert_close(pnnh.eval()(x), plain.eval()(x))


def test_coder_is_one_tied_orthogonal_parameter():
    block = PNNHBlock(16, coder_ratio=0.5)
    coder = block.coder.detach()
    assert coder.shape == (8, 16)
    torch.testing.assert_close(coder @ coder.T, torch.eye(8), rtol=0, atol=1e-5)  # orthonormal rows
    assert [n for n, _ in block.named_parameters() if "coder" in n] == ["coder"]

    # tied: the gradient of E collects the encoder's and the decoder's use. Check it against a finite difference.
    block = block.double().eval()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    block(x).sum().backward()
    i, j, eps = 3, 7, 1e-6
    with torch.no_grad():
        block.coder[i, j] += eps
        up = block(x).sum()
        block.coder[i, j] -= 2 * eps
        down = block(x).sum()
    assert block.coder.grad[i, j].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-5, abs=1e-8)


def test_coder_and_learner_ratios_set_widths_and_parameters():
    channels = 32
    block = PNNHBlock(channels, coder_ratio=0.25, learner_ratio=0.5)
    assert (block.coder_chs, block.learner_chs) == (8, 16)
    seen = {}
    block.act1.register_forward_hook(lambda m, inp, out: seen.update(channels=inp[0].shape[1]))
    block(torch.randn(2, channels, 4, 4))
    assert seen["channels"] == 16 + 2 * 8  # one site over [h, u, -u]
    learner = 2 * 9 * channels * 16 + 2 * 16 + 2 * channels
    assert count_parameters(block) == learner + 8 * channels


def test_pnnh_net_adds_one_coder_per_stride_one_block_to_resnet():
    resnet, pnnh = create_model("resnet20"), create_model("pnnh20")
    coders = [m.coder for m in pnnh.modules() if isinstance(m, PNNHBlock)]
    assert len(coders) == 9 - 2  # 3 stages x 3 blocks, less the two that downsample
    assert count_parameters(pnnh) == count_parameters(resnet) + sum(c.numel() for c in coders)


def test_pnnh_net_with_original_downsampling_starts_as_the_resnet():
    """At init E^T E = I, so every PNNH block computes its residual twin; the whole nets agree."""
    resnet = create_model("resnet20")
    randomize_batchnorm(resnet)
    pnnh = create_model("pnnh20", downsample_block="original")
    missing, unexpected = pnnh.load_state_dict(resnet.state_dict(), strict=False)
    assert unexpected == [] and all(key.endswith("coder") for key in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), resnet.eval()(x), rtol=1e-4, atol=1e-4)


def test_default_pnnh_net_is_plain_in_structure():
    """No block of the default PNNH net has a shortcut: downsampling blocks are plain ones."""
    model = create_model("pnnh34")
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, PNNHBlock))]
    assert {b.kind for b in blocks} == {"pnnh", "plain"}
    assert sum(b.kind == "plain" for b in blocks) == 3  # the first block of stages 2, 3 and 4
    assert all(getattr(b, "downsample", None) is None for b in blocks)


@pytest.mark.parametrize("kwargs, message", [
    ({"coder_ratio": 0}, r"coder_ratio must be a number in \(0, 1\], got 0"),
    ({"coder_ratio": 1.5}, r"coder_ratio must be a number in \(0, 1\]"),  # E's rows are orthonormal: k <= C
    ({"coder_ratio": True}, r"coder_ratio must be a number in \(0, 1\], got True"),
    ({"learner_ratio": float("nan")}, r"learner_ratio must be a number in \(0, 16\]"),
    ({"learner_ratio": 1000}, r"learner_ratio must be a number in \(0, 16\]"),
    ({"downsample_block": "residual"}, "unknown downsample_block 'residual'"),
])
def test_bad_pnnh_arguments(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        create_model("pnnh20", **kwargs)
