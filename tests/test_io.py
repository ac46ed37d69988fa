import os

import pytest

from dissipate._io import atomic_write


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
