"""Checkpoints: plain `torch.save` dicts, written atomically and read with `weights_only=True` only.

Format (docs/design.md, section 5)::

    {"format": "dissipate", "version": 3, "model": name, "model_kwargs": {...}, "state_dict": ...,
     "num_classes": ..., "in_chans": ..., "dataset": ..., "epoch": ..., "metrics": {...}, "checksum": ...}

Since version 2 a checkpoint records every option the model was built with, defaults included; version 1 recorded
those given, and is read with the defaults of its day (`ModelEntry.first_defaults`).

A bare state_dict (torchvision's weights, say) is accepted too, together with a model name.

Version 3 carries a SHA-256 of everything it holds ("checksum"), checked as it is read: a changed byte anywhere, in
a tensor, the header, the training config or the history, is refused, and so is a version-3 file without one.
Version-2 files checksummed their tensors and model only, and load with a notice, as do those written before any
checksum. A file never chooses code to run: the model it records is rebuilt only when it is a registry,
torchvision: or timm: name (`recorded_model`), or the `module:` factory that the caller named.
"""

from __future__ import annotations

import hashlib
import os
import reprlib
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ._io import atomic_write, load_weights
from .errors import CheckpointError, InvalidArgumentError, Notice, UnknownModelError
from .models import MAX_CHANNELS, MAX_CLASSES, check_options, create_model, external_source, get_model_entry
from .models.external import head_classes

