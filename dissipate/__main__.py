"""`python -m dissipate` (and `torchrun -m dissipate`) runs the command line; so does the `dissipate` script, through
`run`."""

import sys


def run() -> None:
    """Import the command line and run it. The imports take seconds (torch), before `main` handles Ctrl-C: one
    pressed then ends as one pressed later does, with a line and exit 130, not a traceback. (This package's
    __init__ imports nothing heavy, so that nothing runs before this.)"""
    try:
        from .cli import main
        main()
    except KeyboardInterrupt:  # what Python's own SIGINT handler raises, until `main` installs its own
        print("interrupted; files already written are complete (a training run resumes with --resume)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
