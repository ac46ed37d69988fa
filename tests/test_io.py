import errno
import os
import stat
import subprocess
import sys
import tempfile

import pytest
import torch

from dissipate._io import atomic_write, load_weights, writable_directory
from dissipate.errors import CheckpointError, InvalidArgumentError
from tests.helpers import Exploit


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda f: f.write(b"old"))
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail_half_way(file):
        file.write(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail_half_way)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_symlink_planted_at_the_old_temporary_name_is_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in (f".probe.csv.{os.getpid()}.tmp", f".probe.csv.{os.getpid()}"):
        (out / name).symlink_to(outside)
    atomic_write(out / "probe.csv", lambda f: f.write(b"site,depth\n"))
    assert outside.read_bytes() == b"precious" and (out / "probe.csv").read_bytes() == b"site,depth\n"
    assert not (out / "probe.csv").is_symlink()


def test_temporaries_of_dead_processes_are_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stray = tmp_path / f".log.csv.{dead.stdout.strip()}.x1y2.tmp"
    live = tmp_path / f".log.csv.{os.getppid()}.a3b4.tmp"  # this test's parent: running
    other = tmp_path / f".best.pt.{dead.stdout.strip()}.c5d6.tmp"  # another file's: left to its own next write
    for path in (stray, live, other):
        path.write_bytes(b"half")
    atomic_write(tmp_path / "log.csv", lambda f: f.write(b"epoch\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["log.csv", live.name, other.name])


def test_new_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644


def test_weight_files_are_read_without_unpickling_code(tmp_path):
    victim = tmp_path / "created_by_pickle"
    torch.save({"w": Exploit(victim)}, tmp_path / "evil.pt")
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pt: it holds Python objects"):
        load_weights(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"noise\.pt is not a readable PyTorch weight file") as info:
        load_weights(tmp_path / "noise.pt")
    assert "could run code" not in str(info.value) and not victim.exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "good.pt")
    assert torch.equal(load_weights(tmp_path / "good.pt")["w"], torch.ones(2))


def test_an_unwritable_output_directory_is_one_sentence(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match=r"--out .*file is a file, not a directory"):
        writable_directory(tmp_path / "file", "--out")
    for code, reason in ((errno.EROFS, "read-only file system"), (errno.ENOSPC, "the disk is full"),
                         (errno.EACCES, "permission denied")):  # root passes mode bits by; these come from the OS
        def refuse(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
        with pytest.raises(InvalidArgumentError, match=rf"--out .*run cannot be written: {reason}$"):
            writable_directory(tmp_path / "run", "--out")
    monkeypatch.undo()
    assert writable_directory(tmp_path / "new" / "run", "--out").is_dir()


def test_a_failed_write_names_the_file_not_its_temporary(tmp_path):
    (tmp_path / "log.csv").mkdir()  # a directory where the file should go
    with pytest.raises(IsADirectoryError) as error:
        atomic_write(tmp_path / "log.csv", lambda f: f.write(b"epoch\n"))
    assert error.value.filename == str(tmp_path / "log.csv") and os.listdir(tmp_path) == ["log.csv"]
    with pytest.raises(OSError) as error:
        atomic_write(tmp_path / ("x" * 300), lambda f: f.write(b""))
    assert error.value.errno == errno.ENAMETOOLONG and error.value.filename == str(tmp_path / ("x" * 300))