FORMAT = "dissipate"
VERSION = 3  # 3: the checksum covers every field; 2: options with their defaults, a checksum of the tensors
READABLE = (1, 2, 3)
CHECKED_FROM = 3  # the first version whose every file carries a checksum of all it holds
REQUIRED_KEYS = ("model", "model_kwargs", "state_dict", "num_classes", "in_chans")
IDENTITY_KEYS = ("model", "model_kwargs", "num_classes", "in_chans")  # what the tensors are: in their checksum
MAX_KEYS_SHOWN = 5
HEADER_CHECKS = {  # what each header value must be, before a model is built from it
    "model": lambda v: isinstance(v, str) and 0 < len(v) < 100,
    "model_kwargs": lambda v: _options(v) is not None,
    "num_classes": lambda v: type(v) is int and 1 <= v <= MAX_CLASSES,
    "in_chans": lambda v: type(v) is int and 1 <= v <= MAX_CHANNELS,
}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, dataset: str | None = None,
                    epoch: int | None = None, metrics: Mapping[str, float] | None = None, **extra: Any) -> Path:
    """Write `model` (made by `create_model`) and its metadata to `path` atomically; `extra` adds top-level keys.

    Every value must be a tensor or plain data (str, number, bool, None, list, dict), which `weights_only`
    loading accepts.
    """
    spec = getattr(model, "spec", None)
    reserved = sorted(set(extra) & {"format", "version", "checksum", *REQUIRED_KEYS})
    if reserved:
        raise InvalidArgumentError(f"save_checkpoint sets {', '.join(reserved)} itself; pass other names in extra")
    if spec is None:
        raise InvalidArgumentError("save_checkpoint needs a model made by create_model, which records how to "
                                   "rebuild it")
    checkpoint = {"format": FORMAT, "version": VERSION, "model": spec.name, "model_kwargs": dict(spec.kwargs),
                  "state_dict": model.state_dict(), "num_classes": spec.num_classes, "in_chans": spec.in_chans,
                  "dataset": dataset, "epoch": epoch, "metrics": dict(metrics or {}), **extra}
    checkpoint["checksum"] = checksum(checkpoint)
    return atomic_write(path, lambda file: torch.save(checkpoint, file))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at `path`, checked. A bare state_dict comes back as {"format": None, "state_dict": ...}."""
    path = Path(path)
    content = load_weights(path, "checkpoint file")
    if isinstance(content, dict) and content.get("format") == FORMAT:
        if content.get("version") not in READABLE:
            raise CheckpointError(f"{path} is a dissipate checkpoint of version {content.get('version')!r}; "
                                  f"this dissipate reads versions {', '.join(map(str, READABLE))}")
        missing = [key for key in REQUIRED_KEYS if key not in content]
        if missing:
            raise CheckpointError(f"{path} is a damaged dissipate checkpoint: it lacks {', '.join(missing)}")
        wrong = [f"{key} {reprlib.repr(content[key])}" for key, valid in HEADER_CHECKS.items()
                 if not valid(content[key])]  # reprlib: a hostile value may nest deeper than repr can go
        if wrong or not _is_state_dict(content["state_dict"]):
            what = ", ".join(wrong) if wrong else "a state_dict that is not a dict of named tensors"
            raise CheckpointError(f"{path} is a damaged dissipate checkpoint: it has {what[:200]}")
        _check_sum(content, path)
        return content
    if _is_state_dict(content):
        return {"format": None, "state_dict": content}
    raise CheckpointError(f"{path} is neither a dissipate checkpoint nor a state_dict "
                          f"(it holds a {type(content).__name__})")


def checksum(content: dict) -> str:
    """SHA-256 over everything a checkpoint holds but its checksum: each key and value in order, every value tagged
    with its type (so 1, 1.0, True and "1" differ), each tensor with its dtype, shape, layout, device and bytes."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in content.items() if key != "checksum"})
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(f"T{value.dtype}|{tuple(value.shape)}|{value.layout}|{value.device.type}|".encode())
        digest.update(_tensor_bytes(value))
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        digest.update(f"S{len(value)}|{value}".encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        digest.update(f"F{value.hex()}|".encode())
    else:  # None, bool, int, and what else weights_only reads back (a dtype, a torch.Size)
        digest.update(f"{type(value).__name__}|{value!r}|".encode())


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's data as bytes; none for sparse and meta tensors (no model of ours holds them, and
    `load_state_dict` refuses them)."""
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        return b""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _legacy_checksum(content: dict) -> str:
    """Version 2's checksum: SHA-256 over the header that says what the tensors are (model, options, classes,
    channels) and the tensors, each with its path, dtype and shape, in path order; nothing else."""
    digest = hashlib.sha256(repr([content.get(key) for key in IDENTITY_KEYS]).encode())
    for path, tensor in sorted(_tensors(content, ""), key=lambda item: item[0]):
        digest.update(f"{path}|{tensor.dtype}|{tuple(tensor.shape)}|{tensor.layout}|{tensor.device.type}|".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _check_sum(content: dict, path: Path) -> None:
    """Refuse a checkpoint whose checksum does not match what it holds, or that lacks the one its version records;
    a notice for a file whose version recorded less (none, or version 2's of the tensors and model only)."""
    version = content["version"]
    if "checksum" not in content:
        if version >= CHECKED_FROM:
            raise CheckpointError(f"{path} is damaged: it is a version-{version} checkpoint, which records a "
                                  "checksum, and it has none")
        warnings.warn(f"{path} has no checksum (written before dissipate recorded one), so a damaged byte in it goes "
                      "unnoticed", Notice, stacklevel=3)
        return
    try:
        expected = checksum(content) if version >= CHECKED_FROM else _legacy_checksum(content)
    except RecursionError:  # a hostile file can nest its plain data deeper than any checkpoint of ours
        raise CheckpointError(f"{path} is damaged: its data nests deeper than a checkpoint's") from None
    if content["checksum"] != expected:
        what = "what it holds does" if version >= CHECKED_FROM else "its tensors, or the model they are of, do"
        raise CheckpointError(f"{path} is damaged: {what} not match the checksum written with it")
    if version < CHECKED_FROM:
        warnings.warn(f"{path} is a version-{version} checkpoint, whose checksum covers its tensors and model only, "
                      "so a change to its other fields goes unnoticed", Notice, stacklevel=3)


def _tensors(content: Any, path: str):
    if isinstance(content, torch.Tensor):
        yield path, content
    elif isinstance(content, dict):
        for key, value in content.items():
            if not (path == "" and key == "checksum"):
                yield from _tensors(value, f"{path}/{key!r}")
    elif isinstance(content, (list, tuple)):
        for index, value in enumerate(content):
            yield from _tensors(value, f"{path}/{index}")


def recorded_model(checkpoint: dict, source: str) -> str:
    """The model that a dissipate checkpoint records, where a file may choose it: a registry, torchvision: or timm:
    name, each built through its library's own registry. A `module:` factory would be imported and run, so a file
    may not name one: the caller names it (--model), which is the opt-in."""
    name = checkpoint["model"]
    if name.startswith("module:"):
        raise CheckpointError(f"{source} records model {name!r}, and building it would import and run that code; "
                              f"a file never chooses code to run, so if you trust it, name it yourself: --model {name}")
    return name


def _is_state_dict(content: Any) -> bool:
    return (isinstance(content, dict) and len(content) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()))


