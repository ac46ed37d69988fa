import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize

from dissipate.errors import InvalidArgumentError
from dissipate.models import count_parameters, create_model
from dissipate.models._layers import make_act
from dissipate.bound_check import check_network, not_holding, verdicts
from dissipate.models.pnnh import CODE_BLOCKS, CODERS, FIRST_DEFAULTS, IMPLS, PNNHBlock, PNNHBottleneck, PNNHDownsample
from dissipate.data import load_data
from dissipate.probe import ProbeConfig, probe, probe_model
from dissipate.models.resnet import BasicBlock, Bottleneck

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


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("act", ACTS)
def test_pnnh_block_with_full_coder_is_the_residual_block(act, coder, impl):
    residual = BasicBlock(16, 16, act=act)
    randomize_batchnorm(residual)
    pnnh = PNNHBlock(16, coder_ratio=1.0, act=act, coder=coder, impl=impl)
    _copy_learner(residual, pnnh)
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), residual.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shortcut", ["zero_pad", "projection"])
@pytest.mark.parametrize("act", ACTS)
def test_the_pnnh_stage_transition_is_the_residual_one_with_its_shortcut_carried_across_act1(act, shortcut, impl):
    residual = BasicBlock(16, 32, stride=2, shortcut=shortcut, act=act)
    randomize_batchnorm(residual)
    pnnh = PNNHDownsample(16, 32, 2, shortcut=shortcut, act=act, impl=impl)
    pnnh.load_state_dict(residual.state_dict())  # the same modules, named alike
    x = torch.randn(4, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), residual.eval()(x), rtol=0, atol=1e-5)
    seen = {}
    pnnh.act1.register_forward_hook(lambda m, inp, out: seen.update(channels=inp[0].shape[1]))
    pnnh(x)
    assert seen["channels"] == (32 + 2 * 32 if impl == "explicit" else 32)  # [h, u, -u] when explicit


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("make", [lambda impl, coder: PNNHBlock(16, coder_ratio=0.5, coder=coder, impl=impl),
                                  lambda impl, coder: PNNHDownsample(16, 32, 2, shortcut="projection", impl=impl)],
                         ids=["stride-1", "downsample"])
def test_fused_equals_explicit_in_outputs_and_gradients_with_one_state_dict(make, coder):
    explicit, fused = make("explicit", coder).double(), make("fused", coder).double()
    assert list(explicit.state_dict()) == list(fused.state_dict())
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 16, 6, 6, dtype=torch.float64)
    outputs = [block(x) for block in (explicit, fused)]  # training mode: batch statistics
    torch.testing.assert_close(*outputs, rtol=1e-10, atol=1e-10)
    for out in outputs:
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    for (name, a), (_, b) in zip(explicit.named_parameters(), fused.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_an_orthogonal_coder_keeps_orthonormal_rows_through_training_where_a_free_one_does_not():
    blocks = {coder: PNNHBlock(16, coder_ratio=0.5, coder=coder) for coder in CODERS}
    torch.testing.assert_close(blocks["orthogonal"].coder @ blocks["orthogonal"].coder.T, torch.eye(8), rtol=0,
                               atol=1e-5)
    for coder, block in blocks.items():
        optimizer = torch.optim.SGD(block.parameters(), lr=0.5)
        for _ in range(5):
            optimizer.zero_grad()
            block(torch.randn(4, 16, 6, 6)).square().mean().backward()
            optimizer.step()
    gram = {coder: (block.coder @ block.coder.T).detach() for coder, block in blocks.items()}
    torch.testing.assert_close(gram["orthogonal"], torch.eye(8), rtol=0, atol=1e-4)
    assert (gram["free"] - torch.eye(8)).abs().max() > 1e-2


def test_pnnh_block_without_its_code_is_a_plain_block():
    """Structurally plain: with E = 0 nothing of x reaches the output but through the learner's two layers."""
    plain = BasicBlock(16, 16, residual=False)
    randomize_batchnorm(plain)
    pnnh = PNNHBlock(16, coder="free")  # a free E can be zeroed
    _copy_learner(plain, pnnh)
    with torch.no_grad():
        pnnh.coder.zero_()
        x = torch.randn(4, 16, 8, 8)
        torch.testing.assert_close(pnnh.eval()(x), plain.eval()(x))


def test_a_free_coder_is_one_tied_orthogonal_parameter():
    block = PNNHBlock(16, coder_ratio=0.5, coder="free")
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
    block = PNNHBlock(channels, coder_ratio=0.25, learner_ratio=0.5, impl="explicit")
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
    assert unexpected == [] and all("coder" in key for key in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), resnet.eval()(x), rtol=1e-4, atol=1e-4)


