"""Files: writes that never leave a half-written file behind, and weight files read without unpickling code."""

from __future__ import annotations

import errno
import os
import pickle
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .errors import CheckpointError, InvalidArgumentError


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call `write(file)` on a new temporary file beside `path`, then rename it over `path`.

    The temporary file is created exclusively under an unpredictable name (`.NAME.PID.RANDOM.tmp`), so a file or
    symlink planted beside `path` is never written through. A process killed half-way leaves the previous `path`
    untouched and at most a stray temporary file, which the next write of `path` removes once its process is gone.
    """
    path = Path(path)
    tmp = None
    _remove_stray_temporaries(path)  # outside the try below: an error here names the temporary, not `path`
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.fchmod(fd, 0o666 & ~_umask())  # what open() would have given the file, not mkstemp's 0600
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:  # name the file written, not its temporary
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    try:  # make the rename itself durable; not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stray_temporaries(path: Path) -> None:
    """Delete `.NAME.PID.*.tmp` beside `path` left by processes that no longer run (a kill mid-write). Only regular
    files are ours (mkstemp makes nothing else): a directory or symlink planted at such a name is left alone."""
    for stray in path.parent.glob(f".{path.name}.*.tmp"):
        pid = stray.name[len(path.name) + 2:].partition(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            try:
                if stat.S_ISREG(stray.lstat().st_mode):
                    stray.unlink()
            except FileNotFoundError:  # removed meanwhile, by another process's write of `path`
                pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:  # an id no process can have: no temporary of ours, so it is left alone
        return True
    return True


def writable_directory(path: str | os.PathLike, what: str) -> Path:
    """`path` as a directory that can be written, created if needed; InvalidArgumentError naming it otherwise."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise InvalidArgumentError(f"{what} {path} is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise InvalidArgumentError(f"{what} {path} cannot be written: {os_error_reason(error)}") from None
    return path


def os_error_reason(error: OSError) -> str:
    """A few words on why a write failed: "the disk is full", "permission denied", ..."""
    return "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error)).lower()


def load_weights(path: str | os.PathLike, what: str = "weight file") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU: tensors and plain data only, nothing else is unpickled.
    CheckpointError with one sentence, naming the `what` at `path`, when it is missing, holds other objects, or is
    not a PyTorch file at all."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on files it then reads fine
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch raises many types for a bad file; each means the same here
        text = str(error)
        if isinstance(error, pickle.UnpicklingError) and "unsupported global" in text.lower():
            raise CheckpointError(f"refusing to load {path}: it holds Python objects beyond tensors and plain data, "
                                  "and unpickling them could run code") from None
        reason = next((line.strip() for line in text.splitlines() if line.strip()
                       and not line.startswith(("Weights only load failed", "Please file an issue", "Check the "))),
                      type(error).__name__)
        raise CheckpointError(f"{path} is not a readable PyTorch {what} (truncated or corrupt?): "
                              f"{reason[:120]}") from None
