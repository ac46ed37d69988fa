"""Hostile run directories, figure caches and surroundings (stdout, signals, a data dir that is a file): each gets one
sentence naming the culprit and a non-zero exit code, never a traceback, and no file that dissipate did not write is
deleted or written through."""

import contextlib
import errno
import gzip
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

from dissipate import _io
from dissipate.analyses import planned_runs, select
from dissipate.analyses._common import Context, Variant
from dissipate.checkpoint import read_checkpoint
from dissipate.train import TrainConfig, train
from dissipate.models.remedies import ISONet
from tests.helpers import run_cli, save_resigned
from tests.test_hostile import assert_one_line_error, damage
from tests.test_train import PROBED, TINY

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--model", "resnet20", "--data", "synthetic", "--subset", "64", "--test-subset", "32", "--batch-size",
             "32", "--image-size", "16", "--epochs", "1", "--device", "cpu"]  # a fresh run of about a second


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run of TINY's 2 epochs, finished: copy it before changing it."""
    run = tmp_path_factory.mktemp("finished")
    train(TrainConfig(**TINY, epochs=2), run)
    return run


@pytest.fixture(scope="module")
def probing_run(tmp_path_factory):
    """A run that probes every epoch, stopped after epoch 1 of 2: copy it before changing it."""
    run = tmp_path_factory.mktemp("probing")
    train(TrainConfig(**{**PROBED, "epochs": 2}), run, stop_after=1)
    return run


def copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def contents(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.mark.parametrize("junk", [b"my notes\n1,2\n", b"a,b\n1,2\n1,2,3,4\n", b"\x00\xff\xfe binary", b""])
def test_a_junk_probes_csv_stops_a_resume_with_its_name_and_is_kept(tmp_path, capsys, probing_run, junk):
    run = copy(probing_run, tmp_path)
    (run / "probes.csv").write_bytes(junk)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert_one_line_error(code, err, f"{run / 'probes.csv'} is not a probes file of a dissipate run", "move it out")
    assert (run / "probes.csv").read_bytes() == junk and read_checkpoint(run / "latest.pt")["epoch"] == 1


def test_a_checkpoint_whose_history_outruns_its_epochs_is_refused_before_any_write(tmp_path, capsys, finished_run):
    run = copy(finished_run, tmp_path)
    damage(run / "latest.pt", lambda saved: saved["train_config"].__setitem__("epochs", 1))
    before = contents(run)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert_one_line_error(code, err, f"{run / 'latest.pt'} is damaged: its history has 2 epochs, more than the 1")
    assert contents(run) == before


def test_resuming_a_finished_run_says_that_nothing_is_left_to_train(tmp_path, capsys, finished_run):
    run = copy(finished_run, tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert code == 0 and err == f"note: the run in {run} already has all its 2 epochs: nothing to train\n"


def test_a_finished_run_whose_latest_weights_are_nan_is_refused_before_best_pt_is_written(tmp_path, capsys,
                                                                                          finished_run):
    """A kill between latest.pt and best.pt leaves best.pt behind, and a resume copies latest.pt over it: unless
    latest.pt is damaged."""
    run = copy(finished_run, tmp_path)

    def poison(saved):
        saved["state_dict"]["fc.weight"][0, 0] = math.nan
        saved["history"][-1]["test_acc"] = 1.0  # the last epoch is the best: the one best.pt should hold

    damage(run / "latest.pt", poison)
    (run / "best.pt").unlink()
    before = contents(run)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert_one_line_error(code, err, f"{run / 'latest.pt'} is damaged: its weights hold non-finite values (fc.weight)")
    assert contents(run) == before


def test_a_fresh_run_never_deletes_a_probes_csv_it_did_not_write(tmp_path, capsys):
    """A run writes its probes.csv only beside a checkpoint of its own, so a lone one, even of epochs 0 and 1 as a
    run killed in its first epoch once left, is another run's: refused and kept, unless --overwrite says otherwise."""
    notes = tmp_path / "probes.csv"
    for text in ("my own notes\n", "epoch,site,depth,surviving\n0,act1,0,0.5\n0,layer1.0.act1,1,0.5\n1,act1,0,0.4\n"):
        notes.write_text(text)
        code, _, err = run_cli(capsys, "train", *TINY_ARGS, "--out", str(tmp_path))
        assert_one_line_error(code, err, f"{notes} is another run's", "replace it with --overwrite")
        assert sorted(os.listdir(tmp_path)) == ["probes.csv"] and notes.read_text() == text
    code, _, _ = run_cli(capsys, "train", *TINY_ARGS, "--out", str(tmp_path), "--overwrite")  # what the user chose
    assert code == 0 and not notes.exists() and (tmp_path / "latest.pt").is_file()


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_probes_to_be_refused(tmp_path):
    train(TrainConfig(**{**PROBED, "epochs": 2}), tmp_path / "run", stop_after=0)  # as if killed in epoch 1
    assert os.listdir(tmp_path / "run") == []
    train(TrainConfig(**{**PROBED, "epochs": 2}), tmp_path / "run", stop_after=1)
    assert sorted(pd.read_csv(tmp_path / "run" / "probes.csv")["epoch"].unique()) == [0, 1]


def test_a_directory_at_a_temporarys_name_is_left_alone(tmp_path, capsys, finished_run):
    run = copy(finished_run, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    planted = [run / f".{name}.{dead.stdout.strip()}.x1y2.tmp" for name in ("log.csv", "best.pt")]
    for path in planted:
        path.mkdir()
        (path / "inside").write_text("someone's")
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert code == 0 and "error" not in err
    assert all((path / "inside").read_text() == "someone's" for path in planted)


def test_a_temporary_that_cannot_be_removed_is_named(tmp_path, monkeypatch):
    stray = tmp_path / ".log.csv.4194305.x1y2.tmp"  # above Linux's largest process id: its process is gone
    stray.write_bytes(b"half")

    def refuse(self, missing_ok=False):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(self))

    monkeypatch.setattr(_io.Path, "unlink", refuse)
    with pytest.raises(PermissionError) as error:
        _io.atomic_write(tmp_path / "log.csv", lambda f: f.write(b"epoch\n"))
    assert error.value.filename == str(stray)


def test_the_cache_gitignore_is_never_written_through_a_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "out" / "cache").mkdir(parents=True)
    (tmp_path / "out" / "cache" / ".gitignore").symlink_to(outside)
    Context("smoke", tmp_path / "out", device="cpu")
    gitignore = tmp_path / "out" / "cache" / ".gitignore"
    assert outside.read_text() == "precious" and not gitignore.is_symlink() and gitignore.read_text() == "*\n"


def plant(out: Path, name: str, junk: bytes) -> list[Path]:
    """`junk` as `name` in the cache of every run that the smoke preset's training_curves trains."""
    ctx = Context("smoke", out, device="cpu")
    planted = []
    for variant, data in planned_runs(select(["training_curves"]), "smoke"):
        run = ctx.run_dir(ctx.train_config(variant, data))
        run.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(junk)
        planted.append(run / name)
    return planted


@pytest.mark.parametrize("name, junk, why", [
    ("diverged.txt", b"not an epoch\n", "it does not start with the epoch"),
    ("log.csv", b"a,b\n1,2\n1,2,3,4\n", "Error tokenizing data"),
    ("log.csv", b"epoch,train_loss\n1,0.5\n", "it has no train_acc column")])
def test_a_damaged_file_in_the_figures_cache_is_named_and_kept(tmp_path, capsys, name, junk, why):
    planted = plant(tmp_path / "out", name, junk)
    code, _, err = run_cli(capsys, "figures", "--preset", "smoke", "--only", "training_curves", "--device", "cpu",
                           "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, " is damaged (", why, "recompute everything with --force")
    assert any(str(path) in err for path in planted) and all(path.read_bytes() == junk for path in planted)


def test_force_retrains_a_run_whose_cached_log_is_damaged(tmp_path):
    ctx = Context("smoke", tmp_path, device="cpu", force=True)
    run = ctx.run_dir(ctx.train_config(Variant("resnet20")))
    run.mkdir(parents=True)
    (run / "log.csv").write_bytes(b"a,b\n1,2\n1,2,3,4\n")
    assert ctx.trained(Variant("resnet20")).log["epoch"].tolist() == [1, 2]


@pytest.mark.parametrize("data", ["cifar10", "fashion-mnist"])
def test_a_data_dir_that_is_a_file_is_one_sentence(tmp_path, capsys, monkeypatch, data):
    debian = tmp_path / "debian"  # where Debian's package puts Fashion-MNIST: staged into the data dir first
    debian.mkdir()
    with gzip.open(debian / "train-images-idx3-ubyte.gz", "wb") as file:
        file.write(b"idx")
    monkeypatch.setattr("dissipate.data.DEBIAN_FASHION_MNIST", debian)
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    code, _, err = run_cli(capsys, "probe", "--model", "resnet20", "--data", data, "--data-dir", str(afile),
                           "--num-images", "8", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"the data dir {afile} is a file, not a directory")


def test_a_full_stdout_is_named(capsys, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    try:
        code, _, err = run_cli(capsys, "models", "resnet20", "--format", "csv")
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):  # what is left in its buffer cannot be written either
            full.close()
    assert code == 1 and err == "error: cannot write or read stdout: the disk is full\n"


def test_a_closed_stdout_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a closed fd 1 (`dissipate models >&-`)
    code, _, err = run_cli(capsys, "models", "resnet20")
    assert_one_line_error(code, err, "stdout is closed, so the output would be lost")


TERMINATED = textwrap.dedent("""
    import os, signal, time
    from dissipate import bound_check
    from dissipate.cli import main

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # what kill, Slurm and systemd send
        time.sleep(30)

    bound_check.check_monte_carlo = terminated
    main(["bound-check"])
""")


def test_sigterm_says_what_was_kept_and_exits_143():
    result = subprocess.run([sys.executable, "-c", TERMINATED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.startswith("terminated; files already written are complete")
    assert "Traceback" not in result.stderr


STARTING = textwrap.dedent("""
    import builtins, os, signal, sys
    real_import = builtins.__import__

    def import_(name, *args, **kwargs):
        if name.partition(".")[0] == "torch" and not hasattr(builtins, "_interrupted"):  # the seconds of start-up
            builtins._interrupted = True
            raise KeyboardInterrupt  # what Python's SIGINT handler raises: here, not at a later bytecode that a bare
            # except inside a library's import could swallow (a real os.kill made this test flaky on a slow machine)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = import_
    sys.argv = ["dissipate", "models", "resnet20"]
""")


def script_entry() -> str:
    """How the `dissipate` script that pyproject.toml declares starts: `from MODULE import FUNCTION; FUNCTION()`."""
    module, _, function = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["dissipate"] \
        .partition(":")
    return f"import sys\nfrom {module} import {function}\nsys.exit({function}())"


@pytest.mark.parametrize("start", ["import runpy\nrunpy.run_module('dissipate', run_name='__main__', alter_sys=True)",
                                   "script"])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(start):
    code = STARTING + (script_entry() if start == "script" else start)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 130 and result.stderr.startswith("interrupted; files already written are complete")
    assert "Traceback" not in result.stderr


# -- the third hostile pass: every field checked, one run per directory ----------------------------------------------

def _edited(path: Path, edit) -> None:
    """Rewrite the checkpoint at `path` with `edit(saved)` applied and its checksum left as it was."""
    saved = torch.load(path, weights_only=True)
    edit(saved)
    torch.save(saved, path)


@pytest.mark.parametrize("edit", [
    lambda saved: saved.update(dataset="synthetiX"),
    lambda saved: saved["train_config"].update(epochs=3, lr=0.5),
    lambda saved: saved["history"][1].update(test_acc=0.99),
], ids=["dataset", "training config", "history"])
def test_a_changed_field_anywhere_in_a_checkpoint_is_refused(tmp_path, capsys, finished_run, edit):
    run = copy(finished_run, tmp_path)
    _edited(run / "latest.pt", edit)
    before = contents(run)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(run), "--device", "cpu")
    assert_one_line_error(code, err, f"{run / 'latest.pt'} is damaged: what it holds does not match the checksum")
    assert contents(run) == before  # best.pt is not replaced by the edited latest.pt


def test_a_run_stays_one_run_a_file_of_another_is_named(tmp_path, capsys, finished_run):
    """latest.pt relabelled as plain20 and signed again beside resnet20's best.pt; a log of another run; each
    refused, naming the file that differs, and nothing rewritten."""
    relabelled = copy(finished_run, tmp_path / "relabelled")

    def as_plain(saved):
        saved.update(model="plain20", train_config={**saved["train_config"], "model": "plain20"})
    saved = torch.load(relabelled / "latest.pt", weights_only=True)
    as_plain(saved)
    save_resigned(saved, relabelled / "latest.pt")
    before = contents(relabelled)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(relabelled), "--device", "cpu")
    assert_one_line_error(code, err, f"{relabelled / 'best.pt'} is of another run than {relabelled / 'latest.pt'} "
                                     "(model 'resnet20', not 'plain20')")
    assert contents(relabelled) == before

    other_log = copy(finished_run, tmp_path / "log")
    log = pd.read_csv(other_log / "log.csv")
    log.loc[0, "train_loss"] += 0.25
    log.to_csv(other_log / "log.csv", index=False)
    before = contents(other_log)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(other_log), "--device", "cpu")
    assert_one_line_error(code, err, f"{other_log / 'log.csv'} is not the log of the run in")
    assert contents(other_log) == before


def test_an_option_beyond_its_meaning_is_refused_and_an_overflowing_penalty_names_its_option(tmp_path, capsys,
                                                                                            monkeypatch):
    code, _, err = run_cli(capsys, "train", *TINY_ARGS, "--model", "iso20", "--model-arg", "ortho_coeff=1e308",
                           "--out", str(tmp_path / "refused"))
    assert_one_line_error(code, err, "ortho_coeff must be a number from 0 to 1, got 1e+308")
    assert not (tmp_path / "refused" / "latest.pt").exists()
    monkeypatch.setattr(ISONet, "regularization", lambda self: torch.tensor(math.inf))
    code, _, err = run_cli(capsys, "train", *TINY_ARGS, "--model", "iso20", "--out", str(tmp_path / "overflow"))
    assert code != 0 and "scaled by ortho_coeff=0.0001, overflowed); lower --model-arg ortho_coeff" in err, err
    assert "learning rate" not in err


def test_a_module_path_and_a_symlink_loop_are_named_for_what_they_are(tmp_path, capsys):
    code, _, err = run_cli(capsys, "probe", "--model", "module:../../etc/passwd:x", "--num-images", "8", "--out",
                           str(tmp_path / "out"))
    assert_one_line_error(code, err, "names module '../../etc/passwd', which is not a module path")
    assert "options {}" not in err
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, _, err = run_cli(capsys, "plot", "probe.csv", "--out", str(loop / "probes.png"))
    assert_one_line_error(code, err, f"the directory of --out {loop} cannot be written: it is a symlink loop")
