"""Models nobody here wrote, by name, wherever `create_model` takes a registry name:

    torchvision:NAME                 torchvision.models.get_model(NAME), e.g. torchvision:resnet18
    timm:NAME                        timm.create_model(NAME), e.g. timm:vit_tiny_patch16_224 (an optional extra)
    module:PACKAGE.MODULE:FACTORY    FACTORY(**options) from an importable module of the user's own

Each is built at initialisation (never with downloaded weights) and then adapted (`adapters.adapt`): the families
that an adapter knows declare their sites' kinds and theory parts as our own blocks do. `hub_weights` finds a
torchvision weight enum's file in torch's hub cache, for a probe to load with `weights_only=True`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import signal
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DissipateError, InvalidArgumentError
from ._registry import MAX_CLASSES, ModelSpec, record_loads, register_source
from .adapters import adapt

SOURCES = ("torchvision", "timm", "module")
TIMM_INSTALL = 'timm is not installed; install it with: pip install "dissipate[timm]"'
# a timm name is an architecture and at most a pretrained tag: no hub (hf-hub:), no local directory (local-dir:)
TIMM_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")
# the libraries' options that load or fetch weights: a file read by pickle, or the network. Weights reach a model
# only through --weights and --checkpoint (weights_only), whoever names the option: the command line or a file.
LOADING_OPTIONS = {"torchvision": ("weights", "weights_backbone", "progress"),
                   "timm": ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _torchvision_models():
    """torchvision.models, imported on first use: importing torchvision takes over a second, which every command
    would pay for at start-up."""
    import torchvision.models

    return torchvision.models


def _torchvision(name: str, num_classes: int | None, options: dict) -> nn.Module:
    models = _torchvision_models()
    known = models.list_models()
    if name not in known:
        raise InvalidArgumentError(f"torchvision has no model {name!r}{_suggest(name, known)}")
    # detection and segmentation builders fetch (and unpickle) ImageNet backbone weights unless told not to
    parameters = inspect.signature(models.get_model_builder(name)).parameters
    no_backbone = {"weights_backbone": None} if "weights_backbone" in parameters else {}
    return models.get_model(name, weights=None, **no_backbone, **options, **_classes(num_classes))


def _timm(name: str, num_classes: int | None, in_chans: int, options: dict) -> nn.Module:
    try:
        with warnings.catch_warnings():  # timm's import touches torch.jit.interface, deprecated in torch 2.9
            warnings.simplefilter("ignore", FutureWarning)
            import timm
    except ImportError:
        raise InvalidArgumentError(TIMM_INSTALL) from None
    if not TIMM_NAME.fullmatch(name) or not timm.is_model(name):
        raise InvalidArgumentError(f"timm has no model {name!r}{_suggest(name, timm.list_models())}")
    return timm.create_model(name, pretrained=False, in_chans=in_chans, **options, **_classes(num_classes))


def _factory(target: str, options: dict) -> nn.Module:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise InvalidArgumentError(f"module: takes PACKAGE.MODULE:FACTORY (e.g. module:mynets.models:small_net), "
                                   f"got module:{target}")
    if not all(part.isidentifier() for part in module_name.split(".")):  # a path, a relative name: nothing to import
        raise InvalidArgumentError(f"module:{target} names module {module_name!r}, which is not a module path "
                                   "(dotted Python names, such as mynets.models)")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as error:
        raise InvalidArgumentError(f"cannot import {module_name!r} for module:{target}: {error}") from None
    except AttributeError:
        raise InvalidArgumentError(f"module {module_name!r} has no {attribute!r} (module:{target})") from None
    try:
        model = factory(**options)
    except TypeError:
        raise  # an option the factory does not take: create_external says which
    except (Exception, SystemExit, KeyboardInterrupt) as error:
        # Ctrl-C is a KeyboardInterrupt only under Python's own handler; under another (the CLI's raises its own
        # exception) a KeyboardInterrupt can only be the factory's doing, and is reported as such
        if isinstance(error, (DissipateError, MemoryError)) or (isinstance(error, KeyboardInterrupt)
                                                 and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            raise
        detail = f": {str(error).strip().splitlines()[0][:200]}" if str(error).strip() else ""
        raise InvalidArgumentError(f"module:{target} raised {type(error).__name__}{detail} when called to build the "
                                   "model") from None
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"module:{target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _classes(num_classes: int | None) -> dict[str, int]:
    """The num_classes argument: the library's own default (1000 for ImageNet models) where none is given."""
    if num_classes is None:
        return {}
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidArgumentError(f"num_classes must be an integer from 1 to {MAX_CLASSES}, got {num_classes!r}")
    return {"num_classes": num_classes}


