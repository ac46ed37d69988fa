import io
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from PIL import Image

from dissipate.bound_check import COLUMNS
from dissipate.checkpoint import read_checkpoint, save_checkpoint
from dissipate.models import count_parameters, create_model
from tests.helpers import run_cli
from tests.test_data import write_fashion_mnist


def test_models_csv_lists_the_selected_models(capsys):
    code, out, _ = run_cli(capsys, "models", "resnet20", "pnnh[0-9]*", "--format", "csv", "--flops")
    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert list(table["model"]) == ["resnet20", "pnnh18", "pnnh20", "pnnh32", "pnnh34", "pnnh44", "pnnh50", "pnnh56",
                                    "pnnh101", "pnnh110"]
    assert list(table.columns) == ["model", "family", "depth", "stem", "params", "flops_32px", "flops_224px"]
    code, out, _ = run_cli(capsys, "models", "resnet20", "--format", "csv")  # FLOPs only when asked: a quick table
    assert code == 0 and out.splitlines()[0] == "model,family,depth,stem,params"
    assert table.set_index("model").loc["pnnh20", "params"] == count_parameters(create_model("pnnh20"))


def test_models_json_and_table(capsys):
    code, out, _ = run_cli(capsys, "models", "vgg11", "--format", "json", "--num-classes", "1000")
    assert code == 0 and json.loads(out)[0]["params"] == 132_868_840  # torchvision's vgg11_bn
    code, out, _ = run_cli(capsys, "models", "resnet18", "--flops")
    assert code == 0 and "resnet18" in out and "11.18M" in out and "flops_224px" in out
    code, out, _ = run_cli(capsys, "models", "resnet20", "--image-size", "28", "--format", "csv")
    assert code == 0 and out.splitlines()[0].endswith(",params,flops_28px")


