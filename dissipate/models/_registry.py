"""The model registry: a dict of named builders, in the manner of timm's, plus the spec each model remembers."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import reprlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import InvalidArgumentError, UnknownModelError

STEMS = ("cifar", "imagenet")
SMALL_IMAGE_PX = 64  # below this the default stem is "cifar": a 7x7/2 conv plus max-pool would leave too little


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model before building it."""

    name: str
    family: str  # "plain", "resnet", "pnnh", "vgg", "plainvit", "vit" or "pnnhvit"
    depth: int  # weighted layers (blocks for a transformer), as in the model's name
    builder: Callable[..., nn.Module]
    natural_stem: str | None  # the stem used when neither `stem` nor `image_size` is given; None: the model has
    # no stem to choose, and builds for an image size (`img_size`, a ViT's patch grid) instead
    first_defaults: dict[str, Any] = field(default_factory=dict)  # options whose default changed since checkpoint v1


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: saved in every checkpoint."""

    name: str
    num_classes: int
    in_chans: int
    kwargs: dict[str, Any] = field(default_factory=dict)  # resolved: `stem` (or a ViT's `img_size`) is always present


_entries: dict[str, ModelEntry] = {}
_sources: dict[str, Callable[..., nn.Module]] = {}  # "torchvision" -> builder of "torchvision:NAME" (external.py)


def register_model(name: str, builder: Callable[..., nn.Module], *, family: str, depth: int,
                   natural_stem: str | None = None, first_defaults: dict[str, Any] | None = None) -> None:
    """Add `builder` (called as builder(num_classes=, in_chans=, stem=, **kwargs), or without stem= for a model
    with no natural stem, whose `img_size` option create_model's image_size sets) to the registry.
    `first_defaults`: the defaults of options that have changed since checkpoints began recording every option
    (version 1 recorded only those given), so that an old checkpoint rebuilds the net it was saved from."""
    if name in _entries:
        raise ValueError(f"model {name!r} is registered twice")
    _entries[name] = ModelEntry(name, family, depth, builder, natural_stem, dict(first_defaults or {}))


def register_source(prefix: str, builder: Callable[..., nn.Module]) -> None:
    """Let `create_model` build "PREFIX:NAME" with builder(name, num_classes=, in_chans=, **kwargs)."""
    _sources[prefix] = builder


def external_source(name: str) -> str | None:
    """The source of a name such as "torchvision:resnet18" ("torchvision"); None for a registry name."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in _sources else None


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching a glob `pattern`, in family then depth order (plain20 before plain110)."""
    names = [n for n, e in _entries.items() if fnmatch.fnmatchcase(n, pattern) and family in (None, e.family)]
    return sorted(names, key=_natural_key)


def _depth_gap(a: str, b: str) -> int:
    """How far apart the trailing numbers of two names are (0 where either has none)."""
    depths = [re.search(r"(\d+)$", name) for name in (a, b)]
    return abs(int(depths[0][1]) - int(depths[1][1])) if all(depths) else 0


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; an unknown name raises an error that suggests the nearest ones."""
    try:
        return _entries[name]
    except KeyError:
        asked = name.lower()
        close = difflib.get_close_matches(asked, list(_entries), n=6, cutoff=0.5)
        # equally similar names (resnet32, resnet34 for resnet35) are ranked by how near their depth is
        ranked = sorted(close, key=lambda c: (-difflib.SequenceMatcher(None, asked, c).ratio(), _depth_gap(asked, c)))
        nearest = ranked[:3]
        hint = f"did you mean {', '.join(nearest)}? " if nearest else ""
        raise UnknownModelError(f"unknown model {name!r}; {hint}(`dissipate models` lists them all)") from None


def resolve_stem(entry: ModelEntry, stem: str | None, image_size: int | None) -> str:
    """The stem to build: the one asked for, else the one the image size calls for, else the family's own."""
    if stem is None:
        if image_size is None:
            return entry.natural_stem
        return "cifar" if image_size < SMALL_IMAGE_PX else "imagenet"
    if stem not in STEMS:
        raise InvalidArgumentError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    return stem


MAX_CLASSES, MAX_CHANNELS = 1_000_000, 1024  # beyond any real classifier or image: a typo, or a hostile header
NOT_OPTIONS = ("name", "num_classes", "in_chans", "image_size")  # create_model's own arguments: never in **kwargs


def check_options(options: object, source: str) -> dict:
    """`options` if it can be a model's **kwargs (names to plain values, none of NOT_OPTIONS); else one sentence."""
    plain = (str, int, float, bool, type(None))
    if not (isinstance(options, dict) and all(isinstance(k, str) and k not in NOT_OPTIONS and isinstance(v, plain)
                                              for k, v in options.items())):
        raise InvalidArgumentError(f"{source} must map option names to plain values, without "
                                   f"{', '.join(NOT_OPTIONS)}; got {reprlib.repr(options)}")
    return options


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, stem: str | None = None,
                 image_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model at initialisation.

    Args:
        name: a name from `list_models()`, e.g. "plain34", "resnet56", "pnnh20", "vgg16".
        num_classes: outputs of the classifier.
        in_chans: input image channels.
        stem: "cifar" (3x3 conv, no max-pool) or "imagenet" (7x7/2 conv plus max-pool). For VGG it picks the head
            ("imagenet": torchvision's three-layer classifier, "cifar": one linear layer after global pooling).
        image_size: when `stem` is None, images below 64 px get the cifar stem and larger ones the imagenet stem;
            when both are None the family's own stem is used (cifar for the CIFAR family, imagenet otherwise).
            A transformer has no stem: it is built for this size (its `img_size` option; 32 when neither is given).
        **kwargs: family options, e.g. `act="gelu"`, or PNNH's `coder_ratio`, `learner_ratio`, `downsample_block`.

    Names of other libraries' models, "torchvision:NAME", "timm:NAME" and "module:PACKAGE.MODULE:FACTORY", are
    built by `external.create_external` (num_classes=None keeps the library's own head; stem and image size do not
    apply).

    The returned model has a `spec` attribute (a `ModelSpec`) from which `create_model` rebuilds it.
    """
    source = external_source(name)
    if source is not None:
        if stem is not None:
            raise InvalidArgumentError(f"stem is an option of dissipate's own models, not of {name}")
        return _sources[source](name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    entry = get_model_entry(name)
    for arg, value, most in (("num_classes", num_classes, MAX_CLASSES), ("in_chans", in_chans, MAX_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise InvalidArgumentError(f"{arg} must be an integer from 1 to {most}, got {value!r}")
    if entry.natural_stem is None:
        if stem is not None:
            raise InvalidArgumentError(f"{name} has no stem to choose; its patch embedding follows the image size")
        if image_size is not None and kwargs.setdefault("img_size", image_size) != image_size:
            raise InvalidArgumentError(f"{name} is built for {kwargs['img_size']} px images (img_size), and the "
                                       f"images are {image_size} px")
        fixed = {}
    else:
        fixed = {"stem": resolve_stem(entry, stem, image_size)}
    options = model_options(entry, kwargs)
    model = entry.builder(num_classes=num_classes, in_chans=in_chans, **fixed, **kwargs)
    resolved = getattr(model, "resolved_options", {})  # defaults that depend on other options (a ViT's patch size)
    model.spec = ModelSpec(name, num_classes, in_chans, {**fixed, **options, **resolved})
    return record_loads(model)


def record_loads(model: nn.Module) -> nn.Module:
    """`model` with `weights_loaded`: False now, True once any `load_state_dict` has loaded weights into it (a hook
    sees every load, through dissipate's loaders or not). How the bound-check tells a net at initialisation from a
    trained one whatever its normalisation; `create_model` records it on every model it builds."""
    model.weights_loaded = False
    model.register_load_state_dict_post_hook(_loaded)
    return model


def _loaded(module: nn.Module, incompatible_keys) -> None:
    module.weights_loaded = True


def model_options(entry: ModelEntry | str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every option a registered model builds with: its builder's defaults, overridden by `kwargs` (which must all
    be options it takes). What a spec records, so that a net rebuilds as it was whatever the defaults become."""
    entry = get_model_entry(entry) if isinstance(entry, str) else entry
    fixed = set(getattr(entry.builder, "keywords", {}))  # what the name decides (resnetN's residual=True)
    parameters = {name: p for name, p in inspect.signature(entry.builder).parameters.items()
                  if name not in {"num_classes", "in_chans", "stem", *fixed}}
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise InvalidArgumentError(f"model {entry.name!r} takes no argument {', '.join(unknown)}; it takes "
                                   f"{', '.join(sorted(parameters)) or 'none'}")
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}
