import pytest
import torchvision

from dissipate.errors import InvalidArgumentError, UnknownModelError
from dissipate.models import count_flops, count_parameters, create_model, model_table, select_models


def test_table_counts_what_the_real_models_count():
    table = model_table(["resnet18", "pnnh20"], num_classes=1000).set_index("model")
    assert list(table.columns) == ["family", "depth", "stem", "params", "flops_32px", "flops_224px"]
    reference = torchvision.models.resnet18(weights=None)
    assert table.loc["resnet18", "params"] == count_parameters(reference)
    # counted on the meta device for the table, on real tensors here
    assert table.loc["resnet18", "flops_224px"] == count_flops(reference, 224)
    real = create_model("pnnh20", num_classes=1000)
    assert table.loc["pnnh20", "flops_32px"] == count_flops(real, 32)
    assert table.loc["pnnh20", "stem"] == "cifar" and table.loc["resnet18", "stem"] == "imagenet"


def test_flops_grow_with_depth_and_with_the_coder():
    table = model_table(["resnet20", "resnet56", "pnnh56", "plain56"], image_sizes=(32,)).set_index("model")
    flops = table["flops_32px"]
    assert flops["resnet56"] > 2.5 * flops["resnet20"]
    assert flops["plain56"] == flops["resnet56"]  # identity shortcuts cost no multiply-adds
    assert flops["pnnh56"] == flops["resnet56"]  # an orthogonal E with k = C: E^T E = I, added as x itself
    assert count_flops(create_model("pnnh56", coder_ratio=0.5), 32) > flops["resnet56"]  # a real projection


def test_count_flops_leaves_the_model_in_training_mode():
    model = create_model("resnet20").train()
    count_flops(model, 32)
    assert model.training


def test_select_models_takes_names_and_globs():
    assert select_models(["vgg1*", "resnet20", "vgg11"]) == ["vgg11", "vgg13", "vgg16", "vgg19", "resnet20"]
    with pytest.raises(InvalidArgumentError, match="no model matches 'densenet\\*'"):
        select_models(["densenet*"])
    with pytest.raises(UnknownModelError):
        select_models(["resnet19"])
