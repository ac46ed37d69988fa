"""The models on a GPU, as training will run them. Skipped where no CUDA device is present: run `pytest -m cuda`
on a GPU machine (benchmarks/RESULTS.md records where it last ran)."""

import pytest
import torch

from dissipate.models import create_model
from dissipate.models.pnnh import PNNHBlock
from dissipate.models.resnet import BasicBlock

from ..helpers import randomize_batchnorm

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _exact_fp32():
    """TF32 convs round to 10 mantissa bits; the fp32 comparisons here need full precision."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_pnnh_block_is_the_residual_block_on_cuda():
    residual = BasicBlock(64, 64)
    randomize_batchnorm(residual)
    pnnh = PNNHBlock(64)
    for name in ("conv1", "bn1", "conv2", "bn2"):
        getattr(pnnh, name).load_state_dict(getattr(residual, name).state_dict())
    x = torch.randn(8, 64, 16, 16, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.cuda().eval()(x), residual.cuda().eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["plain56", "resnet56", "pnnh56", "pnnh34", "resnet50", "vgg16"])
def test_bf16_channels_last_matches_fp32_on_cpu(name):
    model = create_model(name, stem="cifar")
    randomize_batchnorm(model)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
        gpu = model.cuda().to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = gpu(x.cuda().to(memory_format=torch.channels_last)).float().cpu()
    assert torch.isfinite(got).all()
    # bf16 keeps 8 mantissa bits: compare relative to the logits' scale
    assert (got - expected).abs().max() <= 0.05 * expected.abs().max()


def test_training_step_on_cuda_updates_every_parameter():
    model = create_model("pnnh20").cuda().to(memory_format=torch.channels_last)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (32,), device="cuda"))
    loss.backward()
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
