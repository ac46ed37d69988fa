"""Typed errors for bad input.

Each one carries a message that is a single sentence naming the bad value and what would be valid. The CLI prints
that sentence and exits with ``exit_code``; library users can catch ``DissipateError`` or the builtin each one
also subclasses.
"""

from __future__ import annotations


class DissipateError(Exception):
    """Base class for every error that is the user's input, not a bug."""

    exit_code = 2


class UnknownModelError(DissipateError, ValueError):
    """A model name that is not in the registry."""


class InvalidArgumentError(DissipateError, ValueError):
    """An argument outside its valid range or set of choices."""


class CheckpointError(DissipateError, ValueError):
    """A checkpoint that cannot be read, or that does not fit the model."""


class OutOfMemory(DissipateError, MemoryError):
    """A run that does not fit in the device's memory at the settings asked for."""


class WriteFailed(DissipateError, OSError):
    """An output that could not be written (a full disk, a directory made read-only)."""


class TrainingDiverged(DissipateError, ArithmeticError):
    """A training loss that became NaN or infinite, in epoch `epoch`."""

    def __init__(self, message: str, epoch: int | None = None):
        super().__init__(message)
        self.epoch = epoch


class RunsFailed(DissipateError, RuntimeError):
    """Training runs of `dissipate figures --jobs` that failed; the others finished and are cached."""

    exit_code = 1


class Notice(UserWarning):
    """Something to know that is not an error (a checkpoint without a checksum, a metric left out): a warning, which
    the CLI prints as one "note:" line."""
