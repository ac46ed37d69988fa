"""Hostile models, options and probe files, as a careful tester feeds them to `dissipate probe` and `dissipate plot`:
each gets one sentence naming the culprit and exit code 2 (or a table with NaN where the model's numbers are NaN,
and a note saying where), never a traceback and never silence."""

import math
import signal
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from dissipate.errors import InvalidArgumentError
from dissipate.metrics import ChannelCovariance, reconstruction_r2, singular_values
from dissipate.models import create_model
from dissipate.probe import SiteStats, probe
from tests.helpers import run_cli
from tests.test_hostile import assert_one_line_error

HERE = "module:tests.test_hostile_probe"


def small_cnn() -> nn.Module:
    """Two conv layers, each with its ReLU (sites 1 and 3), and a linear head."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def raising() -> nn.Module:
    raise RuntimeError("no such layer")


def exiting() -> nn.Module:
    sys.exit(7)


def interrupting() -> nn.Module:
    raise KeyboardInterrupt  # the factory's own doing: no Ctrl-C was pressed


def pressing_ctrl_c() -> nn.Module:
    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, while the factory runs
    return small_cnn()


class BrokenForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3), nn.ReLU()

    def forward(self, x):
        self.act(self.conv(x))
        raise ValueError("the head is not wired up")


def broken_forward() -> nn.Module:
    return BrokenForward()


def lazy() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 10))


class NaNAfterFirst(nn.Module):
    """Finite at its first site (`act`); every pre-activation and activation of its second (`act2`) is NaN."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.conv2, self.act2 = nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU()

    def forward(self, x):
        return self.act2(self.conv2(self.act(self.conv(x)) * math.nan)).mean((2, 3))


def nan_after_first() -> nn.Module:
    return NaNAfterFirst()


def probe_csv(capsys, tmp_path, *args: str) -> tuple[pd.DataFrame, str]:
    code, _, err = run_cli(capsys, "probe", "--num-images", "8", "--out", str(tmp_path), "--format", "csv", *args)
    assert code == 0, err
    return pd.read_csv(tmp_path / "probe.csv").set_index("site"), err


@pytest.mark.parametrize("factory, raised", [("raising", "raised RuntimeError: no such layer"),
                                             ("exiting", "raised SystemExit: 7"),
                                             ("interrupting", "raised KeyboardInterrupt")])
def test_a_factory_that_raises_or_exits_is_named_with_what_it_raised(capsys, tmp_path, factory, raised):
    code, _, err = run_cli(capsys, "probe", "--model", f"{HERE}:{factory}", "--out", str(tmp_path))
    assert_one_line_error(code, err, f"{HERE}:{factory} {raised}")


def test_a_real_ctrl_c_while_a_factory_runs_is_still_an_interruption(capsys, tmp_path):
    code, _, err = run_cli(capsys, "probe", "--model", f"{HERE}:pressing_ctrl_c", "--out", str(tmp_path))
    assert code == 130 and err.startswith("interrupted") and err.count("\n") == 1, err


def test_a_models_forward_that_raises_is_named_with_the_exception(capsys, tmp_path):
    code, _, err = run_cli(capsys, "probe", "--model", f"{HERE}:broken_forward", "--num-images", "8", "--out",
                           str(tmp_path))
    assert_one_line_error(code, err, f"{HERE}:broken_forward's forward raised ValueError", "not wired up")


def test_a_bug_in_the_probes_own_hooks_is_not_passed_off_as_the_models(monkeypatch):
    """A user's model runs dissipate's hooks inside its forward: what they raise is dissipate's, and stays a traceback
    (a RuntimeError was once reported as the model not taking the images)."""
    def update(self, pre, post, batch):
        raise RuntimeError("a bug of dissipate")

    monkeypatch.setattr(SiteStats, "update", update)
    with pytest.raises(RuntimeError, match="a bug of dissipate"):
        probe(small_cnn(), torch.rand(8, 3, 8, 8), num_images=8, metrics=("survival",))


