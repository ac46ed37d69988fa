"""How long the CLI takes to start: `dissipate --help`, `dissipate probe --help` and `dissipate models`, against a bare
`python -c "import typer"`, each the minimum of --repeats runs as a fresh process (what a user waits for).

    python benchmarks/bench_cli.py                        # this checkout
    python benchmarks/bench_cli.py --source /tmp/old      # another checkout's package, for a before/after in one run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

COMMANDS = {"import typer": ["-c", "import typer"], "dissipate --help": ["-m", "dissipate", "--help"],
            "dissipate probe --help": ["-m", "dissipate", "probe", "--help"],
            "dissipate models": ["-m", "dissipate", "models"]}


def seconds(args: list[str], env: dict, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True,
                       cwd=tempfile.gettempdir())  # not a checkout, whose package `python -m` would import
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", default=[],
                        help="a checkout whose dissipate package to time (repeatable; default: the installed one)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sources = args.source or [None]
    print("| command | " + " | ".join(s or "installed" for s in sources) + " |")
    print("|---|" + "---|" * len(sources))
    for name, command in COMMANDS.items():
        cells = []
        for source in sources:
            env = {**os.environ, **({"PYTHONPATH": source} if source else {})}
            cells.append(f"{seconds(command, env, args.repeats):.2f} s")
        print(f"| `{name}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
