"""Files: writes that never leave a half-written file behind, weight files read without unpickling code, and CSV
files read with every column that dissipate knows checked against its rules."""

from __future__ import annotations

import errno
import math
import os
import pickle
import stat
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np
import pandas as pd
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
        raise InvalidArgumentError(f"{what} {path} cannot be written: {_broken_link(path) or os_error_reason(error)}"
                                   ) from None
    return path


def _broken_link(path: Path) -> str | None:
    """Why a symlink at (or above) `path` leads nowhere: a loop, or a missing target; None when it is not that."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "it is a symlink loop"
        if error.errno == errno.ENOENT and os.path.islink(path):
            return f"it is a symlink to {os.readlink(path)}, which does not exist"
    return None


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


@dataclass(frozen=True)
class ColumnRule:
    """What a column of dissipate's CSV files may hold: numbers from `low` to `high`, whole numbers that are never
    missing when `whole`; a missing value (NaN) is allowed otherwise, infinities never."""

    low: float
    high: float
    whole: bool = False

    def describe(self) -> str:
        kind, low, high = "a whole number" if self.whole else "a number", _number(self.low), _number(self.high)
        return f"{kind} up to {high}" if self.low == -math.inf else f"{kind} from {low} to {high}"


def _number(x: float) -> str:
    return f"{int(x):,}" if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


MAX_INDEX = 1_000_000  # beyond any depth, site or epoch of a real run
ROUNDING = 1e-3  # float32 sums put a measured R^2 of 1 as high as 1.0000019 (figures/remedies.csv)
COLUMN_RULES = {  # every CSV reader checks these columns where a file has them (`read_table`)
    "epoch": ColumnRule(0, MAX_INDEX, whole=True),
    "depth": ColumnRule(0, MAX_INDEX, whole=True),  # a site's position in the net (probe.csv); `layer` in analyses
    "layer": ColumnRule(0, MAX_INDEX, whole=True),
    "channels": ColumnRule(1, 2 ** 24, whole=True),
    "model_depth": ColumnRule(1, MAX_INDEX),  # missing on rows of no one net
    "surviving": ColumnRule(0, 1),  # a fraction of a site's values
    "cka_input": ColumnRule(-1, 1 + ROUNDING),  # debiased CKA dips just below 0
    "recon_r2": ColumnRule(-math.inf, 1 + ROUNDING),  # R^2: 1 at best, as low as a bad read-out makes it
    "train_acc": ColumnRule(0, 1),
    "test_acc": ColumnRule(0, 1),
}


def read_table(path: str | os.PathLike, columns: tuple[str, ...], problem: Callable[[str], Exception]) -> pd.DataFrame:
    """The CSV at `path`, which must have `columns`, with each column of COLUMN_RULES it has checked and made numeric
    (whole-number columns int64). Anything else raises `problem(why)`, `why` being a phrase that names the column
    and the row: "its depth column holds 'x' in row 3, where a whole number from 0 to 1e+06 belongs"."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:  # pandas' ParserError and EmptyDataError, and bad UTF-8, are ValueErrors
        text = error.strerror.lower() if isinstance(error, OSError) and error.strerror else str(error)
        raise problem(f"it cannot be read as a CSV: {(text.strip().splitlines() or [type(error).__name__])[0][:100]}"
                      ) from None
    missing = [column for column in columns if column not in frame]
    if missing:
        raise problem(f"it has no {missing[0]} column")
    for column, rule in COLUMN_RULES.items():
        if column not in frame:
            continue
        numeric = pd.to_numeric(frame[column], errors="coerce")  # an int column stays int
        values = numeric.astype(float)
        absent = values.isna()
        bad = (absent & (frame[column].notna() | rule.whole)) | (~absent & ~(
            np.isfinite(values) & (values >= rule.low) & (values <= rule.high) & (~rule.whole | (values % 1 == 0))))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            value = frame[column].iloc[row]
            shown = "nothing" if pd.isna(value) and not isinstance(value, str) else repr(
                value.item() if hasattr(value, "item") else value)
            raise problem(f"its {column} column holds {shown} in row {row + 1}, where {rule.describe()} belongs")
        frame[column] = values.astype("int64") if rule.whole else numeric
    return frame
