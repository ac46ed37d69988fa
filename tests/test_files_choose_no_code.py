"""A file never chooses code: a weights_only-clean checkpoint, run directory or config that names a payload is refused
with one sentence and exit code 2 on every path that reads one, before anything is imported, and no marker appears.
A `module:` model runs only when the user names it; checkpoints carry a checksum of their tensors."""

import json
import sys
import zipfile

import pytest
import torch

from dissipate.analyses._common import train_run
from dissipate.checkpoint import VERSION, _legacy_checksum, load_model, read_checkpoint, save_checkpoint
from dissipate.errors import CheckpointError, InvalidArgumentError, Notice
from dissipate.models import create_model
from dissipate.probe import ProbeConfig, probe, save_probe
from dissipate.data import load_data
from dissipate.train import TrainConfig, train
from tests.helpers import Exploit, run_cli, save_resigned
from tests.test_hostile import assert_one_line_error
from tests.test_train import TINY

SMALL_NET = "module:tests.models.test_external:small_net"


def payloads(marker) -> dict[str, tuple[str, dict]]:
    """(model, model_kwargs) that would create `marker` if a file could choose what is imported and called."""
    return {"os.system": ("module:os:system", {"command": f"touch {marker}"}),
            "subprocess.run": ("module:subprocess:run", {"args": f"touch {marker}", "shell": True}),
            "builtins.exec": ("module:builtins:exec", {"source": f"open({str(marker)!r}, 'w')"})}


PAYLOADS = ("os.system", "subprocess.run", "builtins.exec")


def hostile_checkpoint(tmp_path, payload: str):
    """A checkpoint of only tensors and plain data (it passes weights_only) that records a payload as its model."""
    marker = tmp_path / "PWNED"
    model, options = payloads(marker)[payload]
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = torch.load(path, weights_only=True)
    save_resigned({**saved, "model": model, "model_kwargs": options}, path)  # as one who knows the format writes it
    return path, marker


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("command", ["probe", "bound-check"])
def test_a_checkpoint_that_names_a_module_is_refused_before_it_is_imported(tmp_path, capsys, command, payload):
    path, marker = hostile_checkpoint(tmp_path, payload)
    code, _, err = run_cli(capsys, command, "--checkpoint", str(path), "--num-images", "8", "--device", "cpu",
                           *(["--out", str(tmp_path / "out")] if command == "probe" else []))
    assert_one_line_error(code, err, str(path), "a file never chooses code to run", "--model module:")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="name it yourself"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_run_to_resume_that_names_a_module_is_refused_before_it_is_imported(tmp_path, capsys, payload):
    train(TrainConfig(**TINY, epochs=2), tmp_path, stop_after=1)
    marker = tmp_path / "PWNED"
    model, options = payloads(marker)[payload]
    saved = torch.load(tmp_path / "latest.pt", weights_only=True)
    config = {**saved["train_config"], "model": model, "model_kwargs": options}
    save_resigned({**saved, "model": model, "model_kwargs": options, "train_config": config}, tmp_path / "latest.pt")
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path), "--device", "cpu")
    assert_one_line_error(code, err, "latest.pt", "a file never chooses code to run")
    assert not marker.exists()
    # the figures cache resumes its runs with the preset's model, which the file's does not match
    with pytest.raises(InvalidArgumentError, match="it has model="):
        train_run(TrainConfig(**TINY, epochs=2), tmp_path)
    assert not marker.exists()


def test_a_probe_config_that_names_a_module_chooses_nothing_in_plot(tmp_path, capsys):
    """`dissipate plot` reads probe_config.json for its version alone: a payload there is never built."""
    marker = tmp_path / "PWNED"
    frame = probe(create_model("resnet20"), load_data("synthetic", length=8), ProbeConfig(num_images=8,
                                                                                          metrics=("survival",)))
    save_probe(frame, tmp_path / "a", title="a")
    config = json.loads((tmp_path / "a" / "probe_config.json").read_text())
    model, options = payloads(marker)["os.system"]
    (tmp_path / "a" / "probe_config.json").write_text(json.dumps({**config, "model": model, "model_kwargs": options}))
    code, out, err = run_cli(capsys, "plot", str(tmp_path / "a" / "probe.csv"), "--out", str(tmp_path / "p.png"))
    assert code == 0 and (tmp_path / "p.png").is_file() and not marker.exists(), err


@pytest.mark.parametrize("name, options, message", [
    ("timm:hf-hub:timm/resnet18.a1_in1k", {}, "timm has no model 'hf-hub:timm/resnet18.a1_in1k'"),
    ("timm:local-dir:/tmp", {}, "timm has no model 'local-dir:/tmp'"),
    ("timm:resnet18", {"checkpoint_path": "EVIL"}, "option checkpoint_path would load them"),
    ("timm:resnet18", {"pretrained_cfg": "a1_in1k"}, "option pretrained_cfg would load them"),
    ("torchvision:resnet18", {"progress": True}, "option progress would load them"),
    ("torchvision:__builtins__", {}, "torchvision has no model '__builtins__'")])
