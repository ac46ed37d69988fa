"""dissipate: measure how a network's input survives, layer by layer."""

__version__ = "0.1.0"  # first: the modules imported below may read it

from .errors import CheckpointError, DissipateError, InvalidArgumentError, UnknownModelError  # noqa: E402

__all__ = ["CheckpointError", "DissipateError", "InvalidArgumentError", "UnknownModelError", "create_model",
           "list_models", "__version__"]


def __getattr__(name: str):
    """create_model and list_models, imported on first use: `import dissipate` stays light (no torch), so that the
    `dissipate` script handles a Ctrl-C from its first moment (dissipate.__main__.run)."""
    if name in ("create_model", "list_models"):
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