def test_a_pnnh_net_with_pnnh_stage_transitions_has_no_plain_block_and_starts_as_the_resnet():
    resnet = create_model("resnet20")
    randomize_batchnorm(resnet)
    pnnh = create_model("pnnh20")  # the default: pnnh stage transitions and orthogonal coders
    blocks = [m for m in pnnh.modules() if isinstance(m, (BasicBlock, PNNHBlock, PNNHDownsample))]
    assert {b.kind for b in blocks} == {"pnnh"} and sum(isinstance(b, PNNHDownsample) for b in blocks) == 2
    missing, unexpected = pnnh.load_state_dict(resnet.state_dict(), strict=False)
    assert unexpected == [] and all(".coder." in key for key in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), resnet.eval()(x), rtol=1e-4, atol=1e-4)


def test_the_probe_sees_the_code_cross_each_activation_and_gives_the_model_back_fused():
    model = create_model("pnnh20", downsample_block="pnnh", coder_ratio=0.5)
    frame = probe(model, "synthetic", num_images=16, metrics=("survival",))
    assert frame.attrs["pnnh_switched_to_explicit"] == 9
    inner = frame.set_index("site")["channels"]
    assert inner["layer1.1.act1"] == 16 + 2 * 8 and inner["layer2.0.act1"] == 32 + 2 * 32
    assert {m.impl for m in model.modules() if isinstance(m, (PNNHBlock, PNNHDownsample))} == {"fused"}


@pytest.mark.parametrize("options", [{}, {"act": "gelu"}, {"coder": "free"}, {"downsample_block": "plain"},
                                     FIRST_DEFAULTS])
def test_the_bound_check_holds_at_initialisation_on_every_new_variant(options):
    frame = check_network(create_model("pnnh20", **options), "synthetic", ProbeConfig(num_images=64))
    predicted = 7 + 2 * (options.get("downsample_block", "pnnh") == "pnnh")  # stride-1 blocks, stage transitions
    assert not_holding(frame).sum() == 0 and verdicts(frame).notna().sum() == predicted


def _copy_bottleneck(residual: Bottleneck, pnnh: PNNHBottleneck) -> None:
    missing, unexpected = pnnh.load_state_dict(residual.state_dict(), strict=False)
    assert unexpected == [] and all("coder" in key for key in missing)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("stride, in_chs", [(1, 32), (2, 16)], ids=["stride-1", "downsample"])
def test_a_pnnh_bottleneck_with_full_coder_is_the_residual_bottleneck(stride, in_chs, act, impl):
    residual = Bottleneck(in_chs, 32, stride, act=act)
    randomize_batchnorm(residual)
    pnnh = PNNHBottleneck(in_chs, 32, stride, act=act, impl=impl)
    _copy_bottleneck(residual, pnnh)
    x = torch.randn(2, in_chs, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pnnh.eval()(x), residual.eval()(x), rtol=0, atol=1e-5)
    widths = {}
    for name in ("act1", "act2", "act3"):
        getattr(pnnh, name).register_forward_hook(lambda m, i, o, name=name: widths.update({name: i[0].shape[1]}))
    pnnh(x)
    code = (32, 32) if stride == 1 else (in_chs, 32)  # E x twice; or x, then S(x)
    pairs = (2 * code[0], 2 * code[1]) if impl == "explicit" else (0, 0)
    assert widths == {"act1": 8 + pairs[0], "act2": 8 + pairs[1], "act3": 32}


