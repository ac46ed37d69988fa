import pytest
import torch
import torchvision

from dissipate.models import count_parameters, create_model
from dissipate.models.resnet import BasicBlock, Bottleneck

from ..helpers import randomize_batchnorm


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_imagenet_resnets_have_torchvisions_parameters(name):
    ours = create_model(name, num_classes=1000, stem="imagenet")
    reference = getattr(torchvision.models, name)(weights=None)
    assert count_parameters(ours) == count_parameters(reference)
    assert ours.state_dict().keys() == reference.state_dict().keys()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_load_and_give_the_same_outputs(name):
    """Same names, same shapes, same function: a torchvision checkpoint can be probed as one of ours."""
    reference = getattr(torchvision.models, name)(weights=None)
    randomize_batchnorm(reference)
    ours = create_model(name, num_classes=1000, stem="imagenet")
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_he_et_al(depth, millions):
    params = count_parameters(create_model(f"resnet{depth}"))
    assert abs(params / (millions * 1e6) - 1) < 0.02
    assert create_model(f"resnet{depth}").layer3[-1].conv2.out_channels == 64


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 18, 34, 50, 101])
def test_plain_is_resnet_without_its_shortcuts(depth):
    plain, resnet = create_model(f"plain{depth}"), create_model(f"resnet{depth}")
    projections = sum(p.numel() for n, p in resnet.named_parameters() if ".downsample." in n)
    assert count_parameters(plain) == count_parameters(resnet) - projections
    assert plain.state_dict().keys() == {k for k in resnet.state_dict() if ".downsample." not in k}
    if depth in (20, 32, 44, 56, 110):
        assert projections == 0  # option A shortcuts have no parameters


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_plain_block_adds_nothing_and_residual_block_adds_its_input(block_type):
    """With the last BN's output forced to zero, a plain block outputs act(0) = 0 and a residual block act(x)."""
    x = torch.randn(2, 8, 6, 6)
    for residual in (False, True):
        block = block_type(8, 8, residual=residual).eval()
        last_bn = block.bn3 if block_type is Bottleneck else block.bn2
        torch.nn.init.zeros_(last_bn.weight)
        with torch.no_grad():
            expected = torch.relu(x) if residual else torch.zeros_like(x)
            torch.testing.assert_close(block(x), expected)


def test_cifar_shortcut_pads_channels_with_zeros():
    block = BasicBlock(16, 32, stride=2, shortcut="zero_pad").eval()
    torch.nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out[:, :16], torch.relu(x[:, :, ::2, ::2]))
    assert torch.all(out[:, 16:] == 0)