def create_external(name: str, num_classes: int | None = None, in_chans: int = 3, **options: Any) -> nn.Module:
    """The model `name` (see the module's docstring) at initialisation, adapted, with a `spec` to rebuild it.

    torchvision's models take 3-channel images; a timm model is built for `in_chans`. A factory gets only
    `options`. `num_classes` of None keeps the library's default head (what its published weights have)."""
    source, _, target = name.partition(":")
    loading = sorted(set(options) & set(LOADING_OPTIONS.get(source, ())))
    if loading:
        raise InvalidArgumentError(f"{name} is built without weights, and option {loading[0]} would load them "
                                   "outside dissipate's weights_only reading; give a weight file with --weights")
    if source == "torchvision" and in_chans != 3:
        raise InvalidArgumentError(f"{name} takes 3-channel images, and these have {in_chans}")
    try:
        if source == "torchvision":
            model = _torchvision(target, num_classes, options)
        elif source == "timm":
            model = _timm(target, num_classes, in_chans, options)
        else:
            model = _factory(target, options)
    except TypeError as error:  # an option the builder does not take
        raise InvalidArgumentError(f"{name} cannot be built with options {options}: {error}") from None
    model.spec = ModelSpec(name, num_classes or _head_size(model), in_chans, dict(options))
    return record_loads(adapt(model))


def fixed_image_size(model: nn.Module) -> int | None:
    """The one image size a model of a library is built for, where it declares one: torchvision's vision
    transformers (`image_size`), timm's with a strict patch embedding (`patch_embed.img_size`); None elsewhere. For
    a sentence that says which size a model needs when it refuses the images (their own is an AssertionError)."""
    size, embed = getattr(model, "image_size", None), getattr(model, "patch_embed", None)
    if size is None and getattr(embed, "strict_img_size", False) and getattr(embed, "img_size", None):
        size = embed.img_size[0]
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _head_size(model: nn.Module) -> int:
    """The classes of a model built with its library's default head: its `num_classes` (timm's), or the outputs of
    its last linear layer (0 for a model with none)."""
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    return int(getattr(model, "num_classes", None) or (linears[-1] if linears else 0))


def head_classes(state_dict: dict, name: str) -> int | None:
    """The classes of the head that `state_dict` holds for model `name`: the rows of the weight of its last linear
    layer (found on the model as its library builds it by default); None where it has none."""
    with torch.device("meta"):  # the layout alone: no memory, no initialisation
        layout = create_external(name)
    linears = [path for path, module in layout.named_modules() if isinstance(module, nn.Linear)]
    weight = state_dict.get(f"{linears[-1]}.weight") if linears else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def hub_weights(name: str, weights: str) -> Path:
    """The file of torchvision weight enum `weights` (e.g. "IMAGENET1K_V1", or "DEFAULT") of model `name`
    ("torchvision:resnet18") in torch's hub cache. It is never downloaded here: a missing file is one sentence
    that says where to put it."""
    source, _, target = name.partition(":")
    if source != "torchvision":
        raise InvalidArgumentError(f"--weights NAME picks one of torchvision's weight enums; for {name} give a file")
    try:
        enum = _torchvision_models().get_model_weights(target)
    except ValueError:
        raise InvalidArgumentError(f"torchvision has no weights for {target!r}") from None
    if weights not in enum.__members__:
        raise InvalidArgumentError(f"--weights {weights!r} is neither a file nor a weight of {target}; choose one of "
                                   f"{', '.join(enum.__members__)}, or give a file")
    url = enum[weights].url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        raise InvalidArgumentError(f"{target}'s {weights} weights are not in the hub cache: download {url} to {path}")
    return path


for _source in SOURCES:
    register_source(_source, create_external)
