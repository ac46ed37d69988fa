"""Models nobody here wrote (`torchvision:`, `timm:`, `module:`), the adapters that declare their sites, and their
weight files: from the command line and from Python, never from the network."""

import sys

import pandas as pd
import pytest
import torch
import torchvision

from dissipate.checkpoint import load_state_dict
from dissipate.data import load_data
from dissipate.models import create_model
from dissipate.probe import ProbeConfig, probe, probe_model
from dissipate.record import find_components, site_kind
from tests.helpers import Exploit, run_cli
from tests.test_data import write_fashion_mnist

METRICS = "survival,moments,rank,cka,theory"


def cli_probe(capsys, tmp_path, *args):
    code, out, err = run_cli(capsys, "probe", "--num-images", "32", "--metrics", METRICS, "--format", "csv",
                             "--out", str(tmp_path / "out"), *args)
    assert code == 0, err
    return pd.read_csv(tmp_path / "out" / "probe.csv")


def test_a_torchvision_resnet18_from_the_command_line_is_the_python_probe_of_the_same_model(capsys, tmp_path):
    frame = cli_probe(capsys, tmp_path, "--model", "torchvision:resnet18")
    images = load_data("synthetic", length=32, seed=0)
    expected = probe(probe_model("torchvision:resnet18", images, seed=0), images,
                     ProbeConfig(metrics=tuple(METRICS.split(",")), num_images=32, seed=0))
    assert len(frame) == 17 and list(frame["site"]) == list(expected["site"])
    assert list(frame["site"][:3]) == ["relu", "layer1.0.relu", "layer1.0.relu#1"]  # one ReLU, called twice
    assert list(frame["kind"]) == ["plain"] + ["plain", "residual"] * 8
    numbers = [c for c in expected if expected[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(frame[numbers], expected[numbers].reset_index(drop=True), rtol=1e-6)


def test_bound_check_on_torchvision_resnet18_predicts_its_residual_sites_and_they_hold(capsys):
    code, out, err = run_cli(capsys, "bound-check", "--model", "torchvision:resnet18", "--num-images", "32",
                             "--format", "csv")
    assert code == 0, err
    frame = pd.read_csv(pd.io.common.StringIO(out))
    residual = frame[frame["kind"] == "residual"]
    assert len(residual) == 8 and residual["holds"].astype(bool).all()
    assert (residual["surv_bound"] > 0.1).sum() >= 4  # stages whose shortcut carries the input's positive mean
    assert residual["var_pred"].notna().all() and frame.loc[frame["kind"] == "plain", "holds"].isna().all()


@pytest.mark.parametrize("name, kinds, parts", [
    ("torchvision:resnet50", {"layer1.0.relu": "plain", "layer1.0.relu#1": "plain", "layer1.0.relu#2": "residual"},
     {"layer1.0.relu#2": {"branch": "bn3", "identity": "downsample"}, "layer1.1.relu#2": {"branch": "bn3",
                                                                                           "identity": ""}}),
    ("torchvision:vgg11", {"features.1": "plain", "classifier.1": "plain"}, {}),
    ("timm:resnet18", {"act1": "plain", "layer1.0.act1": "plain", "layer1.0.act2": "residual"},
     {"layer2.0.act2": {"branch": "bn2", "identity": "downsample"}}),
    ("timm:resnet50", {"layer1.0.act3": "residual"}, {"layer1.0.act3": {"branch": "bn3", "identity": "downsample"}}),
    ("timm:vit_tiny_patch16_224", {"blocks.0.mlp.act": "plain", "blocks.11.mlp.act": "plain"}, {}),
])
def test_adapters_declare_the_kind_of_every_site_and_the_parts_of_each_residual_add(name, kinds, parts):

    model = create_model(name, num_classes=10)
    for site, kind in kinds.items():
        assert site_kind(model, site) == kind, site
    declared = {}
    for component in find_components(model):
        declared.setdefault(component.site, {})[component.role] = component.source
    for site, roles in parts.items():
        prefix = site.rsplit(".", 1)[0]
        assert declared[site] == {role: f"{prefix}.{source}" if source else prefix for role, source in roles.items()}


def test_a_model_without_an_adapter_probes_with_kind_unknown(capsys, tmp_path):
    frame = cli_probe(capsys, tmp_path, "--model", "torchvision:mobilenet_v3_small", "--image-size", "32")
    assert len(frame) > 10 and set(frame["kind"]) == {"unknown"} and frame["surv_bound"].isna().all()


def test_a_users_factory_is_built_with_its_options(capsys, tmp_path):
    frame = cli_probe(capsys, tmp_path, "--model", "module:tests.models.test_external:small_net",
                      "--model-arg", "width=6")
    assert list(frame["site"].astype(str)) == ["1", "3"] and list(frame["channels"]) == [6, 6]


def small_net(width: int = 4) -> torch.nn.Module:
    """A factory of a user's own model, for `--model module:tests.models.test_external:small_net`."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU(), torch.nn.Conv2d(width, width, 3),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(width, 10))


def trained_resnet18(num_classes: int) -> torch.nn.Module:
    """A torchvision resnet18 whose weights differ from any initialisation: what a weight file holds."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_weights_from_a_file_keep_their_own_head_and_statistics(capsys, tmp_path):
    model = trained_resnet18(num_classes=7)
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    frame = cli_probe(capsys, tmp_path, "--model", "torchvision:resnet18", "--weights", str(tmp_path / "mine.pt"))
    images = load_data("synthetic", length=32, seed=0)
    expected = probe(model, images, ProbeConfig(metrics=tuple(METRICS.split(",")), num_images=32, seed=0,
                                                calibrate_bn=False))
    pd.testing.assert_series_equal(frame["cka_input"], expected["cka_input"].reset_index(drop=True), rtol=1e-6)


def test_a_torchvision_weight_name_loads_its_file_from_the_hub_cache_and_is_never_downloaded(capsys, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    code, _, err = run_cli(capsys, "probe", "--model", "torchvision:resnet18", "--weights", "IMAGENET1K_V1")
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert code == 2 and err.count("\n") == 1 and f"download {url} to {cached}" in err
    cached.parent.mkdir(parents=True)
    model = trained_resnet18(num_classes=1000)
    torch.save(model.state_dict(), cached)
    frame = cli_probe(capsys, tmp_path, "--model", "torchvision:resnet18", "--weights", "IMAGENET1K_V1")
    assert len(frame) == 17
    code, _, err = run_cli(capsys, "probe", "--model", "torchvision:resnet18", "--weights", "IMAGENET1K_V9")
    assert code == 2 and "IMAGENET1K_V1, DEFAULT" in err


def test_a_weight_file_that_would_run_code_is_refused_and_never_runs(capsys, tmp_path):
    victim = tmp_path / "pwned"
    torch.save({"fc.weight": Exploit(victim)}, tmp_path / "hostile.pt")
    code, _, err = run_cli(capsys, "probe", "--model", "torchvision:resnet18", "--weights",
                           str(tmp_path / "hostile.pt"), "--out", str(tmp_path / "out"))
    assert code == 2 and "could run code" in err and not victim.exists()


@pytest.mark.parametrize("args, named", [
    (["--model", "torchvision:resnet81"], "torchvision has no model 'resnet81' (did you mean 'resnet18'?)"),
    (["--model", "module:no_such_package.nets:net"], "cannot import 'no_such_package.nets'"),
    (["--model", "module:tests.models.test_external:no_net"], "has no 'no_net'"),
    (["--model", "module:tests.models.test_external"], "module: takes PACKAGE.MODULE:FACTORY"),
    (["--model", "resnet20", "--weights", "IMAGENET1K_V1"], "dissipate's own take --checkpoint"),
    (["--model", "torchvision:resnet18", "--model-arg", "depth=3"], "cannot be built with options {'depth': 3}"),
    (["--model", "module:tests.models.test_external:small_net", "--model-arg", "depth=3"], "cannot be built"),
])
def test_bad_names_and_weights_are_one_sentence(capsys, tmp_path, args, named):
    code, _, err = run_cli(capsys, "probe", "--num-images", "8", "--out", str(tmp_path / "out"), *args)
    assert code == 2 and err.count("\n") == 1 and named in err, err


def test_grey_images_for_a_torchvision_model_are_one_sentence(capsys, tmp_path):
    write_fashion_mnist(tmp_path / "data" / "FashionMNIST" / "raw", compress=False, count=8)
    code, _, err = run_cli(capsys, "probe", "--model", "torchvision:resnet18", "--data", "fashion-mnist",
                           "--data-dir", str(tmp_path / "data"), "--num-images", "8", "--out", str(tmp_path / "o"))
    assert code == 2 and "torchvision:resnet18 takes 3-channel images, and these have 1" in err


def test_without_timm_one_line_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    code, _, err = run_cli(capsys, "probe", "--model", "timm:vit_tiny_patch16_224", "--out", str(tmp_path / "o"))
    assert code == 2 and err.strip() == 'error: timm is not installed; install it with: pip install "dissipate[timm]"'


def test_a_timm_vision_transformer_probes_at_224_px(capsys, tmp_path):
    frame = cli_probe(capsys, tmp_path, "--model", "timm:vit_tiny_patch16_224", "--image-size", "224",
                      "--num-images", "16")
    assert list(frame["site"]) == [f"blocks.{k}.mlp.act" for k in range(12)]
    assert (frame["channels"] == 768).all() and frame["cka_input"].between(0, 1).all()


def test_a_torchvision_model_trains_and_its_checkpoint_rebuilds_it(tmp_path):
    from dissipate.checkpoint import load_model
    from dissipate.train import TrainConfig, train

    config = TrainConfig(model="torchvision:resnet18", data="synthetic", epochs=1, batch_size=16, subset=32,
                         test_subset=16, image_size=16, device="cpu", amp=False)
    train(config, tmp_path / "run")
    model, saved = load_model(tmp_path / "run" / "latest.pt")
    assert saved["model"] == "torchvision:resnet18" and isinstance(model, torchvision.models.ResNet)
    reference = create_model("torchvision:resnet18", num_classes=10)
    load_state_dict(reference, saved["state_dict"])
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x))
