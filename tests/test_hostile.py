"""Hostile and broken input, as a careful tester feeds it: each gets one sentence naming the culprit and exit code 2,
never a traceback, and nothing already written is lost."""

import functools
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from dissipate.checkpoint import load_model, read_checkpoint, save_checkpoint
from dissipate.errors import CheckpointError
from dissipate.models import create_model
from dissipate.train import TrainConfig, train
from tests.helpers import Exploit, run_cli, save_resigned
from tests.test_data import write_idx
from tests.test_train import TINY


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(fragment in lines[0] for fragment in fragments), (fragments, err)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A dissipate checkpoint of resnet20, as a dict to damage."""
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "resnet20.pt", create_model("resnet20"))
    return read_checkpoint(path)


@pytest.mark.parametrize("key, value, named", [
    ("model", 12, "model 12"), ("num_classes", 10 ** 12, "num_classes 1000000000000"),
    ("in_chans", -1, "in_chans -1"), ("model_kwargs", [1], "model_kwargs [1]"),
    ("num_classes", 10.0, "num_classes 10.0"), ("state_dict", {"w": 3}, "a state_dict that is not"),
    ("model_kwargs", {"num_classes": 3}, "model_kwargs {'num_classes': 3}"),
    ("model_kwargs", {"act": functools.reduce(lambda inner, _: {"a": inner}, range(400), {})}, "{...}"),
    ("model_kwargs", {"residual": False}, "takes no argument residual")])
def test_a_checkpoint_header_of_the_wrong_type_or_size_is_named(tmp_path, capsys, checkpoint, key, value, named):
    path = tmp_path / "hostile.pt"
    save_resigned({**checkpoint, key: value}, path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out", str(tmp_path))
    assert_one_line_error(code, err, str(path), named)


@pytest.mark.parametrize("key, change, message", [
    ("conv1.weight", lambda t: t.long(), r"dtype mismatches \(checkpoint vs model\) conv1.weight torch.int64 vs"),
    ("conv1.weight", lambda t: t.to(torch.complex64), r"dtype mismatches .* conv1.weight torch.complex64 vs"),
    ("conv1.weight", lambda t: t.to_sparse(), "sparse or meta tensors conv1.weight"),
    ("fc.weight", lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "non-finite values in fc.weight"),
    ("bn1.running_var", lambda t: -t, "negative variances in bn1.running_var")])
def test_weights_that_would_be_cast_or_poison_the_numbers_are_refused(tmp_path, capsys, checkpoint, key, change,
                                                                      message):
    state = dict(checkpoint["state_dict"])
    state[key] = change(state[key])
    path = tmp_path / "odd.pt"
    save_resigned({**checkpoint, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out", str(tmp_path))
    assert_one_line_error(code, err, str(path))


def damage(path, change) -> None:
    saved = torch.load(path, weights_only=True)
    change(saved)
    save_resigned(saved, path)


def _set(mapping: dict, key, value) -> None:
    mapping[key] = value


DAMAGES = {
    "a misshapen weight": (lambda c: _set(c["state_dict"], "fc.weight", torch.zeros(3, 3)),
                           "shape mismatches (checkpoint vs model) fc.weight (3, 3) vs (10, 64)"),
    "a missing weight": (lambda c: c["state_dict"].pop("conv1.weight"), "missing keys conv1.weight"),
    "a config with unknown fields": (lambda c: _set(c["train_config"], "bogus", 1), "training config is not a dict"),
    "a config of the wrong types": (lambda c: _set(c["train_config"], "lr", "fast"), "training config does not hold"),
    "a history that skips": (lambda c: _set(c, "history", [{"epoch": "x"}]), "history is not the log of epochs 1"),
    "an optimizer state of another kind": (lambda c: _set(c, "optimizer", {"state": 5}),
                                           "optimizer state is not an optimizer's state_dict"),
    "a data dir that is a number": (lambda c: _set(c["train_config"], "data_dir", 3), "data_dir=3"),
    "model options that are a string": (lambda c: _set(c["train_config"], "model_kwargs", "x"), "model_kwargs='x'"),
    "model options that set the classes": (lambda c: _set(c["train_config"], "model_kwargs", {"num_classes": 3}),
                                           "model_kwargs must map option names to plain values"),
    "a history with NaN": (lambda c: _set(c["history"][0], "test_loss", float("nan")), "history is not the log"),
    "momentum buffers of other shapes": (lambda c: _set(c["optimizer"]["state"][0], "momentum_buffer",
                                                        torch.zeros(2)), "momentum buffers that do not fit"),
}


@pytest.mark.parametrize("what", list(DAMAGES))
def test_resuming_from_a_damaged_training_checkpoint_is_one_sentence(tmp_path, capsys, what):
    change, message = DAMAGES[what]
    train(TrainConfig(**TINY, epochs=2), tmp_path, stop_after=1)
    damage(tmp_path / "latest.pt", change)
    before = (tmp_path / "best.pt").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path), "--device", "cpu")
    assert_one_line_error(code, err, message)
    assert (tmp_path / "best.pt").read_bytes() == before


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--model", "resnet20", "--resume", "--overwrite", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--resume continues the run in", "--overwrite replaces it; choose one")


@pytest.mark.parametrize("images, labels, reason", [
    (np.zeros((30, 28, 28)), np.arange(150) % 10, "30 images, 150 labels"),
    (np.zeros((30, 28, 28)), np.full(30, 200), "30 images, 30 labels, labels from 200 to 200"),
    (None, np.arange(30) % 10, "AssertionError")])
def test_damaged_fashion_mnist_files_are_named(tmp_path, capsys, images, labels, reason):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        if images is None:
            (raw / f"{split}-images-idx3-ubyte").write_bytes(b"not an IDX file" * 10)
        else:
            write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    for command in (["probe", "--num-images", "8"],
                    ["train", "--subset", "16", "--batch-size", "8", "--device", "cpu"]):
        code, _, err = run_cli(capsys, *command, "--model", "resnet20", "--data", "fashion-mnist", "--data-dir",
                               str(tmp_path), "--out", str(tmp_path / "out"))
        assert_one_line_error(code, err, f"fashion-mnist in {tmp_path} is damaged ({reason}")


def write_folder(root, bad: bytes) -> None:
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((16, 16, 3), 20 * i, dtype=np.uint8)).save(root / cls / f"{i:02d}.png")
    (root / "dog" / "05.png").write_bytes(bad)


def test_a_corrupt_image_stops_probe_and_train_with_its_name(tmp_path, capsys):
    write_folder(tmp_path / "images", b"\x89PNG\r\n\x1a\n not an image")
    bad = tmp_path / "images" / "dog" / "05.png"
    code, _, err = run_cli(capsys, "train", "--model", "resnet20", "--data", f"folder:{tmp_path / 'images'}",
                           "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--workers", "1",
                           "--device", "cpu", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, f"{bad} is not a readable image")
    (tmp_path / "images" / "cat" / "00.png").write_bytes(b"")  # in the test split, which the probe reads
    code, _, err = run_cli(capsys, "probe", "--model", "resnet20", "--data", f"folder:{tmp_path / 'images'}",
                           "--image-size", "16", "--num-images", "3", "--out", str(tmp_path / "probe"))
    assert_one_line_error(code, err, f"{tmp_path / 'images' / 'cat' / '00.png'} is not a readable image")


@pytest.mark.parametrize("args, fragments", [
    (["probe", "--model", "plain20", "--image-size", "0"], ["image size must be between 1 and 1024", "got 0"]),
    (["probe", "--model", "plain20", "--image-size", "100000"], ["image size must be between 1 and 1024"]),
    (["probe", "--model", "plain20", "--data", "synthetic:foo"], ["synthetic takes no ':' suffix"]),
    (["probe", "--model", "plain20", "--num-images", "1000000000"], ["synthetic makes between 1 and 100000"]),
    (["probe", "--model", "plain20", "--device", "gpu"], ["unknown device 'gpu'"]),
    (["train", "--model", "plain20", "--device", "mps"], ["unknown device 'mps'"]),
    (["train", "--model", "plain20", "--device", ""], ["unknown device ''"]),
    (["train", "--model", "plain20", "--seed", "-1"], ["seed must be in [0, 2^63), got -1"]),
    (["train", "--model", "plain20", "--seed", str(2 ** 70)], ["seed must be in [0, 2^63)"]),
    (["probe", "--model", "plain20", "--seed", "-5"], ["seed must be in [0, 2^63), got -5"]),
    (["bound-check", "--width", "1"], ["Monte Carlo widths must be from 4"]),
    (["train", "--model", "resnet20", "--image-size", "0"], ["image_size must be from 1 to 1024, got 0"]),
    (["probe", "--model", "resnet20", "--data", "imagenet"], ["imagenet needs the path of its images"]),
    (["probe", "--model", "resnet20", "--data", "folder:"], ["folder needs the path of its images"]),
    (["bound-check", "--width", "1000000"], ["Monte Carlo widths must be from 4", "to 8192"]),
    (["bound-check", "--width", "4096", "--samples", "1000000"], ["at most 134217728 neurons over all samples"]),
    (["bound-check", "--samples", str(10 ** 12)], ["Monte Carlo samples must be from 2"]),
    (["probe", "--model", "resnet20", "--model-arg", "num_classes=3"],
     ["--model-arg num_classes is not a model option here: it follows the data's classes"]),
    (["train", "--model", "resnet20", "--model-arg", "image_size=16"], ["--model-arg image_size is not a model"]),
    (["bound-check", "--model", "resnet20", "--model-arg", "name=x"], ["--model-arg name is not a model option"]),
    (["probe", "--model", "resnet20", "--model-arg", "residual=false"],
     ["model 'resnet20' takes no argument residual"]),
    (["probe", "--model", "pnnh20", "--model-arg", "coder_ratio=1000"], ["coder_ratio must be a number in (0, 1]"]),
    (["probe", "--model", "pnnh20", "--model-arg", "coder_ratio=true"], ["coder_ratio must be a number in (0, 1]"]),
    (["models", "resnet20", "--num-classes", str(10 ** 11)], ["num_classes must be an integer from 1 to 1000000"]),
    (["models", "resnet20", "--in-chans", "99999999"], ["in_chans must be an integer from 1 to 1024"]),
    (["train", "--model", "resnet20", "--data", "synthetic", "--image-size", "1", "--subset", "64", "--device", "cpu"],
     ["augmentation crops 1 px images", "use --no-augment or a larger --image-size"]),
])
def test_bad_values_on_the_command_line_are_one_sentence(tmp_path, capsys, args, fragments):
    out = tmp_path / ("out.png" if args[0] == "bound-check" else "out")  # bound-check writes a figure
    code, _, err = run_cli(capsys, *args, *(["--out", str(out)] if args[0] != "models" else []))
    assert_one_line_error(code, err, *fragments)
    assert not out.exists() or not any(out.iterdir())  # at most an empty directory, made ready before the work


@pytest.mark.parametrize("command, out, named", [
    (["train", "--model", "resnet20", "--data", "synthetic", "--device", "cpu"], "taken",
     "the run directory {taken} is a file, not a directory"),
    (["probe", "--model", "resnet20"], "taken", "--out {taken} is a file, not a directory"),
    (["probe", "--model", "resnet20"], "taken/sub", "--out {taken}/sub cannot be written: not a directory"),
    (["probe", "--model", "resnet20"], "x" * 300, "cannot be written: file name too long"),
    (["bound-check", "--model", "resnet20"], "taken/figure.png", "the directory of --out {taken} is a file"),
    (["figures", "--preset", "smoke", "--only", "tables"], "taken", "the figures' cache {taken}/cache cannot be"),
])
def test_an_output_that_cannot_be_written_is_named_before_the_work(tmp_path, capsys, command, out, named):
    taken = tmp_path / "taken"
    taken.write_text("notes")
    code, _, err = run_cli(capsys, *command, "--out", str(tmp_path / out))
    assert_one_line_error(code, err, named.format(taken=taken))
    assert taken.read_text() == "notes" and not err.startswith(("error: training", "training"))


INTERRUPTED = textwrap.dedent("""
    import os, signal, time
    from dissipate import bound_check
    from dissipate.cli import main

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        time.sleep(30)

    bound_check.check_monte_carlo = interrupted
    main(["bound-check"])