@pytest.mark.parametrize("make", [lambda impl: PNNHBlock(16, impl=impl), lambda impl: PNNHBottleneck(32, 32, impl=impl)],
                         ids=["basic", "bottleneck"])
def test_an_orthogonal_full_coder_is_the_identity_and_the_fused_path_adds_x(make):
    """E^T E = I for an orthogonal E with k = C: the fused path adds x without computing E, and agrees with the
    explicit path, which computes E x and E^T (c+ - c-), to the rounding of E (drawn in float32); E's gradient there is
    that rounding, zero in exact arithmetic."""
    explicit, fused = make("explicit").double(), make("fused").double()
    fused.load_state_dict(explicit.state_dict())
    assert fused.identity_coder
    x = torch.randn(2, explicit.conv1.in_channels, 5, 5, dtype=torch.float64)
    outputs = [block(x) for block in (explicit, fused)]
    torch.testing.assert_close(*outputs, rtol=1e-5, atol=1e-5)
    for out in outputs:
        out.square().sum().backward()
    for (name, a), (_, b) in zip(explicit.named_parameters(), fused.named_parameters(), strict=True):
        if "coder" in name:
            assert b.grad is None and a.grad.abs().max() < 1e-4
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-4, msg=name)


def test_a_pnnh_bottleneck_fused_equals_explicit_in_outputs_and_gradients():
    explicit = PNNHBottleneck(32, 32, coder_ratio=0.5, coder="orthogonal", impl="explicit").double()
    fused = PNNHBottleneck(32, 32, coder_ratio=0.5, coder="orthogonal", impl="fused").double()
    fused.load_state_dict(explicit.state_dict())
    x = torch.randn(2, 32, 5, 5, dtype=torch.float64)
    outputs = [block(x) for block in (explicit, fused)]
    torch.testing.assert_close(*outputs, rtol=1e-10, atol=1e-10)
    for out in outputs:
        out.square().sum().backward()
    for (name, a), (_, b) in zip(explicit.named_parameters(), fused.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("name", ["pnnh50", "pnnh101"])
def test_pnnh50_and_101_build_train_a_step_probe_and_pass_the_bound_check(name):
    model = create_model(name, downsample_block="pnnh", image_size=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    fresh = create_model(name, downsample_block="pnnh", image_size=32)
    frame = check_network(fresh, "synthetic", ProbeConfig(num_images=16, metrics=("survival", "moments", "theory")))
    blocks = [m for m in fresh.modules() if isinstance(m, PNNHBottleneck)]
    assert len(frame) == 1 + 3 * len(blocks) and set(frame["kind"][1:]) == {"pnnh"}
    assert not_holding(frame).sum() == 0 and verdicts(frame).notna().sum() == len(blocks)


def test_default_pnnh_net_has_only_pnnh_blocks_with_orthogonal_coders():
    """The default: every block carries a code (stage transitions carry the shortcut's), none has a path around an
    activation, and every E is kept orthonormal. The first version's options still build it: plain transitions."""
    model = create_model("pnnh34")
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, *CODE_BLOCKS))]
    assert {b.kind for b in blocks} == {"pnnh"} and sum(isinstance(b, PNNHDownsample) for b in blocks) == 3
    assert all(parametrize.is_parametrized(b, "coder") for b in blocks if isinstance(b, PNNHBlock))
    assert model.spec.kwargs["coder"] == "orthogonal" and model.spec.kwargs["downsample_block"] == "pnnh"
    first = create_model("pnnh34", **FIRST_DEFAULTS)
    blocks = [m for m in first.modules() if isinstance(m, (BasicBlock, PNNHBlock))]
    assert sum(b.kind == "plain" for b in blocks) == 3  # the first block of stages 2, 3 and 4
    assert all(getattr(b, "downsample", None) is None for b in blocks)
    assert not any(parametrize.is_parametrized(b, "coder") for b in blocks if isinstance(b, PNNHBlock))


