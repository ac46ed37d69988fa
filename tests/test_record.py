import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dissipate.errors import InvalidArgumentError
from dissipate.models import create_model
from dissipate.record import Component, find_components, find_sites, record, record_components


def recorded(model: nn.Module, x: torch.Tensor, **kwargs) -> dict[str, tuple]:
    """{site name: (site, pre, post)} from one forward pass."""
    seen = {}
    with record(model, lambda site, pre, post: seen.__setitem__(site.name, (site, pre, post)), **kwargs):
        with torch.no_grad():
            model.eval()(x)
    return seen


def test_torchvision_resnet18_reused_inplace_relu_gives_numbered_sites_and_keeps_its_flags():
    model = torchvision.models.resnet18()
    seen = recorded(model, torch.randn(2, 3, 64, 64))
    assert list(seen)[:5] == ["relu", "layer1.0.relu", "layer1.0.relu#1", "layer1.1.relu", "layer1.1.relu#1"]
    assert len(seen) == 17 and [s.depth for s, _, _ in seen.values()] == list(range(1, 18))
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))  # switched back
    site, pre, post = seen["layer1.0.relu#1"]
    assert (pre < 0).any() and torch.equal(post, pre.clamp_min(0))  # the pre-activation was not overwritten
    assert site.kind == "unknown" and site.module_type == "ReLU"


def test_torchvision_vgg11():
    model = torchvision.models.vgg11()
    seen = recorded(model, torch.randn(2, 3, 32, 32))
    assert list(seen)[:3] == ["features.1", "features.4", "features.7"]
    assert len(seen) == 10 and list(seen)[-2:] == ["classifier.1", "classifier.4"]
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_flags_come_back_even_when_the_forward_pass_fails():
    model = torchvision.models.resnet18()
    with pytest.raises(RuntimeError):
        recorded(model, torch.randn(2, 5, 64, 64))  # wrong channel count
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert not model.relu._forward_hooks and not model._forward_pre_hooks


class FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return F.relu(self.conv(x))


def test_functional_activations_are_reported_not_recorded_as_nothing():
    with pytest.raises(InvalidArgumentError, match=r"functional activations \(F.relu"):
        find_sites(FunctionalNet())


def test_include_records_named_modules():
    seen = recorded(FunctionalNet(), torch.randn(2, 3, 8, 8), include=["con*"])
    assert list(seen) == ["conv"] and seen["conv"][1].shape == (2, 3, 8, 8)


def test_a_module_called_twice_per_pass_has_stable_names_over_passes():
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 4), act)
    names = []
    with record(model, lambda site, pre, post: names.append(site.name)):
        model(torch.randn(2, 4))
        model(torch.randn(2, 4))
    assert names == ["1", "1#1", "1", "1#1"]


@pytest.mark.parametrize("name, expected", [
    ("resnet20", {"act1": "plain", "layer1.0.act1": "plain", "layer1.0.act2": "residual"}),
    ("plain20", {"layer1.0.act2": "plain"}),
    ("pnnh20", {"layer1.0.act1": "pnnh", "layer1.0.act2": "pnnh", "layer2.0.act1": "pnnh", "layer2.0.act2": "pnnh"}),
    ("resnet50", {"layer1.0.act2": "plain", "layer1.0.act3": "residual"}),
    ("vgg11", {"features.2": "plain", "classifier.1": "plain"}),
])
def test_our_models_declare_each_sites_kind(name, expected):
    seen = recorded(create_model(name), torch.randn(2, 3, 32, 32))
    assert {site: seen[site][0].kind for site in expected} == expected


class GELUTanh(nn.Module):
    """An activation class of another library (timm names its own like this), not a subclass of torch's."""

    def forward(self, x):
        return F.gelu(x, approximate="tanh")


def test_activation_classes_of_other_libraries_are_found_by_name():
    model = nn.Sequential(nn.Linear(4, 8), GELUTanh(), nn.Linear(8, 2))
    seen = recorded(model, torch.randn(3, 4))
    assert list(seen) == ["1"] and seen["1"][0].module_type == "GELUTanh"


def test_blocks_declare_what_their_sites_sum():
    resnet = {(c.site, c.role): (c.source, c.takes_input) for c in find_components(create_model("resnet20"))}
    assert resnet[("layer1.0.act2", "branch")] == ("layer1.0.bn2", False)
    assert resnet[("layer1.0.act2", "identity")] == ("layer1.0", True)
    assert resnet[("layer2.0.act2", "identity")] == ("layer2.0.downsample", False)  # option A's padded subsample
    assert len(resnet) == 2 * 9 and not find_components(create_model("plain20"))
    assert ("layer1.0.act3", "identity") in {(c.site, c.role) for c in find_components(create_model("resnet50"))}
    pnnh = find_components(create_model("pnnh20", coder_ratio=0.5))
    assert Component("layer1.0.act2", "coder", "layer1.0", takes_input=True, coder_ratio=0.5) in pnnh
    assert {c.role for c in pnnh if c.site == "layer2.0.act2"} == {"branch", "identity"}  # S(x) adds as a shortcut
    first = find_components(create_model("pnnh20", downsample_block="plain"))
    assert not any(c.site == "layer2.0.act2" for c in first)  # the plain downsampling block sums nothing


@pytest.mark.parametrize("name", ["resnet20", "pnnh20"])
def test_the_recorded_components_add_up_to_the_pre_activation(name):
    """Branch plus identity (or plus E^T E x, which is x for a coder with k = C at initialisation, to the float
    rounding of the orthogonal map) is the site's pre-activation, for identity and downsampling shortcuts alike;
    every hook is gone afterwards."""
    model = create_model(name).eval()
    parts, pre = {}, {}
    with record(model, lambda site, p, post: pre.__setitem__(site.name, p)), \
            record_components(model, lambda c, value: parts.setdefault(c.site, []).append(value)), torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert parts and set(parts) <= set(pre)
    for site, values in parts.items():
        assert len(values) == 2
        torch.testing.assert_close(values[0] + values[1], pre[site], atol=1e-4, rtol=1e-4)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
