"""dissipate: measure how a network's input survives, layer by layer."""

__version__ = "0.1.0"  # first: the modules imported below may read it

from .errors import CheckpointError, DissipateError, InvalidArgumentError, UnknownModelError  # noqa: E402
from .models import create_model, list_models  # noqa: E402
__all__ = ["CheckpointError", "DissipateError", "InvalidArgumentError", "UnknownModelError", "create_model",
           "list_models", "__version__"]
