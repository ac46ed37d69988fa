"""Record every activation site of a model with forward hooks, on models nobody here wrote.

A site is an activation module's path in the model (`layer1.0.act2`), with `#k` added for the k-th extra call of a
module used more than once in one forward pass (torchvision's resnet18 reuses one in-place ReLU per block: `relu`,
then `relu#1`). Each call hands the site's pre-activation (the module's input) and post-activation (its output) to a
callback, which keeps whatever it needs. In-place activations are switched to out-of-place while recording, so the
pre-activation is not overwritten, and switched back afterwards.

Blocks may declare further sites in `site_kinds` (a transformer block's attention and block outputs, identity
modules placed there): those are recorded too, with the module's input as the pre- and its output as the
post-activation, and marked as not being activations (`Site.activation`).

Functional activations (`F.relu(x)`, `torch.relu(x)`) are not modules, and no hook can see them; a model that has
only those is refused with that reason rather than recorded as an empty table.

Blocks may also declare what a site's pre-activation is made of (`site_components`): `record_components` hands
each part (the branch output, the shortcut, the coder's input, a linear layer's input) to a callback, for Theorem
3.2's predictions. The parts add up, or, where the block also declares `site_channels`, they are concatenated along
the channels (a PNNH transformer's [W1 x; E x; -E x]).
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .errors import InvalidArgumentError

# torch's element-wise activation modules, and the class names other libraries (timm) give theirs
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Threshold,
)
ACTIVATION_NAMES = frozenset(
    {"relu", "relu6", "leakyrelu", "prelu", "elu", "selu", "celu", "gelu", "gelutanh", "quickgelu", "silu", "swish",
     "mish", "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softplus", "starrelu",
     "transformedactivation", "srelu", "crelu", "ncrelu"})  # the last four: the remedies' (models/remedies.py)

SiteCallback = Callable[["Site", torch.Tensor, torch.Tensor], None]
ComponentCallback = Callable[["Component", torch.Tensor], None]


def is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES) or type(module).__name__.lower() in ACTIVATION_NAMES


@dataclass(frozen=True)
class Site:
    """One activation site: where it is, its place in the forward pass, and what its pre-activation is made of."""

    name: str  # module path, with `#k` for the k-th repeated call
    depth: int  # 1-based order of first call in the forward pass
    kind: str  # plain / residual / pnnh / unknown
    module_type: str
    activation: bool = True  # an activation module (or one named by `include`), not a declared output


def site_kind(model: nn.Module, path: str) -> str:
    """The kind a module declares for the site at `path` (`relu#1` for a module's second call): the nearest
    ancestor with a `site_kinds` dict ({relative path: kind}) naming it; "unknown" for models that declare nothing."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        ancestor = model.get_submodule(".".join(parts[:cut]))
        kinds = getattr(ancestor, "site_kinds", None)
        if isinstance(kinds, dict) and ".".join(parts[cut:]) in kinds:
            return kinds[".".join(parts[cut:])]
    return "unknown"


def declared_sites(model: nn.Module) -> set[str]:
    """Paths of the modules that blocks name in their `site_kinds` without being activations (a transformer
    block's attention and block outputs)."""
    declared = set()
    for path, block in model.named_modules():
        for relative in getattr(block, "site_kinds", None) or ():
            name = f"{path}.{relative}" if path else relative
            module = model.get_submodule(name.partition("#")[0])
            if not is_activation(module):
                declared.add(name)
    return declared


def find_sites(model: nn.Module, include: Sequence[str] = ()) -> dict[str, nn.Module]:
    """{path: module} for every activation module, every declared site (`declared_sites`), and any module whose path
    matches a glob in `include` (recorded as if it were an activation: its input is the pre-, its output the
    post-activation)."""
    declared = declared_sites(model)
    found = {name: module for name, module in model.named_modules()
             if name and (is_activation(module) or name in declared
                          or any(fnmatch.fnmatchcase(name, p) for p in include))}
    if not found:
        hint = f" or matches {', '.join(include)}" if include else ""
        raise InvalidArgumentError(
            f"{type(model).__name__} has no activation module{hint} to hook: if its forward calls functional "
            "activations (F.relu, torch.relu, ...), no forward hook can see them; replace those calls with modules "
            "(nn.ReLU()) or name modules to record with include=[...]")
    return found


class Recording:
    """The sites seen so far, in forward order (filled as the model runs)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.declared = declared_sites(model)
        self.sites: dict[str, Site] = {}
        self.calls: dict[str, int] = {}  # per forward pass: how many times each module has run

    def site(self, path: str, module: nn.Module) -> Site:
        count = self.calls.get(path, 0)
        self.calls[path] = count + 1
        name = path if count == 0 else f"{path}#{count}"
        if name not in self.sites:
            self.sites[name] = Site(name, len(self.sites) + 1, site_kind(self.model, name), type(module).__name__,
                                    activation=path not in self.declared)
        return self.sites[name]


@contextlib.contextmanager
def record(model: nn.Module, callback: SiteCallback, include: Sequence[str] = ()) -> Iterator[Recording]:
    """Within the block, every forward pass of `model` calls `callback(site, pre, post)` at each activation site.

    Raises InvalidArgumentError, before any forward pass, when the model has nothing to hook."""
    sites = find_sites(model, include)
    recording = Recording(model)
    inplace = [path for path, module in sites.items() if getattr(module, "inplace", False) is True]

    def start_pass(module: nn.Module, args: tuple) -> None:
        recording.calls.clear()

    def make_hook(path: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                callback(recording.site(path, module), args[0], output)
        return hook

    handles = [model.register_forward_pre_hook(start_pass)]
    try:
        for path in inplace:
            sites[path].inplace = False
        handles += [module.register_forward_hook(make_hook(path)) for path, module in sites.items()]
        yield recording
    finally:
        for handle in handles:
            handle.remove()
        for path in inplace:
            sites[path].inplace = True


INPUT_ROLES = ("coder", "weight", "pair")  # parts measured at their source's input: what E or W is applied to


@dataclass(frozen=True)
class Component:
    """One part of a site's pre-activation, as its block declares it in a `site_components` dict
    ({activation path: {role: source}}): the branch output, the identity (shortcut), the coder's input (E^T E x),
    a linear layer's input ("weight": z = W x) or the input of a +/- code pair ("pair": [E x; -E x]). A key
    "role:label" declares a further part of the same role (RepVGG's 1x1 branch beside its 3x3 one)."""

    site: str  # the activation site whose pre-activation it is part of
    role: str  # "branch", "identity", "coder", "weight" or "pair"
    source: str  # path of the module whose output (or input, for INPUT_ROLES) it is, or of the declaring block (for
    # a source of "", its input)
    takes_input: bool = False  # the source's input rather than its output
    coder_ratio: float = 1.0  # k / C of a coder component: the declaring block's `coder_ratio`
    channels: int = 0  # its channels, where the block's `site_channels` says the parts are concatenated (0: summed)


def find_components(model: nn.Module) -> list[Component]:
    """Every component that the model's blocks declare, with site and source as paths in `model`."""
    found = []
    for path, block in model.named_modules():
        declared = getattr(block, "site_components", None)
        if not isinstance(declared, dict):
            continue
        prefix = f"{path}." if path else ""
        channels = getattr(block, "site_channels", {})
        for act, parts in declared.items():
            for key, source in parts.items():  # a role, or "role:label" for a second part of one role
                role = key.partition(":")[0]
                found.append(Component(f"{prefix}{act}", role, f"{prefix}{source}" if source else path,
                                       takes_input=not source or role in INPUT_ROLES,
                                       coder_ratio=float(getattr(block, "coder_ratio", 1.0)),
                                       channels=channels.get(act, {}).get(role, 0)))
    return found


@contextlib.contextmanager
def record_components(model: nn.Module, callback: ComponentCallback) -> Iterator[list[Component]]:
    """Within the block, every forward pass of `model` calls `callback(component, tensor)` for each declared
    component: the source module's output, or its input (`takes_input`)."""
    components = find_components(model)

    def make_hook(component: Component) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | None = None) -> None:
            value = (args[0] if args else None) if component.takes_input else output
            if isinstance(value, torch.Tensor):
                callback(component, value)
        return hook

    handles = []
    try:
        for component in components:
            module = model.get_submodule(component.source)
            register = module.register_forward_pre_hook if component.takes_input else module.register_forward_hook
            handles.append(register(make_hook(component)))
        yield components
    finally:
        for handle in handles:
            handle.remove()