@pytest.mark.parametrize("kwargs, message", [
    ({"coder_ratio": 0}, r"coder_ratio must be a number in \(0, 1\], got 0"),
    ({"coder_ratio": 1.5}, r"coder_ratio must be a number in \(0, 1\]"),  # E's rows are orthonormal: k <= C
    ({"coder_ratio": True}, r"coder_ratio must be a number in \(0, 1\], got True"),
    ({"learner_ratio": float("nan")}, r"learner_ratio must be a number in \(0, 16\]"),
    ({"learner_ratio": 1000}, r"learner_ratio must be a number in \(0, 16\]"),
    ({"downsample_block": "residual"}, "unknown downsample_block 'residual'"),
    ({"coder": "tied"}, "unknown coder 'tied'; choose one of free, orthogonal"),
    ({"impl": "fast"}, "unknown impl 'fast'; choose one of explicit, fused"),
])
def test_bad_pnnh_arguments(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        create_model("pnnh20", **kwargs)


def _mean_last_cka(name: str, num_images: int, seeds: int = 5) -> float:
    images = load_data("synthetic", image_size=32, length=num_images)
    config = ProbeConfig(num_images=num_images, metrics=("cka",))
    return sum(probe(probe_model(name, images, seed=seed), images, config)["cka_input"].iloc[-1]
               for seed in range(seeds)) / seeds


def test_at_initialisation_pnnh110_keeps_the_input_as_resnet110_does_and_plain110_does_not():
    """Over 5 seeds and 256 synthetic images at 32 px, the mean last-site cka_input of pnnh110 is at least 0.9x that
    of resnet110, and plain110's is under half of it. (Measured: 0.162 for both, 0.0035 for plain110; the first
    version, with plain stage transitions, kept less than resnet110 at every seed tried.)"""
    resnet = _mean_last_cka("resnet110", 256)
    assert _mean_last_cka("pnnh110", 256) >= 0.9 * resnet
    assert _mean_last_cka("plain110", 256) < 0.5 * resnet


def test_a_seed_gives_pnnh_the_learner_weights_of_the_resnet():
    """Drawing E leaves torch's generator alone, so comparisons at initialisation are paired (whatever k): with k = C,
    pnnh34 of a seed is resnet34 of that seed, and the two keep the input alike (5-seed means: benchmarks/RESULTS.md)."""
    torch.manual_seed(7)
    resnet = create_model("resnet34", image_size=32).state_dict()
    torch.manual_seed(7)
    pnnh = create_model("pnnh34", image_size=32, coder_ratio=0.5).state_dict()
    assert all(torch.equal(resnet[key], pnnh[key]) for key in resnet)
    ckas = [_mean_last_cka(name, 64, seeds=1) for name in ("resnet34", "pnnh34")]
    assert ckas[1] == pytest.approx(ckas[0], rel=1e-3)


def test_with_its_defaults_pnnh_trains_as_the_resnet_of_its_seed(tmp_path):
    """What an orthonormal E with k = C means: E^T E = I for good and the pnnh transitions add the shortcut's S(x), so
    the default pnnh20 computes resnet20's function at every step; with the same seed (the same learner weights) and
    data, the two runs' logs agree. A narrower coder makes the function, and the run, differ."""
    from dissipate.train import TrainConfig, train

    config = TrainConfig(model="resnet20", data="synthetic", epochs=2, batch_size=16, subset=64, test_subset=32,
                         image_size=16)
    logs = {name: train(dataclasses.replace(config, model=name.split()[0], model_kwargs=options), tmp_path / name)
            for name, options in (("resnet20", {}), ("pnnh20", {}), ("pnnh20 half-coder", {"coder_ratio": 0.5}))}
    losses = {name: [row["train_loss"] for row in log] for name, log in logs.items()}
    assert losses["pnnh20"] == pytest.approx(losses["resnet20"], rel=1e-4)
    assert losses["pnnh20 half-coder"] != pytest.approx(losses["resnet20"], rel=1e-3)
