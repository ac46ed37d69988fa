"""Small helpers shared by the tests."""

import torch

from dissipate.checkpoint import checksum
from dissipate.cli import main

ACTIVATION_TYPES = (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU)


class Exploit:
    """An object whose unpickling creates the file `victim`: what a hostile weight file holds."""

    def __init__(self, victim):
        self.victim = victim

    def __reduce__(self):
        return (open, (str(self.victim), "w"))


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Give every BN non-trivial running statistics and affine parameters, so eval-mode comparisons mean something."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)


def activation_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) for every activation module, a shared one listed once per place it is registered."""
    return [(n, m) for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, ACTIVATION_TYPES)]


def count_activation_calls(model: torch.nn.Module, x: torch.Tensor) -> dict[int, int]:
    """How many times each activation module (by id) runs in one forward pass of `x`."""
    calls = {id(m): 0 for _, m in activation_modules(model)}
    handles = [m.register_forward_hook(lambda mod, inp, out: calls.__setitem__(id(mod), calls[id(mod)] + 1))
               for m in {id(m): m for _, m in activation_modules(model)}.values()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `dissipate ARGS` in this process; (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def save_resigned(checkpoint: dict, path) -> None:
    """Save a changed checkpoint with a checksum that fits its new tensors: a file rewritten by someone who knows the
    format, so that what a test changed reaches the checks behind the checksum's."""
    torch.save({**checkpoint, "checksum": checksum(checkpoint)}, path)
