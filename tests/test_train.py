import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from dissipate import train as train_module
from dissipate.checkpoint import _legacy_checksum, read_checkpoint
from dissipate.errors import CheckpointError, InvalidArgumentError
from dissipate.models import create_model
from dissipate.train import LOG_COLUMNS, TrainConfig, crop_and_flip, epoch_plan, learning_rate, load_split, train
from tests.helpers import run_cli
from tests.test_data import write_fashion_mnist, write_idx

# a run of a few dozen steps on synthetic images: 8 steps of 32 images per epoch
TINY = dict(model="resnet20", data="synthetic", batch_size=32, subset=256, test_subset=64, lr=0.05, warmup=0.5,
            device="cpu")
TIMING = ("images_per_s", "peak_mem_mb", "epoch_s")  # columns that differ between runs of one computation


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def parameters(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine_to_zero():
    config = TrainConfig(model="resnet20", epochs=10, lr=0.2, warmup=2)
    rates = [learning_rate(config, step, 5) for step in range(50)]
    assert rates[:10] == pytest.approx([0.02 * (i + 1) for i in range(10)])
    assert rates[10] == pytest.approx(0.2) and rates[-1] == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    short = TrainConfig(model="resnet20", epochs=1, warmup=5)  # warm-up capped at half the run: 2 of 4 steps
    assert [learning_rate(short, step, 4) for step in range(4)] == pytest.approx([0.05, 0.1, 0.1, 0.05])


def test_crop_and_flip_is_a_padded_crop_then_a_mirror():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [2, 7], [6, 1]])
    flips = torch.tensor([False, True, False, True, False])
    padded = F.pad(images, (4,) * 4)
    expected = torch.stack([padded[i, :, r:r + 8, c:c + 8] for i, (r, c) in enumerate(offsets.tolist())])
    expected[flips] = expected[flips].flip(3)
    assert torch.equal(crop_and_flip(images, offsets, flips), expected)
    assert torch.equal(crop_and_flip(images, offsets[2:3].expand(5, 2), torch.zeros(5, dtype=torch.bool)), images)


def test_epoch_plans_depend_on_seed_and_epoch_only():
    first = epoch_plan(100, 32, seed=3, epoch=1, augment=True)
    again = epoch_plan(100, 32, seed=3, epoch=1, augment=True)
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in
                                   zip(first, again, strict=True))
    positions = torch.cat([batch[0] for batch in first])
    assert len(positions.unique()) == 96  # no image twice; the last partial batch is dropped
    assert not torch.equal(positions, torch.cat([b[0] for b in epoch_plan(100, 32, seed=3, epoch=2)]))
    tail = epoch_plan(100, 32, seed=0, epoch=0, shuffle=False, drop_last=False)
    assert torch.equal(torch.cat([b[0] for b in tail]), torch.arange(100))


def write_learnable_fashion_mnist(directory: Path, count: int) -> None:
    """Fashion-MNIST files whose class is the image's brightness (class c at grey level 25c + 15, pixel noise of
    std 12), train and test drawn apart: a held-out set that a net learns in a few dozen steps, so that test accuracy
    measures the training loop rather than how well 256 images generalise."""
    directory.mkdir(parents=True)
    for split, key in (("train", 0), ("t10k", 1)):
        rng = np.random.default_rng(key)
        labels = rng.integers(0, 10, count)
        images = np.clip(25 * labels[:, None, None] + 15 + rng.normal(0, 12, (count, 28, 28)), 0, 255)
        write_idx(directory / f"{split}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels)


def test_loss_falls_and_accuracy_rises_above_chance_within_a_few_dozen_steps(tmp_path):
    """32 steps on 256 images, scored on 256 others. Measured over seeds 0-9 at 1 and 2 threads (20 runs): the
    last train loss is at most 0.51x the first, the last train accuracy at least 0.51, the best test accuracy at
    least 0.55 (chance: 0.1). The thresholds below leave 60 or more test images of margin."""
    write_learnable_fashion_mnist(tmp_path / "FashionMNIST" / "raw", count=256)
    config = TrainConfig(model="resnet20", data="fashion-mnist", data_dir=str(tmp_path), batch_size=32, lr=0.02,
                         warmup=0.5, epochs=4, augment=False, device="cpu")
    history = train(config, tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]
    assert history[-1]["train_acc"] > 0.3 and max(row["test_acc"] for row in history) > 0.3
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log.columns) == list(LOG_COLUMNS) and len(log) == 4 and (log["images_per_s"] > 0).all()
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == int(log["test_acc"].idxmax()) + 1 and best["model"] == "resnet20"
    assert read_checkpoint(tmp_path / "run" / "latest.pt")["epoch"] == 4


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """k steps, stop, resume to 2k: on the CPU, the same parameters, BN statistics, optimizer state and log."""
    config = TrainConfig(**TINY, epochs=2)
    whole = train(config, tmp_path / "whole")
    first = train(config, tmp_path / "parts", stop_after=1)
    assert len(first) == 1 and read_checkpoint(tmp_path / "parts" / "latest.pt")["epoch"] == 1
    resumed = train(config, tmp_path / "parts", resume=True)
    ends = [read_checkpoint(tmp_path / run / "latest.pt") for run in ("whole", "parts")]
    for key, value in ends[0]["state_dict"].items():
        assert torch.equal(value, ends[1]["state_dict"][key]), key
    momentum = [torch.cat([s["momentum_buffer"].flatten() for s in end["optimizer"]["state"].values()])
                for end in ends]
    assert torch.equal(*momentum)
    assert without_timing(whole) == without_timing(resumed)