@pytest.mark.parametrize("args, message", [
    (["models", "resnet35"], "unknown model 'resnet35'; did you mean resnet34"),
    (["models", "densenet*"], "no model matches 'densenet*'"),
    (["models", "resnet20", "--stem", "huge"], "unknown stem 'huge'"),
    (["models", "resnet20", "--num-classes", "0"], "num_classes must be an integer from 1 to 1000000"),
    (["models", "vgg11", "--stem", "cifar", "--image-size", "16"], "vgg11 cannot take 16x16 images"),
    (["models", "resnet20", "--image-size", "0"], "image sizes must be positive integers, got [0]"),
    (["probe", "--model", "resnet20", "--data", "cifar10"], "cifar10 is not in"),
    (["probe", "--model", "resnet20", "--num-images", "0"], "num_images must be at least 1, got 0"),
    (["probe", "--model", "resnet20", "--metrics", "cka,surivval"], "unknown metric 'surivval' (did you mean "
                                                                    "'survival'?)"),
    (["probe", "--model", "vgg11", "--image-size", "16"], "vgg11 cannot take synthetic images of 3x16x16"),
    (["probe", "--model", "plain35"], "unknown model 'plain35'; did you mean plain34"),
    (["probe", "--model", "resnet20", "--data", "mnist"], "unknown dataset 'mnist'"),
    (["probe", "--model", "pnnh20", "--model-arg", "coder"], "--model-arg expects KEY=VALUE"),
    (["probe", "--model", "pnnh20", "--model-arg", "encoder=1"], "model 'pnnh20' takes no argument encoder; it takes"),
    (["probe"], "name a model with --model (or give a dissipate checkpoint, which names its own)"),
    (["train", "--data", "synthetic"], "name the model with --model, or the run to resume with --out"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err
    assert "Traceback" not in out + err


def test_installed_entry_point_reports_errors_without_traceback():
    result = subprocess.run([sys.executable, "-m", "dissipate", "models", "resnet35"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: unknown model 'resnet35'; did you mean resnet34, resnet32, resnet50? "
                                     "(`dissipate models` lists them all)")
    version = subprocess.run([sys.executable, "-m", "dissipate", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("dissipate ")


def test_probe_plain34_offline_writes_one_row_per_relu_and_its_files(capsys, tmp_path):
    code, out, err = run_cli(capsys, "probe", "--model", "plain34", "--num-images", "16", "--batch-size", "8",
                             "--out", str(tmp_path))
    assert code == 0, err
    table = pd.read_csv(tmp_path / "probe.csv")
    assert len(table) == 33 and table["site"].iloc[-1] == "layer4.2.act2" and set(table["kind"]) == {"plain"}
    assert json.loads((tmp_path / "probe.json").read_text())[0]["site"] == "act1"
    assert (tmp_path / "probe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((tmp_path / "probe_config.json").read_text())
    assert config["calibrated_bn"] and config["data"] == "synthetic" and config["config"]["num_images"] == 16
    assert "layer4.2.act2" in out and "cka_input" in out and "dists_input" not in out  # DISTS unavailable here
    assert "compare: dissipate probe --model resnet34" in out
    assert err.count("note: DISTS is n/a") == 1


def test_probe_reads_a_checkpoint_with_its_own_statistics(capsys, tmp_path):
    model = create_model("resnet20")
    model.train()(torch.randn(8, 3, 32, 32))  # BN statistics that are not the probe set's
    save_checkpoint(tmp_path / "ckpt.pt", model, dataset="synthetic", epoch=1, metrics={})
    code, out, err = run_cli(capsys, "probe", "--model", "resnet20", "--checkpoint", str(tmp_path / "ckpt.pt"),
                             "--num-images", "8", "--metrics", "survival", "--format", "csv", "--out",
                             str(tmp_path / "out"))
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(out))) == 19
    assert not json.loads((tmp_path / "out" / "probe_config.json").read_text())["calibrated_bn"]

    code, _, err = run_cli(capsys, "probe", "--model", "plain20", "--checkpoint", str(tmp_path / "ckpt.pt"))
    assert code == 2 and "is a checkpoint of 'resnet20', not of 'plain20'" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "probe", "--model", "resnet20", "--checkpoint", str(tmp_path / "ckpt.pt"),
                           "--data", "synthetic", "--data-dir", str(tmp_path), "--num-images", "4",
                           "--batch-size", "2", "--metrics", "survival", "--out", str(tmp_path / "out"))
    assert code == 0, err


def test_probe_refuses_a_checkpoint_for_other_images(capsys, tmp_path):
    save_checkpoint(tmp_path / "grey.pt", create_model("resnet20", in_chans=1), dataset="fashion-mnist", epoch=1,
                    metrics={})
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "images" / cls / "0.png")
    code, _, err = run_cli(capsys, "probe", "--model", "resnet20", "--checkpoint", str(tmp_path / "grey.pt"),
                           "--data", f"folder:{tmp_path / 'images'}")
    assert code == 2 and err.count("\n") == 1
    assert "holds a model for 1-channel images, and folder:" in err and "has 3-channel images" in err


def test_probe_seed_fixes_the_network_at_initialisation(capsys, tmp_path):
    def run(seed: str) -> str:
        code, out, err = run_cli(capsys, "probe", "--model", "resnet20", "--num-images", "8", "--metrics", "moments",
                                 "--format", "csv", "--seed", seed, "--out", str(tmp_path))
        assert code == 0, err
        return out
    assert run("1") == run("1") != run("2")


def test_probe_model_args_reach_the_model(capsys, tmp_path):
    code, out, err = run_cli(capsys, "probe", "--model", "pnnh20", "--model-arg", "downsample_block=original",
                             "--model-arg", "coder_ratio=0.5", "--num-images", "8", "--metrics", "survival",
                             "--format", "csv", "--out", str(tmp_path))
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out)).set_index("site")
    assert table.loc["layer2.0.act2", "kind"] == "residual"  # the original block where the stage downsamples
    assert table.loc["layer1.0.act1", "channels"] == 16 + 2 * 8  # learner + the coder's +/- pair at k = C / 2
    config = json.loads((tmp_path / "probe_config.json").read_text())
    assert config["model_kwargs"] == {"stem": "cifar", "downsample_block": "original", "coder_ratio": 0.5,
                                      "learner_ratio": 1.0, "act": "relu", "coder": "orthogonal", "impl": "fused",
                                      "orthogonal_map": "cayley", "width": 1.0}


def test_bound_check_without_arguments_is_the_monte_carlo_level(capsys):
    code, out, err = run_cli(capsys, "bound-check")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == list(COLUMNS) and sum(line.split()[:1] == ["monte-carlo"] for line in lines) == 36
    assert "all 36 bounds that must hold hold" in err
    legend = {line.split()[0] for line in lines[38:] if line.strip()}  # under the table and a blank line
    assert legend == {"level", "mu_pred", "mu_meas", "var_pred", "surv_meas", "surv_bound", "holds", "margin"}
    assert "margin" not in run_cli(capsys, "bound-check", "--format", "csv")[1].split("\n", 1)[1]  # no legend


def test_the_bound_check_figure_lists_only_what_it_draws():
    from dissipate.plots import draw_bound_check

    frame = pd.DataFrame({"level": "init", "model": "plain20", "site": ["act1", "layer1.0.act1"], "kind": "plain",
                          "surv_meas": [0.5, 0.5], "surv_bound": [float("nan")] * 2, "holds": pd.NA})
    labels = lambda figure: {text.get_text() for legend in figure.legends for text in legend.get_texts()}  # noqa: E731
    assert "Theorem 3.3 bound" not in labels(draw_bound_check(frame))
    assert "Theorem 3.3 bound" in labels(draw_bound_check(frame.assign(surv_bound=0.3, holds=True)))


def test_bound_check_a_model_writes_csv_and_the_figure(capsys, tmp_path):
    code, out, err = run_cli(capsys, "bound-check", "--model", "pnnh20", "--num-images", "32", "--format", "csv",
                             "--out", str(tmp_path / "figs" / "bound.png"))
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 19 and (frame["level"] == "init").all()
    assert Image.open(tmp_path / "figs" / "bound.png").size[0] > 300


def test_bound_check_exits_1_when_a_bound_that_must_hold_fails(capsys, monkeypatch):
    from dissipate import probe as probe_module

    monkeypatch.setattr(probe_module, "cantelli_bound", lambda mean, var: 0.99 if mean > 0 else 0.0)
    code, out, err = run_cli(capsys, "bound-check", "--model", "resnet20", "--num-images", "32", "--format", "json")
    assert code == 1 and "FAILED: resnet20 layer1.0.act2 (init)" in err
    assert not json.loads(out)[2]["holds"]


def test_bound_check_of_a_checkpoint_reports_findings_and_exits_0(capsys, tmp_path):
    from tests.test_bound_check import declared_sites, wrecked_pnnh20

    save_checkpoint(tmp_path / "wrecked.pt", wrecked_pnnh20(), dataset="synthetic", epoch=3, metrics={})
    code, out, err = run_cli(capsys, "bound-check", "--checkpoint", str(tmp_path / "wrecked.pt"), "--num-images",
                             "64", "--format", "csv")  # the checkpoint names its model
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert (frame["level"] == "trained").all() and frame["holds"].eq(False).any()
    failing, predicted = frame["holds"].eq(False).sum(), frame["holds"].notna().sum()
    assert err.count("finding: at layer") == failing and "FAILED" not in err
    assert f"{failing} of {predicted} bounds on the trained network do not hold (findings, not errors)" in err
    assert f"{19 - predicted} sites have no prediction" in err and predicted == len(declared_sites(wrecked_pnnh20()))


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet20", "--out", "figure.txt"], "a .png or .pdf file"),
    (["--model", "resnet2"], "unknown model 'resnet2'"),
    (["--model", "resnet20", "--num-images", "0"], "num_images must be at least 1"),
    (["--samples", "1"], "Monte Carlo samples must be from 2"),
    (["--width", "200"], "images as inputs need square widths (16x16 = 256), got (200,)"),
])
def test_bound_check_bad_usage_is_one_line_and_exit_2(capsys, args, message):
    code, _, err = run_cli(capsys, "bound-check", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_bound_check_needs_a_model_for_a_bare_state_dict(capsys, tmp_path):
    torch.save(create_model("resnet20").state_dict(), tmp_path / "bare.pt")
    code, _, err = run_cli(capsys, "bound-check", "--checkpoint", str(tmp_path / "bare.pt"))
    assert code == 2 and "name a model with --model" in err


TINY_TRAIN = ("train", "--model", "resnet20", "--data", "synthetic", "--subset", "64", "--test-subset", "32",
              "--batch-size", "32", "--device", "cpu")


@pytest.mark.parametrize("args, message", [
    (["--data", "cifar11"], "unknown dataset 'cifar11' (did you mean 'cifar10'?)"),
    (["--batch-size", "128"], "batch size 128 is larger than the 64 training images of synthetic"),
    (["--lr", "0"], "lr must be positive, got 0.0"),
    (["--lr", "-0.1"], "lr must be positive, got -0.1"),
    (["--resume"], "--resume: no checkpoint to resume in"),
    (["--optimizer", "adam"], "unknown optimizer 'adam'; choose one of sgd, adamw"),
])
def test_train_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *TINY_TRAIN, "--epochs", "1", "--out", str(tmp_path / "run"), *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_train_logs_each_epoch_and_its_checkpoints_feed_probe_and_bound_check(capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *TINY_TRAIN, "--epochs", "2", "--out", str(run))
    assert code == 0, err
    assert out.startswith("epoch   1 ") and "\nepoch   2 " in out and "best test accuracy" in out
    assert len(pd.read_csv(run / "log.csv")) == 2
    code, out, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--epochs", "3")
    assert code == 2 and "it has epochs=2, not 3" in err
    code, out, err = run_cli(capsys, "probe", "--checkpoint", str(run / "best.pt"), "--num-images", "16",
                             "--metrics", "survival", "--format", "csv", "--out",
                             str(tmp_path / "probe"))
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 19, err
    code, out, err = run_cli(capsys, "bound-check", "--checkpoint", str(run / "latest.pt"), "--num-images", "16",
                             "--format", "csv")
    assert code == 0 and (pd.read_csv(io.StringIO(out))["level"] == "trained").all(), err


def test_an_interrupt_is_one_line_and_exit_130(capsys, monkeypatch):
    from dissipate import cli

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    code, _, err = run_cli(capsys, "train", "--model", "resnet20")
    assert code == 130 and err.startswith("interrupted;") and err.count("\n") == 1


def test_a_vit_trains_on_fashion_mnist_by_its_own_recipe_and_its_checkpoint_feeds_the_probe(capsys, tmp_path):
    """`dissipate train --model vit6 --data fashion-mnist`, short: AdamW by default, recorded; the probe and the
    bound-check of its checkpoint take its 28 px images without being told; a ViT asked for other sizes says so."""
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=False, count=32)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--model", "vit6", "--data", "fashion-mnist", "--data-dir",
                             str(tmp_path), "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(run))
    assert code == 0 and out.startswith("epoch   1 "), err
    saved = read_checkpoint(run / "latest.pt")
    assert saved["train_config"]["optimizer"] == "adamw" and saved["train_config"]["lr"] == 1e-3
    assert saved["model_kwargs"]["img_size"] == 28 and "exp_avg" in saved["optimizer"]["state"][0]
    code, out, err = run_cli(capsys, "probe", "--checkpoint", str(run / "latest.pt"), "--num-images", "8",
                             "--metrics", "rank,cka", "--format", "csv", "--out", str(tmp_path / "probe"))
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 18, err
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(run / "latest.pt"), "--image-size", "32",
                           "--num-images", "8", "--out", str(tmp_path / "probe32"))
    assert code == 2 and "takes 28x28 images" in err and err.count("\n") == 1, err


def test_probe_and_bound_check_of_the_transformers_from_the_command_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "probe", "--model", "plainvit24", "--num-images", "8", "--metrics",
                             "survival,cka", "--format", "csv", "--out", str(tmp_path / "probe"))
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 72, err
    code, out, err = run_cli(capsys, "bound-check", "--model", "pnnhvit12", "--num-images", "16")
    assert code == 0 and out.count("not applicable") == 24 and "all 12 bounds that must hold hold" in err, err
    code, _, err = run_cli(capsys, "probe", "--model", "vit6", "--model-arg", "img_size=64")
    assert code == 2 and "img_size is not a model option here: it follows the data" in err, err
