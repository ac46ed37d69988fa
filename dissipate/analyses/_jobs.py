"""A preset's training runs, several at once (`dissipate figures --jobs`): several per GPU, spread over the visible
GPUs, or a few CPU processes.

`train_all` trains the runs that are not finished in spawned worker processes (CUDA cannot be forked), each into its
directory of the cache, which `train` locks while it writes. One run failing does not stop the others. The analyses
then find every run in the cache, as if they had trained them one after another.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..errors import InvalidArgumentError
from ..probe import resolve_device
from ..train import TrainConfig
from ._common import Context, Variant, finished, train_run

MAX_PER_GPU = 8  # runs sharing one GPU: beyond this, launches contend more than memory allows
MEMORY_SHARE = 0.8  # of a GPU's free memory that concurrent runs may fill, by the first run's peak


@dataclass(frozen=True)
class Outcome:
    """What became of one run: "cached" (finished before), "trained", "diverged" or "failed" (with why)."""

    label: str
    status: str
    message: str = ""


def parse_jobs(value: str) -> int | None:
    """`--jobs`: a positive count, or "auto" (None)."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidArgumentError(f"--jobs takes a positive number of runs or 'auto', got {value!r}")
    return int(value)


def runs_per_gpu(peak_mb: float, free_mb: float) -> int:
    """How many runs of `peak_mb` fit in MEMORY_SHARE of `free_mb`: at least one, at most MAX_PER_GPU."""
    return max(1, min(MAX_PER_GPU, int(MEMORY_SHARE * free_mb // max(peak_mb, 1.0))))


def _train_in_worker(config: TrainConfig, run: Path, threads: int) -> tuple[str, str]:
    """One run in a worker process: ("trained" | "diverged" | "failed", what to say)."""
    torch.set_num_threads(threads)
    try:
        note = train_run(config, run)
    except Exception as error:  # noqa: BLE001  (whatever stops this run is reported; the others go on)
        return "failed", (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return ("diverged", note) if note else ("trained", "")


def train_all(ctx: Context, runs: list[tuple[Variant, str | None]], jobs: int | None) -> list[Outcome]:
    """Train `runs` (variant, dataset or None for the preset's) with up to `jobs` at once (None: auto, one per CPU
    machine, and on CUDA as many per GPU as the first run's peak memory allows); one Outcome per distinct run."""
    planned: dict[Path, tuple[str, TrainConfig]] = {}
    for variant, data in runs:
        config = ctx.train_config(variant, data)
        planned.setdefault(ctx.run_dir(config), (variant.label, config))
    outcomes = [Outcome(label, "cached") for run, (label, config) in planned.items() if finished(run, config)]
    pending = [(run, label, config) for run, (label, config) in planned.items() if not finished(run, config)]
    device = resolve_device(ctx.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if jobs is None and gpus and pending:  # measure one run's peak, then fill each GPU
        run, label, config = pending.pop(0)
        outcomes.append(_in_process(ctx, run, label, config))
        peak = pd.read_csv(run / "log.csv")["peak_mem_mb"].max() if (run / "log.csv").is_file() else float("nan")
        free = min(torch.cuda.mem_get_info(i)[0] for i in range(gpus)) / 2 ** 20
        jobs = gpus * (runs_per_gpu(peak, free) if peak == peak else 1)
        ctx.say(f"--jobs auto: {label} peaked at {peak:.0f} MB; {jobs} runs at once on {gpus} GPU(s)")
    jobs = min(jobs or 1, max(len(pending), 1))
    if jobs == 1:
        return outcomes + [_in_process(ctx, run, label, config) for run, label, config in pending]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx.say(f"training {len(pending)} runs, {jobs} at once")
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for i, (run, label, config) in enumerate(pending):
            if gpus:  # round robin over the visible GPUs
                config = dataclasses.replace(config, device=f"cuda:{i % gpus}")
            futures[pool.submit(_train_in_worker, config, run, threads)] = label
        for future in as_completed(futures):
            label = futures[future]
            try:
                status, message = future.result()
            except Exception as error:  # noqa: BLE001  (a worker that died: killed, out of host memory)
                status, message = "failed", f"its worker process died ({type(error).__name__})"
            outcomes.append(Outcome(label, status, message))
            ctx.say(f"{label}: {status}" + (f": {message}" if message else ""))
    return outcomes


def _in_process(ctx: Context, run: Path, label: str, config: TrainConfig) -> Outcome:
    ctx.say(f"training {label}: {ctx.recipe.describe(config.data, config.optimizer)}")
    status, message = _train_in_worker(config, run, torch.get_num_threads())
    if status != "trained":
        ctx.say(f"{label}: {status}: {message}")
    return Outcome(label, status, message)