PROBED = dict(TINY, subset=64, test_subset=32, image_size=16, epochs=3, probe_every=1, probe_images=16,
              probe_metrics="survival,cka")


def test_probes_through_training_cover_epochs_0_to_3_once_each_and_leave_training_untouched(tmp_path):
    history = train(TrainConfig(**PROBED), tmp_path / "probed")
    probes = pd.read_csv(tmp_path / "probed" / "probes.csv")
    assert list(probes.columns[:3]) == ["epoch", "site", "depth"]
    sites = probes.loc[probes["epoch"] == 0, "site"].tolist()
    assert len(sites) == 19 and probes.groupby("epoch")["site"].apply(list).to_dict() == {e: sites for e in range(4)}
    assert probes.groupby("epoch")["cka_input"].mean().nunique() == 4  # each epoch's net, not one net four times
    plain = train(TrainConfig(**{**PROBED, "probe_every": 0}), tmp_path / "plain")
    assert without_timing(plain) == without_timing(history)
    assert not (tmp_path / "plain" / "probes.csv").exists()
    sparse = train(TrainConfig(**{**PROBED, "probe_every": 2}), tmp_path / "sparse")
    assert sorted(pd.read_csv(tmp_path / "sparse" / "probes.csv")["epoch"].unique()) == [0, 2]
    assert without_timing(sparse) == without_timing(history)


def test_a_killed_and_resumed_run_probes_each_epoch_exactly_once(tmp_path):
    whole = tmp_path / "whole"
    train(TrainConfig(**PROBED), whole)
    parts = tmp_path / "parts"
    train(TrainConfig(**PROBED), parts, stop_after=1)
    # killed after probing epoch 2 and before saving it: latest.pt holds epoch 1, probes.csv has epoch 2 too
    later = pd.read_csv(whole / "probes.csv").query("epoch == 2").assign(cka_input=-1.0)
    pd.concat([pd.read_csv(parts / "probes.csv"), later]).to_csv(parts / "probes.csv", index=False)
    train(TrainConfig(**PROBED), parts, resume=True)
    pd.testing.assert_frame_equal(pd.read_csv(parts / "probes.csv"), pd.read_csv(whole / "probes.csv"))


def test_a_speed_run_can_skip_the_test_split(tmp_path):
    history = train(TrainConfig(**TINY, epochs=1), tmp_path, test_each_epoch=False)
    assert np.isnan(history[0]["test_loss"]) and np.isnan(history[0]["test_acc"])
    assert history[0]["images_per_s"] > 0 and np.isfinite(history[0]["train_loss"])


def test_a_checkpoint_from_before_probing_existed_still_resumes(tmp_path):
    train(TrainConfig(**TINY, epochs=2), tmp_path, stop_after=1)
    saved = read_checkpoint(tmp_path / "latest.pt")
    for name in train_module.LATER_FIELDS:  # the probe fields, and the optimizer (then always SGD)
        del saved["train_config"][name]
    saved["version"] = 2  # as written then, with version 2's checksum
    for name in ("latest.pt", "best.pt"):
        torch.save({**saved, "checksum": _legacy_checksum(saved)}, tmp_path / name)
    assert len(train(TrainConfig(**TINY, epochs=2), tmp_path, resume=True)) == 2