""")


def test_ctrl_c_says_what_was_kept_and_exits_130():
    result = subprocess.run([sys.executable, "-c", INTERRUPTED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and result.stderr.startswith("interrupted; files already written are complete")
    assert "Traceback" not in result.stderr


def test_a_hostile_cifar_pickle_is_never_unpickled(tmp_path):
    """CIFAR's files are pickles; torchvision reads them only once their MD5 sums match the official files."""
    from dissipate.data import DatasetNotFoundError, load_data

    victim = tmp_path / "created_by_pickle"
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / name).write_bytes(pickle.dumps({"data": Exploit(victim), "labels": [0]}))
    with pytest.raises(DatasetNotFoundError, match="is damaged there"):
        load_data("cifar10", root=tmp_path, download=False)
    assert not victim.exists()


@pytest.mark.parametrize("epochs", [2, 1], ids=["unfinished", "finished"])
def test_a_directory_where_a_run_file_goes_is_named(tmp_path, capsys, epochs):
    """Whether the run has epochs left or not: a finished one once reported itself complete and exited 0."""
    train(TrainConfig(**TINY, epochs=epochs), tmp_path, stop_after=1)
    for name in ("best.pt", "log.csv"):
        run = tmp_path / name.replace(".", "-")
        shutil.copytree(tmp_path, run, ignore=shutil.ignore_patterns("*-*"))
        (run / name).unlink()
        (run / name).mkdir()
        code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
        assert_one_line_error(code, err, f"{run / name} is not a file, so the run in {run} is not whole")
        assert read_checkpoint(run / "latest.pt")["epoch"] == 1 and (run / name).is_dir()
