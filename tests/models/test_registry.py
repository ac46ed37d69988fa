import pytest
import torch

from dissipate.errors import InvalidArgumentError, UnknownModelError
from dissipate.models import create_model, get_model_entry, list_models

from ..helpers import activation_modules, count_activation_calls

CIFAR_DEPTHS = [20, 32, 44, 56, 110]
EXPECTED = (
    {f"{family}{depth}" for family in ("plain", "resnet", "pnnh") for depth in [*CIFAR_DEPTHS, 18, 34, 50, 101]}
    | {f"vgg{depth}" for depth in (11, 13, 16, 19)}
)  # the CNNs; the transformers have their own tests (test_vit.py)
TRANSFORMERS = {f"{family}{depth}" for family in ("plainvit", "vit", "pnnhvit") for depth in (6, 12, 24)}
REMEDIES = {f"{family}{depth}" for family in ("tat", "iso", "ll", "dirac", "repvgg") for depth in CIFAR_DEPTHS}


def test_registry_holds_every_family_and_depth():
    assert set(list_models()) == EXPECTED | TRANSFORMERS | REMEDIES  # the remedies: test_remedies.py
    assert list_models("pnnh[0-9]*") == ["pnnh18", "pnnh20", "pnnh32", "pnnh34", "pnnh44", "pnnh50", "pnnh56", "pnnh101",
                                    "pnnh110"]
    assert list_models(family="vgg") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert get_model_entry("resnet110").depth == 110 and get_model_entry("plain50").family == "plain"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_model_runs_and_fires_each_activation_once(name):
    model = create_model(name, num_classes=7, in_chans=1, stem="cifar").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 7)

    sites = activation_modules(model)
    assert sites, "a model without activation modules cannot be probed"
    assert len({id(m) for _, m in sites}) == len(sites), "an activation module is shared between sites"
    assert not any(getattr(m, "inplace", False) for _, m in sites)
    calls = count_activation_calls(model, x)
    assert set(calls.values()) == {1}, f"activation calls per module: {sorted(set(calls.values()))}"


@pytest.mark.parametrize("name, stem, sites", [
    ("plain34", "cifar", 33),  # stem + 16 basic blocks x 2
    ("pnnh34", "cifar", 33),  # PNNH blocks keep two sites each: the coder shares the learner's activation
    ("resnet20", "cifar", 19),
    ("resnet50", "cifar", 49),  # stem + 16 bottlenecks x 3
    ("vgg16", "imagenet", 15),  # 13 convs + 2 in the classifier
    ("vgg16", "cifar", 13),
])
def test_activation_site_counts(name, stem, sites):
    assert len(activation_modules(create_model(name, stem=stem))) == sites


@pytest.mark.parametrize("act, module_type", [("gelu", torch.nn.GELU), ("silu", torch.nn.SiLU)])
def test_activation_choice_reaches_every_site(act, module_type):
    model = create_model("pnnh20", act=act)
    assert {type(m) for _, m in activation_modules(model)} == {module_type}


def test_unknown_model_suggests_the_nearest_names():
    with pytest.raises(UnknownModelError, match=r"unknown model 'resnet35'; did you mean resnet34, resnet32"):
        create_model("resnet35")
    with pytest.raises(UnknownModelError, match="did you mean pnnh20"):
        create_model("pnh20")
    with pytest.raises(UnknownModelError, match="did you mean pnnh20"):
        create_model("PNNH20")


@pytest.mark.parametrize("kwargs, message", [
    ({"coder_ratio": 0.5}, "takes no argument coder_ratio"),  # resnet has no coder
    ({"stem": "tiny"}, "unknown stem 'tiny'"),
    ({"act": "tanh"}, "unknown activation 'tanh'"),
    ({"num_classes": 0}, "num_classes must be an integer from 1 to 1000000"),
])
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        create_model("resnet20", **kwargs)


@pytest.mark.parametrize("name, image_size, stem", [
    ("resnet34", 32, "cifar"), ("resnet34", 63, "cifar"), ("resnet34", 64, "imagenet"),
    ("resnet34", None, "imagenet"), ("resnet20", None, "cifar"), ("resnet20", 224, "imagenet"),
])
def test_default_stem_follows_image_size(name, image_size, stem):
    model = create_model(name, image_size=image_size)
    assert model.spec.kwargs["stem"] == stem
    assert model.conv1.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))


def test_spec_rebuilds_the_same_model():
    model = create_model("pnnh20", num_classes=5, in_chans=1, coder_ratio=0.5, act="gelu")
    spec = model.spec
    assert (spec.name, spec.num_classes, spec.in_chans) == ("pnnh20", 5, 1)
    # every option, the defaults too, so that the net rebuilds as it was whatever the defaults become
    assert spec.kwargs == {"stem": "cifar", "coder_ratio": 0.5, "act": "gelu", "learner_ratio": 1.0,
                           "downsample_block": "pnnh", "coder": "orthogonal", "impl": "fused",
                           "orthogonal_map": "cayley", "width": 1.0}
    rebuilt = create_model(spec.name, num_classes=spec.num_classes, in_chans=spec.in_chans, **spec.kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_initialisation_is_he_normal_fan_in():
    model = create_model("resnet34")
    for conv in (model.conv1, model.layer4[1].conv2, model.layer2[0].downsample[0]):
        weight = conv.weight.detach()
        fan_in = weight[0].numel()
        std, n = (2 / fan_in) ** 0.5, weight.numel()
        # the sample std of n normals has relative standard error 1/sqrt(2n); allow 5 of them
        assert abs(weight.std().item() / std - 1) < 5 / (2 * n) ** 0.5
        assert abs(weight.mean().item()) < 5 * std / n ** 0.5
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(bn.weight == 1) and torch.all(bn.bias == 0) for bn in bns)
    assert torch.all(model.fc.bias == 0)