def load_model(path: str | os.PathLike, name: str | None = None, **model_kwargs: Any) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at `path` and load its weights; returns (model on CPU, checkpoint dict).

    `name` is required for a bare state_dict (built with `model_kwargs`). For a dissipate checkpoint it must match
    the model the checkpoint was saved from; without it the checkpoint's own is built, unless that is a `module:`
    factory, which only a caller who names it runs (`recorded_model`).
    """
    checkpoint = read_checkpoint(path)
    return model_from_checkpoint(checkpoint, name, source=str(path), **model_kwargs), checkpoint


def model_from_checkpoint(checkpoint: dict, name: str | None = None, source: str = "checkpoint",
                          **model_kwargs: Any) -> nn.Module:
    """The model a checkpoint dict (from `read_checkpoint`) holds, with its weights; see `load_model`."""
    if checkpoint["format"] is None:
        if name is None:
            raise CheckpointError(f"{source} holds a bare state_dict; name the model it belongs to (--model)")
        if external_source(name):  # another library's model: the weights decide its head, not the data
            model_kwargs = {**model_kwargs, "num_classes": head_classes(checkpoint["state_dict"], name)}
        model = create_model(name, **model_kwargs)
    else:
        if name is None:
            name = recorded_model(checkpoint, source)
        if name != checkpoint["model"]:
            raise CheckpointError(f"{source} is a checkpoint of {checkpoint['model']!r}, not of {name!r}")
        try:
            model = create_model(checkpoint["model"], num_classes=checkpoint["num_classes"],
                                 in_chans=checkpoint["in_chans"], **saved_options(checkpoint))
        except InvalidArgumentError as error:  # a name or options that this dissipate does not build
            raise CheckpointError(f"{source} cannot be rebuilt: {error}") from None
    load_state_dict(model, checkpoint["state_dict"], source=source)
    return model


def saved_options(checkpoint: dict) -> dict[str, Any]:
    """The options that rebuild a checkpoint's model as it was saved: its model_kwargs, and for a version-1 checkpoint
    of a registered model the defaults of that day where it recorded none."""
    options = checkpoint["model_kwargs"]
    if checkpoint["version"] == 1 and not external_source(checkpoint["model"]):
        try:
            options = {**get_model_entry(checkpoint["model"]).first_defaults, **options}
        except UnknownModelError:  # create_model says so, with suggestions
            pass
    return options


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state_dict") -> None:
    """Strict `model.load_state_dict`, with one error that names the missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshapen = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}" for key, value in expected.items()
                 if key in state_dict and state_dict[key].shape != value.shape]
    mistyped = [f"{key} {state_dict[key].dtype} vs {value.dtype}" for key, value in expected.items()
                if key in state_dict and _kind(state_dict[key]) != _kind(value)]
    given = {key: state_dict[key] for key in expected if key in state_dict}
    unusual = [key for key, t in given.items() if t.layout != torch.strided or t.device.type == "meta"]
    plain = {key: t for key, t in given.items() if key not in unusual and t.is_floating_point()}
    non_finite = non_finite_keys(plain)
    negative = [key for key, t in plain.items() if key.endswith("running_var") and (t < 0).any()]
    problems = [f"{label} {_first(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("shape mismatches (checkpoint vs model)", misshapen),
                 ("dtype mismatches (checkpoint vs model)", mistyped), ("sparse or meta tensors", unusual),
                 ("non-finite values in", non_finite), ("negative variances in", negative)) if keys]
    if problems:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise CheckpointError(f"{source} does not fit model {name!r}: {'; '.join(problems)}")
    model.load_state_dict(state_dict)


def non_finite_keys(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The keys of the floating-point tensors (dense, with data) that hold a NaN or an infinity."""
    return [key for key, t in tensors.items() if t.is_floating_point() and t.layout == torch.strided
            and t.device.type != "meta" and not torch.isfinite(t).all()]


def _options(value: Any) -> dict | None:
    try:
        return check_options(value, "model_kwargs")
    except InvalidArgumentError:
        return None


def _kind(tensor: torch.Tensor) -> str:
    """complex, floating or integer: a load between kinds would cast silently (and drop imaginary parts)."""
    return "complex" if tensor.is_complex() else "floating" if tensor.is_floating_point() else "integer"


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > MAX_KEYS_SHOWN else shown