def test_a_timm_or_torchvision_name_cannot_escape_its_registry(tmp_path, capsys, name, options, message):
    """From a checkpoint or from the command line alike: no hub, no local directory, no option that loads a file
    (timm's checkpoint_path would read a pickle)."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Exploit(marker)}, evil)  # what checkpoint_path would unpickle
    options = {key: str(evil) if value == "EVIL" else value for key, value in options.items()}
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = torch.load(path, weights_only=True)
    save_resigned({**saved, "model": name, "model_kwargs": options}, path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out",
                           str(tmp_path / "out"))
    assert_one_line_error(code, err, message)
    assert not marker.exists()


def test_a_module_named_on_the_command_line_probes_and_resumes_its_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "small.pt", create_model(SMALL_NET, width=5))
    code, _, err = run_cli(capsys, "probe", "--model", SMALL_NET, "--checkpoint", str(path), "--num-images", "8",
                           "--out", str(tmp_path / "out"), "--metrics", "survival")
    assert code == 0 and "a file never chooses" not in err, err
    run = tmp_path / "run"
    config = dict(TINY, model=SMALL_NET, model_kwargs={"width": 5}, epochs=2)
    train(TrainConfig(**config), run, stop_after=1)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert_one_line_error(code, err, "a file never chooses code to run", f"--model {SMALL_NET}")
    code, out, err = run_cli(capsys, "train", "--model", SMALL_NET, "--resume", "--out", str(run), "--device",
                             "cpu")
    assert code == 0 and "epoch   2" in out, err


def flip_tensor_bytes(path, count: int = 200) -> None:
    """Flip `count` bytes in the middle of the largest tensor's data inside a torch.save zip file."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = record.header_offset
    start = header + 30 + int.from_bytes(data[header + 26:header + 28], "little") + \
        int.from_bytes(data[header + 28:header + 30], "little")  # the local header, then the name and extra field
    middle = start + record.file_size // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_a_checkpoints_tensors_is_refused(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    assert torch.load(path, weights_only=True)["checksum"]
    flip_tensor_bytes(path)
    torch.load(path, weights_only=True)  # torch itself reads it: only the checksum tells
    with pytest.raises(CheckpointError, match="what it holds does not match the checksum"):
        read_checkpoint(path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out",
                           str(tmp_path / "out"))
    assert_one_line_error(code, err, str(path), "is damaged: what it holds does not match the checksum")


def test_a_checkpoint_from_before_checksums_loads_and_says_so(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = torch.load(path, weights_only=True)
    del saved["checksum"]
    torch.save({**saved, "version": 2}, path)  # version 2 was written with and without one
    with pytest.warns(Notice, match="has no checksum"):
        load_model(path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out",
                           str(tmp_path / "out"), "--metrics", "survival")
    assert code == 0 and f"note: {path} has no checksum" in err, err


def test_a_checkpoint_whose_version_records_a_checksum_and_has_none_is_damaged(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = torch.load(path, weights_only=True)
    del saved["checksum"]
    torch.save(saved, path)
    code, _, err = run_cli(capsys, "probe", "--checkpoint", str(path), "--num-images", "8", "--out",
                           str(tmp_path / "out"))
    assert_one_line_error(code, err, str(path), f"is damaged: it is a version-{VERSION} checkpoint, which records a "
                                                "checksum, and it has none")


def test_a_version_2_checksum_still_guards_its_tensors_and_says_what_it_leaves_out(tmp_path):
    """Version 2 checksummed the tensors and the model alone: such a file loads, with a notice, and a flipped
    byte in its tensors is still refused."""
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = {**torch.load(path, weights_only=True), "version": 2}
    torch.save({**saved, "checksum": _legacy_checksum(saved)}, path)
    with pytest.warns(Notice, match="whose checksum covers its tensors and model only"):
        read_checkpoint(path)
    flip_tensor_bytes(path)
    with pytest.raises(CheckpointError, match="its tensors, or the model they are of, do not match"):
        read_checkpoint(path)


def test_weights_relabelled_as_another_model_with_the_same_keys_are_refused(tmp_path, capsys):
    """plain20 has resnet20's keys and shapes: relabelled, a run would resume (and write best.pt) as the other net."""
    train(TrainConfig(**TINY, epochs=2), tmp_path, stop_after=1)
    saved = torch.load(tmp_path / "latest.pt", weights_only=True)
    relabelled = {**saved, "model": "plain20", "train_config": {**saved["train_config"], "model": "plain20"}}
    torch.save(relabelled, tmp_path / "latest.pt")
    before = (tmp_path / "best.pt").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(tmp_path), "--device", "cpu")
    assert_one_line_error(code, err, "latest.pt is damaged: what it holds does not match the checksum")
    assert (tmp_path / "best.pt").read_bytes() == before


def test_a_torchvision_model_never_loads_its_default_backbone_weights(tmp_path, monkeypatch):
    """torchvision's detection and segmentation builders load ImageNet backbone weights by default, from the hub
    cache (unpickling them) or the network: a file naming fcn_resnet50 would run what lies in that cache."""
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"state_dict": Exploit(marker)}, cache / "resnet50-0676ba61.pth")  # the backbone's file name
    model = create_model("torchvision:fcn_resnet50", num_classes=3)
    assert not marker.exists() and model.spec.name == "torchvision:fcn_resnet50"


def test_a_checkpoint_nested_deeper_than_any_of_ours_is_damaged_not_a_crash(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", create_model("resnet20"))
    saved = torch.load(path, weights_only=True)
    deep: list = []
    for _ in range(3_000):  # past Python's recursion limit
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # what a hostile writer's Python allows itself
    try:
        torch.save({**saved, "metrics": {"deep": deep}}, path)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointError, match="nests deeper than a checkpoint's"):
        read_checkpoint(path)
