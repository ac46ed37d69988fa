"""The model registry: `create_model(name, ...)` and `list_models()`, with plain, residual, PNNH and VGG families,
their transformer counterparts (plainvitN, vitN, pnnhvitN), the shortcut-free remedies (tatN, isoN, llN, diracN,
repvggN), and other libraries' models by name ("torchvision:resnet18", "timm:NAME", "module:PACKAGE.MODULE:FACTORY")."""

from . import external, pnnh, remedies, resnet, vgg, vit  # noqa: F401  (importing a family registers its models)
from ._registry import (MAX_CHANNELS, MAX_CLASSES, ModelEntry, ModelSpec, check_options, create_model, external_source,
                        get_model_entry, list_models, model_options, register_model)
from ._summary import count_flops, count_parameters, model_table, select_models
from .remedies import REMEDIES
from .vit import TRANSFORMER_FAMILIES

REMEDY_FAMILIES = tuple(REMEDIES)  # tat, iso, ll, dirac, repvgg

__all__ = ["MAX_CHANNELS", "MAX_CLASSES", "REMEDY_FAMILIES", "TRANSFORMER_FAMILIES", "ModelEntry", "ModelSpec",
           "check_options", "count_flops", "count_parameters", "create_model", "external_source", "get_model_entry", "list_models",
           "model_options", "model_table", "register_model", "select_models"]
