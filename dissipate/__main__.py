"""`python -m dissipate` (and `torchrun -m dissipate`) runs the command line."""

from .cli import main

main()
