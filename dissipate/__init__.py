"""dissipate: measure how a network's input survives, layer by layer."""

from .errors import CheckpointError, DissipateError, InvalidArgumentError, UnknownModelError
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["CheckpointError", "DissipateError", "InvalidArgumentError", "UnknownModelError", "create_model",
           "list_models", "__version__"]
