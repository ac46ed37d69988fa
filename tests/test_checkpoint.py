import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torchvision

from dissipate.checkpoint import VERSION, load_model, read_checkpoint, save_checkpoint
from dissipate.errors import CheckpointError, InvalidArgumentError
from dissipate.models import create_model
from dissipate.models.pnnh import FIRST_DEFAULTS
from dissipate.train import TrainConfig, train

from .helpers import Exploit, randomize_batchnorm


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_keeps_weights_spec_and_metadata(tmp_path):
    model = create_model("pnnh20", num_classes=5, in_chans=1, coder_ratio=0.5, act="gelu")
    randomize_batchnorm(model)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, dataset="fashion-mnist", epoch=3, metrics={"test_acc": 0.9})
    loaded, checkpoint = load_model(path)
    assert _same_weights(model, loaded)
    assert loaded.spec == model.spec
    assert (checkpoint["format"], checkpoint["version"], checkpoint["model"]) == ("dissipate", VERSION, "pnnh20")
    assert (checkpoint["dataset"], checkpoint["epoch"], checkpoint["metrics"]) == ("fashion-mnist", 3, {"test_acc": 0.9})
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_a_version_1_checkpoint_rebuilds_the_net_of_its_day(tmp_path):
    """Version 1 recorded only the options given; PNNH's defaults have changed since (plain stage transitions and a
    free coder then). Such a checkpoint still loads into the net it was saved from, and a run of its day resumes."""
    old = create_model("pnnh20", **FIRST_DEFAULTS, coder_ratio=0.5)
    randomize_batchnorm(old)
    path = save_checkpoint(tmp_path / "ckpt.pt", old)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["checksum"]  # version 1 had none
    torch.save({**checkpoint, "version": 1, "model_kwargs": {"stem": "cifar", "coder_ratio": 0.5}}, path)
    loaded, _ = load_model(path)
    assert _same_weights(old, loaded) and loaded.spec.kwargs == old.spec.kwargs

    config = TrainConfig(model="pnnh20", data="synthetic", epochs=2, batch_size=16, subset=32, test_subset=16,
                         image_size=16)
    train(dataclasses.replace(config, model_kwargs=FIRST_DEFAULTS), tmp_path / "run", stop_after=1)
    latest = tmp_path / "run" / "latest.pt"
    saved = torch.load(latest, weights_only=True)
    saved["train_config"]["model_kwargs"] = {}  # as a run of that day recorded it
    del saved["checksum"]
    for name in ("latest.pt", "best.pt"):  # a run of that day wrote both so
        torch.save({**saved, "version": 1, "model_kwargs": {"stem": "cifar"}}, tmp_path / "run" / name)
    log = train(config, tmp_path / "run", resume=True)
    assert len(log) == 2


def test_bare_state_dict_needs_and_takes_a_model_name(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match="bare state_dict; name the model"):
        load_model(tmp_path / "tv.pth")
    model, checkpoint = load_model(tmp_path / "tv.pth", "resnet18", num_classes=1000, stem="imagenet")
    assert checkpoint["format"] is None
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    victim = tmp_path / "created_by_pickle"
    torch.save({"state_dict": Exploit(victim)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing to load .*could run code"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not victim.exists()


def test_unreadable_files_give_one_sentence(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", create_model("resnet20"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (truncated, text, empty, noise):
        with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint") as info:
            read_checkpoint(path)
        assert "\n" not in str(info.value) and "could run code" not in str(info.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="neither a dissipate checkpoint nor a state_dict"):
        read_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        read_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "resnet20.pt", create_model("resnet20"))
    with pytest.raises(CheckpointError, match="is a checkpoint of 'resnet20', not of 'plain20'"):
        load_model(path, "plain20")
    torch.save(create_model("resnet18").state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"does not fit model 'plain18': unexpected keys layer2\.0\.downsample"):
        load_model(tmp_path / "bare.pt", "plain18")
    torch.save(create_model("plain18").state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"missing keys layer2\.0\.downsample.*\(18 in all\)"):
        load_model(tmp_path / "bare.pt", "resnet18")
    with pytest.raises(CheckpointError, match=r"shape mismatches \(checkpoint vs model\) fc\.weight \(10, 512\) vs \(7, 512\)"):
        load_model(tmp_path / "bare.pt", "plain18", num_classes=7)


def test_checkpoint_from_a_newer_version_or_damaged_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "version": VERSION + 1}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=f"version {VERSION + 1}; this dissipate reads versions 1, 2, 3"):
        read_checkpoint(tmp_path / "newer.pt")
    del checkpoint["state_dict"]
    torch.save(checkpoint, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="damaged dissipate checkpoint: it lacks state_dict"):
        read_checkpoint(tmp_path / "damaged.pt")


def test_saving_needs_a_registry_model_and_keeps_its_own_keys(tmp_path):
    with pytest.raises(InvalidArgumentError, match="made by create_model"):
        save_checkpoint(tmp_path / "x.pt", torchvision.models.resnet18(weights=None))
    with pytest.raises(InvalidArgumentError, match="sets state_dict itself"):
        save_checkpoint(tmp_path / "x.pt", create_model("resnet20"), state_dict={})
    assert not (tmp_path / "x.pt").exists()
    path = save_checkpoint(tmp_path / "x.pt", create_model("resnet20"), optimizer={"lr": 0.1})
    assert read_checkpoint(path)["optimizer"] == {"lr": 0.1}


def test_save_killed_half_way_leaves_the_previous_checkpoint(tmp_path):
    """SIGKILL a process in the middle of writing: the old checkpoint must still load, whole."""
    path = tmp_path / "ckpt.pt"
    before = create_model("resnet20")
    save_checkpoint(path, before, epoch=1)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from dissipate.checkpoint import save_checkpoint
        from dissipate.models import create_model

        real_save = torch.save
        def save_then_die(obj, file):
            real_save(obj, file)
            file.flush()
            file.truncate(file.tell() // 2)  # half of the new checkpoint is on disk ...
            os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies
        torch.save = save_then_die
        save_checkpoint({str(path)!r}, create_model("resnet20"), epoch=2)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    after, checkpoint = load_model(path)
    assert checkpoint["epoch"] == 1 and _same_weights(before, after)
