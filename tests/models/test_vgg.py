import pytest
import torch
import torchvision

from dissipate.models import count_parameters, create_model

from ..helpers import randomize_batchnorm


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_vgg_has_torchvisions_bn_parameters(depth):
    ours = create_model(f"vgg{depth}", num_classes=1000, stem="imagenet")
    reference = getattr(torchvision.models, f"vgg{depth}_bn")(weights=None)
    assert count_parameters(ours) == count_parameters(reference)
    assert ours.state_dict().keys() == reference.state_dict().keys()


def test_torchvision_vgg_weights_give_the_same_outputs():
    reference = torchvision.models.vgg11_bn(weights=None)
    randomize_batchnorm(reference)
    ours = create_model("vgg11", num_classes=1000, stem="imagenet")
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_cifar_head_is_one_linear_layer():
    model = create_model("vgg16", num_classes=10, stem="cifar")
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.in_features == 512
    assert count_parameters(model) < 15.3e6  # 13 convs (14.7M) plus BN and one 512 x 10 layer