def test_a_lazy_module_not_yet_sized_is_one_sentence(capsys, tmp_path):
    code, _, err = run_cli(capsys, "probe", "--model", f"{HERE}:lazy", "--num-images", "8", "--out", str(tmp_path))
    assert_one_line_error(code, err, f"{HERE}:lazy's 1.weight is not initialised yet", "LazyLinear")


def test_nan_activations_give_nan_metrics_at_their_site_and_one_note_naming_it(capsys, tmp_path):
    """Rank (an eigendecomposition that does not converge on NaN), survival (which read NaN as not positive:
    0.000), moments and CKA: NaN at the NaN site, numbers at the other, one note that names the site."""
    frame, err = probe_csv(capsys, tmp_path, "--model", f"{HERE}:nan_after_first", "--metrics",
                           "survival,moments,rank,cka")
    numbers = ["surviving", "dead", "always_on", "pre_mean", "pre_var", "erank", "nrank", "srank", "cka_input"]
    assert frame.loc["act2", numbers].isna().all() and frame.loc["act", numbers].notna().all()
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and " at act2 (pre-activations and activations): " in notes[0], err  # act2 alone


def test_weights_that_overflow_give_nan_cka_and_read_out_with_a_note(capsys, tmp_path):
    """All weights 1e38 (finite, so the checkpoint loads): every activation overflows, and the read-out's eigh no
    longer fails to converge on them."""
    model = small_cnn()
    torch.save({name: torch.full_like(value, 1e38) for name, value in model.state_dict().items()}, tmp_path / "w.pt")
    frame, err = probe_csv(capsys, tmp_path, "--model", f"{HERE}:small_cnn", "--checkpoint", str(tmp_path / "w.pt"),
                           "--metrics", "cka,recon,ssim")
    assert frame[["cka_input", "recon_r2", "ssim_input"]].isna().all().all()
    assert err.count("note: NaN or infinite values") == 1 and "1 (activations)" in err and "3 (" in err, err


def test_every_decomposition_in_the_metrics_gives_nan_on_nan_features():
    features = torch.randn(16, 4, 5, 5)
    features[3, 1, 2, 2] = math.nan
    covariance = ChannelCovariance()
    covariance.update(features)
    assert all(math.isnan(value) for value in covariance.result().values())
    stacked = torch.stack([torch.eye(3), torch.full((3, 3), math.inf)])
    assert singular_values(stacked)[0].tolist() == [1.0, 1.0, 1.0] and singular_values(stacked)[1].isnan().all()
    assert math.isnan(reconstruction_r2(features, torch.rand(16, 3, 10, 10)))


