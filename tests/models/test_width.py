"""The width multiplier of resnetN, plainN and pnnhN: every stage's channels (the stem's too) times `width`, rounded
to whole channels; at width 1 the nets of before."""

import math

import pytest
import torch

from dissipate.bound_check import check_network, failures, verdicts
from dissipate.checkpoint import load_model, save_checkpoint
from dissipate.data import load_data
from dissipate.errors import InvalidArgumentError
from dissipate.models import count_parameters, create_model
from dissipate.models.pnnh import PNNHBlock

from ..helpers import randomize_batchnorm

FAMILIES = ("resnet", "plain", "pnnh")
# parameters at `width` / parameters at width 1, measured (10 classes, CIFAR stem)
MEASURED_RATIOS = {
    ("resnet56", 0.5): 0.2515, ("plain56", 0.5): 0.2515, ("pnnh56", 0.5): 0.2514,
    ("resnet56", 0.71): 0.4989, ("plain56", 0.71): 0.4989, ("pnnh56", 0.71): 0.4988,
    ("resnet20", 0.5): 0.2523, ("plain20", 0.5): 0.2523, ("pnnh20", 0.5): 0.2522,
    ("resnet20", 0.71): 0.4997, ("plain20", 0.71): 0.4997, ("pnnh20", 0.71): 0.4996,
}


@pytest.mark.parametrize("name, width", list(MEASURED_RATIOS))
def test_parameters_scale_as_width_squared(name, width):
    """Measured ratios: at width 0.5, resnet56 and plain56 0.2515 (214,546 / 853,018), pnnh56 0.2514 (225,362 /
    896,282), resnet20 and plain20 0.2523 (68,050 / 269,722), pnnh20 0.2522 (70,802 / 280,730); at width 0.71
    (stages 11/23/45), resnet56 and plain56 0.4989 (425,579), pnnh56 0.4988 (447,100), resnet20 and plain20 0.4997
    (134,783), pnnh20 0.4996 (140,254). Just above width^2: the classifier's bias does not scale. The tolerance is
    the rounding of the measured ratios (5e-5) with room to spare; a stage or the stem left unscaled, or another
    rounding, moves a ratio by more."""
    ratio = count_parameters(create_model(name, width=width)) / count_parameters(create_model(name))
    assert ratio == pytest.approx(MEASURED_RATIOS[name, width], abs=2e-4)
    assert ratio == pytest.approx(width ** 2, rel=0.02)


@pytest.mark.parametrize("family", FAMILIES)
def test_width_1_is_the_net_of_before(family):
    """The same parameters, names, shapes and values, and the same outputs, for the same seed."""
    name = f"{family}20"
    torch.manual_seed(0)
    before = create_model(name)
    torch.manual_seed(0)
    scaled = create_model(name, width=1.0)
    assert before.spec.kwargs["width"] == 1.0 and scaled.spec == before.spec
    assert count_parameters(scaled) == count_parameters(before)
    a, b = before.state_dict(), scaled.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(scaled.eval()(x), before.eval()(x))


def stage_widths(model: torch.nn.Module) -> list[int]:
    """The stem's conv's output channels, then every block's convs' (layer1, layer2, layer3 in order)."""
    convs = [model.conv1] + [module for name, module in model.named_modules()
                             if name.startswith("layer") and isinstance(module, torch.nn.Conv2d)]
    return [conv.out_channels for conv in convs]


@pytest.mark.parametrize("width, channels", [(0.5, (8, 16, 32)), (0.71, (11, 23, 45)), (2, (32, 64, 128)),
                                             (0.01, (1, 1, 1))])
def test_every_stage_and_the_stem_scale_to_whole_channels(width, channels):
    """Each stage's channels are round(width * 16/32/64), at least 1: 0.71 gives 11.36 -> 11, 22.72 -> 23 (neither
    floor nor ceiling) and 45.44 -> 45; 0.01 gives 1, 1, 1."""
    model = create_model("resnet20", width=width)
    stem, *blocks = stage_widths(model)
    assert stem == channels[0]
    assert blocks == [c for c in channels for _ in range(6)]  # 3 blocks of 2 convs a stage
    assert model.fc.in_features == channels[-1]
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_pnnh_ratios_apply_to_the_scaled_channels():
    model = create_model("pnnh20", width=0.5, coder_ratio=0.5, learner_ratio=0.75)
    blocks = [m for m in model.modules() if isinstance(m, PNNHBlock)]
    assert [(b.conv2.out_channels, b.learner_chs, b.coder_chs) for b in blocks if b in model.layer1.modules()] \
        == [(8, 6, 4)] * 3  # C = 8, learner round(0.75 * 8), k = round(0.5 * 8)
    assert {(b.conv2.out_channels, b.coder_chs) for b in model.layer3.modules() if isinstance(b, PNNHBlock)} \
        == {(32, 16)}


def test_bottleneck_widths_scale_the_base_width():
    """In a bottleneck net the stage's base width scales and the output stays 4 times it."""
    with torch.device("meta"):
        model = create_model("resnet50", width=0.5)
    assert model.conv1.out_channels == 32
    assert [(b.conv1.out_channels, b.conv3.out_channels) for b in (model.layer1[0], model.layer4[0])] \
        == [(32, 128), (256, 1024)]
    assert model.fc.in_features == 1024


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("width", [0, -1, math.nan, math.inf, 100, "a", True, None])
def test_bad_widths_are_refused_in_one_sentence(family, width):
    with pytest.raises(InvalidArgumentError, match=rf"^width must be a number in \(0, 10\], got {width!r}$"):
        create_model(f"{family}20", width=width)


@pytest.mark.parametrize("name", ["resnet20", "pnnh20"])
def test_bound_check_holds_at_initialisation_on_a_half_width_net(name):
    torch.manual_seed(0)
    images = load_data("synthetic", image_size=16, length=64)  # few and small: seconds
    frame = check_network(create_model(name, width=0.5), images, num_images=64, level="init", device="cpu")
    assert (frame["level"] == "init").all() and verdicts(frame).notna().sum() >= 9  # a prediction per block
    assert failures(frame).empty


def test_a_width_scaled_checkpoint_round_trips(tmp_path):
    model = create_model("pnnh20", num_classes=5, in_chans=1, width=0.71, coder_ratio=0.5)
    randomize_batchnorm(model)
    loaded, checkpoint = load_model(save_checkpoint(tmp_path / "ckpt.pt", model))
    assert loaded.spec == model.spec and checkpoint["model_kwargs"]["width"] == 0.71
    a, b = model.state_dict(), loaded.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_a_checkpoint_from_before_width_rebuilds_at_width_1(tmp_path):
    model = create_model("resnet20")
    path = save_checkpoint(tmp_path / "ckpt.pt", model)
    checkpoint = torch.load(path, weights_only=True)
    options = {k: v for k, v in checkpoint["model_kwargs"].items() if k != "width"}
    del checkpoint["checksum"]  # as saved before the option existed, and before checksums
    torch.save({**checkpoint, "version": 2, "model_kwargs": options}, path)
    loaded, _ = load_model(path)
    assert loaded.spec.kwargs["width"] == 1.0 and loaded.spec == model.spec
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