def test_each_family_has_its_recipe_which_any_setting_overrides():
    cnn, vit = TrainConfig(model="resnet20"), TrainConfig(model="pnnhvit6")
    assert (cnn.optimizer, cnn.lr, cnn.wd, cnn.warmup, cnn.label_smoothing) == ("sgd", 0.1, 5e-4, 1.0, 0.0)
    assert (vit.optimizer, vit.lr, vit.wd, vit.warmup, vit.label_smoothing) == ("adamw", 1e-3, 0.05, 5.0, 0.1)
    assert TrainConfig(model="timm:vit_tiny_patch16_224").optimizer == "sgd"  # other libraries' models: SGD
    mixed = TrainConfig(model="vit6", optimizer="sgd", lr=0.05)
    assert (mixed.optimizer, mixed.lr, mixed.wd) == ("sgd", 0.05, 5e-4)
    assert TrainConfig(model="resnet20", optimizer="adamw").lr == 1e-3
    with pytest.raises(InvalidArgumentError, match="unknown optimizer 'adam'"):
        TrainConfig(model="vit6", optimizer="adam")


def test_adamw_decays_weight_matrices_only():
    model = create_model("vit6")
    optimizer = train_module.make_optimizer(model, TrainConfig(model="vit6"))
    decayed, kept = ({id(p) for p in group["params"]} for group in optimizer.param_groups)
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[i] for i in kept} >= {"pos_embed", "norm.weight", "blocks.0.fc1.bias", "blocks.0.norm1.weight"}
    assert {names[i] for i in decayed} >= {"blocks.0.fc1.weight", "blocks.0.attn.qkv.weight", "head.weight"}
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05, 0.0]