def test_a_model_arg_given_twice_is_refused_naming_its_key(capsys, tmp_path):
    code, _, err = run_cli(capsys, "probe", "--model", "vit6", "--model-arg", "act=gelu", "--model-arg", "act=relu",
                           "--num-images", "8", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--model-arg act is given twice")


def test_a_vit_size_with_no_divisor_near_an_eighth_is_refused_with_sizes_that_work(capsys, tmp_path):
    """31 px would be patched by 1: 961 tokens, a hundred times the work of 32 px, and minutes of probing."""
    with pytest.raises(InvalidArgumentError, match="img_size 31 .* 31x31 tokens.* such as 30 or 32"):
        create_model("vit6", image_size=31)
    assert create_model("vit6", image_size=31, patch_size=31).spec.kwargs["patch_size"] == 31  # asked for: built
    code, _, err = run_cli(capsys, "probe", "--model", "vit6", "--image-size", "31", "--out", str(tmp_path))
    assert_one_line_error(code, err, "img_size 31", "30 or 32", "patch_size")


@pytest.mark.parametrize("model, size", [("torchvision:vit_b_16", "32"), ("timm:vit_tiny_patch16_224", "30")])
def test_a_library_vit_at_another_image_size_says_which_size_it_takes(capsys, tmp_path, model, size):
    if model.startswith("timm:"):
        pytest.importorskip("timm")
    code, _, err = run_cli(capsys, "probe", "--model", model, "--image-size", size, "--num-images", "4",
                           "--metrics", "survival", "--out", str(tmp_path))
    assert_one_line_error(code, err, f"{model} takes 224x224 images, not synthetic images of 3x{size}x{size}")


PROBE_CSV = "site,depth,kind,module,channels,surviving,cka_input\n"


@pytest.mark.parametrize("rows, wrong", [
    ("a,one,plain,ReLU,8,,\nb,two,plain,ReLU,8,,\n", "its depth column holds 'one' in row 1"),
    ("a,1,plain,ReLU,8,0.5,0.9\nb,,plain,ReLU,8,0.5,0.8\n", "its depth column holds nothing in row 2"),
    # impossible values, each named with its column and row (the third hostile pass drew them all)
    ("a,1,plain,ReLU,8,0.5,0.9\nb,inf,plain,ReLU,8,0.5,0.8\n", "its depth column holds inf in row 2, where a whole"),
    ("a,1e308,plain,ReLU,8,0.5,0.9\n", "its depth column holds 1e+308 in row 1"),
    ("a,-2,plain,ReLU,8,0.5,0.9\nb,-1,plain,ReLU,8,0.5,0.8\n", "its depth column holds -2 in row 1"),
    ("a,1,plain,ReLU,-5,0.5,0.9\n", "its channels column holds -5 in row 1, where a whole number from 1"),
    ("a,1,plain,ReLU,8,0.5,0.9\nb,2,plain,ReLU,8,5.0,0.8\n", "its surviving column holds 5.0 in row 2, where a "
                                                           "number from 0 to 1 belongs"),
    ("a,1,plain,ReLU,8,-3.0,0.9\n", "its surviving column holds -3.0 in row 1"),
    ("", "a header and no rows"),
    ("a,1,plain,ReLU,8,0.5,0.9\na,2,plain,ReLU,8,0.5,0.8\n", "lists site a twice"),
    ("a,1,plain,ReLU,8,,\nb,2,plain,ReLU,8,,\n", "nothing to draw")])
def test_a_probe_csv_that_would_draw_nothing_or_nonsense_is_refused(capsys, tmp_path, rows, wrong):
    path = tmp_path / "run" / "probe.csv"
    path.parent.mkdir()
    path.write_text(PROBE_CSV + rows)
    code, _, err = run_cli(capsys, "plot", str(path), "--out", str(tmp_path / "probes.png"))
    assert_one_line_error(code, err, str(path), wrong)
    assert not (tmp_path / "probes.png").exists()


def test_an_epoch_that_is_not_a_whole_number_is_refused_not_drawn_as_a_series(capsys, tmp_path):
    path = tmp_path / "run" / "probes.csv"
    path.parent.mkdir()
    path.write_text("epoch," + PROBE_CSV + "0,a,1,plain,ReLU,8,0.5,0.9\nx,a,1,plain,ReLU,8,0.5,0.8\n")
    code, _, err = run_cli(capsys, "plot", str(path), "--out", str(tmp_path / "probes.png"))
    assert_one_line_error(code, err, str(path), "its epoch column holds 'x' in row 2, where a whole number from 0")


@pytest.mark.parametrize("config", ["not json {", "[1, 2]", None], ids=["not JSON", "a list", "a directory"])
def test_a_probe_config_that_cannot_be_read_is_a_one_line_note(capsys, tmp_path, config):
    path = tmp_path / "run" / "probe.csv"
    path.parent.mkdir()
    path.write_text(PROBE_CSV + "a,1,plain,ReLU,8,0.5,0.9\nb,2,plain,ReLU,8,0.5,0.8\n")
    beside = path.parent / "probe_config.json"
    beside.mkdir() if config is None else beside.write_text(config)
    code, out, err = run_cli(capsys, "plot", str(path), "--out", str(tmp_path / "probes.png"))
    notes = [line for line in err.splitlines() if line.strip()]
    assert code == 0 and (tmp_path / "probes.png").is_file(), err
    assert len(notes) == 1 and notes[0].startswith(f"note: {beside} cannot be read"), err