def test_a_resumed_vit_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """AdamW's state (both moments and the step) resumes exactly, as SGD's momentum does."""
    config = TrainConfig(**{**TINY, "model": "pnnhvit6", "lr": None, "warmup": None, "subset": 32,
                            "test_subset": 16}, image_size=8, epochs=2)
    whole = train(config, tmp_path / "whole")
    train(config, tmp_path / "parts", stop_after=1)
    resumed = train(config, tmp_path / "parts", resume=True)
    ends = [read_checkpoint(tmp_path / run / "latest.pt") for run in ("whole", "parts")]
    for key, value in ends[0]["state_dict"].items():
        assert torch.equal(value, ends[1]["state_dict"][key]), key
    for state, other in zip(ends[0]["optimizer"]["state"].values(), ends[1]["optimizer"]["state"].values(),
                            strict=True):
        assert all(torch.equal(state[k], other[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert without_timing(whole) == without_timing(resumed)


def test_resume_refuses_a_different_run_and_needs_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume in"):
        train(TrainConfig(**TINY, epochs=1), tmp_path, resume=True)
    train(TrainConfig(**TINY, epochs=1), tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"it has lr=0.05, not 0.2"):
        train(TrainConfig(**{**TINY, "lr": 0.2}, epochs=1), tmp_path, resume=True)


def test_bad_settings_are_refused():
    for changes, message in [({"lr": 0}, "lr must be positive, got 0"), ({"lr": -0.1}, "lr must be positive"),
                             ({"epochs": 0}, "epochs must be at least 1"), ({"momentum": 1.0}, "momentum must be in")]:
        with pytest.raises(InvalidArgumentError, match=message):
            TrainConfig(**{**TINY, **changes})


def test_a_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="batch size 512 is larger than the 256 training images"):
        train(TrainConfig(**{**TINY, "batch_size": 512}), tmp_path)
    assert not (tmp_path / "latest.pt").exists()


def test_fashion_mnist_trains_from_its_files_on_the_device_path(tmp_path, monkeypatch):
    images = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=False, count=40)
    config = TrainConfig(model="plain20", data="fashion-mnist", data_dir=str(tmp_path), epochs=1, batch_size=8,
                         device="cpu", image_size=32, channels_last=True)
    split = load_split(config, True, torch.device("cpu"))
    assert split.images.dtype == torch.uint8 and split.images.shape == (40, 1, 32, 32)
    native = load_split(TrainConfig(**{**config.__dict__, "image_size": None}), True, torch.device("cpu"))
    assert torch.equal(native.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert torch.equal(split.labels, torch.arange(40) % 10)
    history = train(config, tmp_path / "run")
    assert read_checkpoint(tmp_path / "run" / "latest.pt")["in_chans"] == 1 and len(history) == 1


def test_folders_train_through_the_loader_path(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / "net" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(
                    tmp_path / "net" / split / cls / f"{i}.png")
    config = TrainConfig(model="resnet18", data=f"imagenet:{tmp_path / 'net'}", image_size=32, epochs=1,
                         batch_size=4, workers=0, device="cpu")
    assert load_split(config, True, torch.device("cpu")).images is None
    history = train(config, tmp_path / "run")
    assert history[0]["test_acc"] in (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, config: TrainConfig, out: str, report: str) -> None:
    """One rank of a torchrun-like job (the environment torchrun sets). It reports the files the library wrote
    from this rank, its log, and its model's final parameters (this test's hooks, not the library's)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    writes, models = [], []
    save, log, create = train_module.save_checkpoint, train_module._write_log, train_module.create_model
    train_module.save_checkpoint = lambda path, *a, **k: (writes.append(str(path)), save(path, *a, **k))[1]
    train_module._write_log = lambda path, *a: (writes.append(str(path)), log(path, *a))[1]
    train_module.create_model = lambda *a, **k: models.append(create(*a, **k)) or models[-1]
    history = train(config, out)
    Path(report, f"rank{rank}.json").write_text(json.dumps({"writes": writes, "history": without_timing(history)}))
    torch.save(models[0].state_dict(), Path(report, f"rank{rank}.pt"))


class HalfBatchNorm(torch.nn.BatchNorm2d):
    """Batch norm over each half of the batch on its own: what two DDP ranks compute (SyncBatchNorm needs CUDA)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super(HalfBatchNorm, self).forward(half) for half in x.chunk(2)])


def test_ddp_with_gloo_on_two_processes(tmp_path, monkeypatch):
    """Two ranks, the global batch split between them: identical parameters on both, and only rank 0 writes.
    They match one process with the same global batch whose batch norm, like the ranks', normalises each half of
    the batch on its own (full-batch BN moves the gradient by about 20% at batch 32). Stated tolerance: 1% of the
    distance that training moved the parameters, far below what a real fault moves them (summed instead of averaged
    gradients double every step; both ranks on one half see other images). One step agrees to 3e-6 of it, but float
    rounding (even another thread count) grows by orders of magnitude per step at small batches and a high learning
    rate, so the run is kept to 4 steps at lr 0.01 (measured: 0.3%)."""
    config = TrainConfig(**{**TINY, "subset": 128, "batch_size": 64, "lr": 0.01}, epochs=2)  # 4 steps, 2 epochs
    report = tmp_path / "report"
    report.mkdir()
    mp.spawn(ddp_worker, args=(2, free_port(), config, str(tmp_path / "ddp"), str(report)), nprocs=2)
    logs = [json.loads((report / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[1]["writes"] == [] and len(logs[0]["writes"]) >= 4
    assert logs[0]["history"] == logs[1]["history"]  # losses and accuracies are summed over both ranks
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "latest.pt", "log.csv"]
    ranks = [torch.load(report / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    weights = [k for k, v in ranks[0].items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in weights)

    create = train_module.create_model

    def with_half_batch_norm(*args, **kwargs):
        model = create(*args, **kwargs)
        for module in model.modules():
            if type(module) is torch.nn.BatchNorm2d:
                module.__class__ = HalfBatchNorm
        return model

    monkeypatch.setattr(train_module, "create_model", with_half_batch_norm)
    train(config, tmp_path / "single")
    single = parameters(tmp_path / "single" / "latest.pt")
    torch.manual_seed(config.seed)
    initial = create("resnet20", num_classes=10, in_chans=3, image_size=32).state_dict()
    moved = torch.cat([(single[k] - initial[k]).flatten() for k in weights]).norm()
    apart = torch.cat([(ranks[0][k] - single[k]).flatten() for k in weights]).norm()
    assert moved > 0.05 and apart < 1e-2 * moved, (apart.item(), moved.item())


@pytest.mark.parametrize("model", ["pnnh20", "pnnhvit6"])
def test_ddp_trains_pnnh_at_its_defaults_whose_identity_coder_gets_no_gradient(tmp_path, model):
    """With E^T E = I the fused path adds x itself and never uses E: DDP is told to expect a parameter without a
    gradient (it refused the step otherwise), and the ranks stay identical."""
    config = TrainConfig(**{**TINY, "model": model, "subset": 32, "batch_size": 16, "image_size": 8}, epochs=1)
    report = tmp_path / "report"
    report.mkdir()
    mp.spawn(ddp_worker, args=(2, free_port(), config, str(tmp_path / "ddp"), str(report)), nprocs=2)
    ranks = [torch.load(report / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert len(json.loads((report / "rank0.json").read_text())["history"]) == 1


KILLED_DURING_SAVE = """
import sys, time
import torch
from dissipate import train

real_save, calls = torch.save, []
def stalled_save(obj, file, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # epoch 2's latest.pt: half written, then the process is killed
        file.write(b"half a checkpoint")
        file.flush()
        open(sys.argv[2], "w").close()
        time.sleep(600)
    return real_save(obj, file, *args, **kwargs)
torch.save = stalled_save
config = train.TrainConfig(model="resnet20", data="synthetic", batch_size=32, subset=64, test_subset=32, epochs=2,
                           device="cpu")
train.train(config, sys.argv[1])
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(tmp_path):
    script, marker, out = tmp_path / "run.py", tmp_path / "writing", tmp_path / "run"
    script.write_text(KILLED_DURING_SAVE)
    process = subprocess.Popen([sys.executable, str(script), str(out), str(marker)])
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a timing check
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the run never reached its second checkpoint"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert read_checkpoint(out / "latest.pt")["epoch"] == 1  # the previous checkpoint, whole
    config = TrainConfig(model="resnet20", data="synthetic", batch_size=32, subset=64, test_subset=32, epochs=2,
                         device="cpu")
    history = train(config, out, resume=True)
    assert [row["epoch"] for row in history] == [1, 2] and read_checkpoint(out / "latest.pt")["epoch"] == 2


def test_running_out_of_memory_is_one_sentence(tmp_path, monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "_run", out_of_memory)
    with pytest.raises(MemoryError, match="resnet20 at batch size 32 does not fit in the memory of cpu; lower"):
        train(TrainConfig(**TINY), tmp_path)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_bf16_and_channels_last_learns_and_resumes_exactly(tmp_path):
    """The GPU path: data on the device, bf16 autocast, channels_last. Loss falls, and a resumed run ends with the
    parameters of an uninterrupted one (cuDNN made deterministic for the comparison)."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    config = TrainConfig(**{**TINY, "device": "cuda"}, epochs=4, augment=False, channels_last=True)
    history = train(config, tmp_path / "whole")
    assert history[-1]["train_loss"] < 0.9 * history[0]["train_loss"] and history[-1]["peak_mem_mb"] > 0
    train(config, tmp_path / "parts", stop_after=2)
    train(config, tmp_path / "parts", resume=True)
    whole, parts = parameters(tmp_path / "whole" / "latest.pt"), parameters(tmp_path / "parts" / "latest.pt")
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_a_diverged_run_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train(TrainConfig(**TINY, epochs=3), tmp_path, stop_after=1)
    monkeypatch.setattr(train_module, "learning_rate", lambda config, step, steps_per_epoch: 1e30)
    with pytest.raises(ArithmeticError, match=r"training diverged in epoch 2 .*latest\.pt holds epoch 1"):
        train(TrainConfig(**TINY, epochs=3), tmp_path, resume=True)
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 1 and len(pd.read_csv(tmp_path / "log.csv")) == 1


def test_a_directory_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    train(TrainConfig(**TINY, epochs=1), tmp_path)
    before = (tmp_path / "best.pt").read_bytes()
    with pytest.raises(InvalidArgumentError, match=r"already holds a run \(latest.pt, best.pt, log.csv\); continue "
                                                   r"it with --resume, replace it with --overwrite"):
        train(TrainConfig(**{**TINY, "seed": 1}, epochs=1), tmp_path)
    assert (tmp_path / "best.pt").read_bytes() == before
    train(TrainConfig(**{**TINY, "seed": 1}, epochs=1), tmp_path, overwrite=True)
    assert read_checkpoint(tmp_path / "latest.pt")["train_config"]["seed"] == 1
    assert (tmp_path / "best.pt").read_bytes() != before and len(pd.read_csv(tmp_path / "log.csv")) == 1


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path):
    held = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running `dissipate train` holds
        with pytest.raises(InvalidArgumentError, match="another process is training in"):
            train(TrainConfig(**TINY, epochs=1), tmp_path)
    finally:
        os.close(held)
    assert not (tmp_path / "latest.pt").exists()
    train(TrainConfig(**TINY, epochs=1), tmp_path)  # released: the run goes ahead
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 1


def test_resume_makes_best_and_the_log_agree_with_latest_after_a_kill_between_their_writes(tmp_path, monkeypatch):
    accuracies = iter([0.2, 0.5])  # epoch 2 is the best
    evaluate = train_module.evaluate
    monkeypatch.setattr(train_module, "evaluate", lambda *a: (evaluate(*a)[0], next(accuracies)))
    save = train_module.save_checkpoint

    def killed_after_latest(path, *args, **kwargs):
        if Path(path).name == "best.pt" and kwargs["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies here: latest.pt holds epoch 2, best.pt and the log epoch 1
        return save(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_latest)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, epochs=2), tmp_path)
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 1 and len(pd.read_csv(tmp_path / "log.csv")) == 1
    monkeypatch.undo()
    history = train(TrainConfig(**TINY, epochs=2), tmp_path, resume=True)
    assert [row["test_acc"] for row in history] == [0.2, 0.5]
    assert pd.read_csv(tmp_path / "log.csv")["test_acc"].tolist() == [0.2, 0.5]
    best, latest = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(tmp_path / "latest.pt")
    assert best["epoch"] == 2 and all(torch.equal(best["state_dict"][k], v) for k, v in latest["state_dict"].items())


def test_a_non_finite_test_loss_or_weight_is_never_saved(tmp_path, monkeypatch):
    train(TrainConfig(**TINY, epochs=3), tmp_path, stop_after=1)
    monkeypatch.setattr(train_module, "evaluate", lambda *a: (float("nan"), 0.9))
    with pytest.raises(ArithmeticError, match=r"epoch 2 \(the weights or the test loss are not finite .*latest\.pt "
                                              r"holds epoch 1"):
        train(TrainConfig(**TINY, epochs=3), tmp_path, resume=True)
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == read_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    model = torch.nn.BatchNorm2d(2)
    assert train_module._finite(model)
    model.running_var[1] = float("inf")
    assert not train_module._finite(model)


def test_resume_refuses_explicit_options_even_at_their_default_values(tmp_path, capsys):
    common = ["--data", "synthetic", "--subset", "64", "--test-subset", "32", "--batch-size", "32", "--device", "cpu",
              "--out", str(tmp_path)]
    code, _, err = run_cli(capsys, "train", "--model", "resnet20", "--epochs", "2", "--lr", "0.05", *common)
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--resume", "--lr", "0.1", "--out", str(tmp_path))  # 0.1 is the default
    assert code == 2 and "it has lr=0.05, not 0.1" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "train", "--model", "resnet20", "--epochs", "2", *common)
    assert code == 2 and "already holds a run" in err
    code, out, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path), "--epochs", "2")
    assert code == 0 and "best test accuracy" in out, err


@pytest.mark.parametrize("changes, message", [
    ({"device": "gpu"}, "unknown device 'gpu'; choose auto, cpu, cuda or cuda:N"),
    ({"device": "mps"}, "unknown device 'mps'"), ({"device": ""}, "unknown device ''"),
    ({"seed": -1}, r"seed must be in \[0, 2\^63\), got -1"), ({"seed": 2 ** 64}, "seed must be in")])
def test_bad_devices_and_seeds_are_one_sentence(changes, message):
    with pytest.raises(InvalidArgumentError, match=message):
        TrainConfig(**{**TINY, **changes})


def test_a_full_disk_mid_run_is_one_sentence_and_keeps_the_last_epoch(tmp_path, monkeypatch):
    train(TrainConfig(**TINY, epochs=3), tmp_path, stop_after=1)
    save = train_module.save_checkpoint

    def full_disk(path, *args, **kwargs):
        if kwargs["epoch"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return save(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", full_disk)
    with pytest.raises(OSError, match=r"writing epoch 2 of the run to .* failed: the disk is full; .*latest\.pt "
                                      r"holds epoch 1$"):
        train(TrainConfig(**TINY, epochs=3), tmp_path, resume=True)
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 1


def test_resume_refuses_data_that_changed_under_the_run(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    write_learnable_fashion_mnist(raw, count=64)
    config = TrainConfig(model="plain20", data="fashion-mnist", data_dir=str(tmp_path), batch_size=32, epochs=3,
                         device="cpu")
    train(config, tmp_path / "run", stop_after=1)
    train(config, tmp_path / "run", resume=True, stop_after=2)  # the same data: it goes on
    images = raw / "train-images-idx3-ubyte"
    changed = bytearray(images.read_bytes())
    changed[-1] ^= 0xFF  # one pixel of the last training image
    images.write_bytes(bytes(changed))
    with pytest.raises(InvalidArgumentError, match=r"the data of fashion-mnist is not what the run in .* trained on"):
        train(config, tmp_path / "run", resume=True)
    assert read_checkpoint(tmp_path / "run" / "latest.pt")["epoch"] == 2
