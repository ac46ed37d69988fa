"""A preset's training runs, several at once (`dissipate figures --jobs`): several per GPU, spread over the visible
GPUs, or a few CPU processes; or one cluster job each (`--launcher slurm`, through submitit).

`train_all` trains the runs that are not finished in spawned worker processes (CUDA cannot be forked), each into its
directory of the cache, which `train` locks while it writes. One run failing does not stop the others. The analyses
then find every run in the cache, as if they had trained them one after another. `submit_all` does the same with
one submitit job per run, on Slurm (or, for trying it out and for the tests, submitit's local executor), all
writing into the one cache directory, which the cluster's nodes must share.
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
    """One run in a worker process (with `threads` CPU threads; 0: torch's own count): ("trained" | "diverged" |
    "failed", what to say)."""
    if threads:
        torch.set_num_threads(threads)
    try:
        note = train_run(config, run)
    except Exception as error:  # noqa: BLE001  (whatever stops this run is reported; the others go on)
        return "failed", (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return ("diverged", note) if note else ("trained", "")


def train_all(ctx: Context, runs: list[tuple[Variant, str | None]], jobs: int | None) -> list[Outcome]:
    """Train `runs` (variant, dataset or None for the preset's) with up to `jobs` at once (None: auto, one per CPU
    machine, and on CUDA as many per GPU as the first run's peak memory allows); one Outcome per distinct run."""
    planned = _planned(ctx, runs)
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


LAUNCHERS = ("processes", "slurm", "local")  # worker processes here; submitit on Slurm; submitit's local executor


def submit_all(ctx: Context, runs: list[tuple[Variant, str | None]], cluster: str = "slurm",
               options: dict | None = None) -> list[Outcome]:
    """Train `runs` as one submitit job each on `cluster` ("slurm", or "local": submitit's local executor), with
    the executor's `options` (submitit's `update_parameters`: timeout_min, slurm_partition, gpus_per_node, ...), and
    wait for them all; one Outcome per distinct run. Job files and logs go to cache/PRESET/submitit/. submitit passes
    each job's function and result between processes as pickles in that folder: files this command writes and reads
    itself, never a downloaded one."""
    try:
        import submitit
    except ImportError:
        raise InvalidArgumentError("--launcher slurm needs submitit: pip install 'dissipate[slurm]'") from None
    planned = _planned(ctx, runs)
    outcomes = [Outcome(label, "cached") for run, (label, config) in planned.items() if finished(run, config)]
    pending = [(run, label, config) for run, (label, config) in planned.items() if not finished(run, config)]
    if not pending:
        return outcomes
    executor = submitit.AutoExecutor(folder=ctx.cache / ctx.preset / "submitit", cluster=cluster)
    executor.update_parameters(name="dissipate", **(options or {}))
    with executor.batch():  # one job array
        jobs = [(label, executor.submit(_train_in_worker, config, run, 0)) for run, label, config in pending]
    ctx.say(f"submitted {len(jobs)} runs to {cluster}; waiting for them (logs in {executor.folder})")
    for label, job in jobs:
        try:
            status, message = job.result()
        except Exception as error:  # noqa: BLE001  (a job that the cluster or its node stopped)
            status, message = "failed", (str(error).strip().splitlines() or [type(error).__name__])[-1][:300]
        outcomes.append(Outcome(label, status, message))
        ctx.say(f"{label}: {status}" + (f": {message}" if message else ""))
    return outcomes


def parse_options(items: list[str]) -> dict:
    """`--slurm KEY=VALUE` items as submitit parameters, numbers as numbers."""
    options: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"--slurm expects KEY=VALUE (e.g. slurm_partition=gpu), got {item!r}")
        options[key.strip()] = int(text) if text.isdigit() else text
    return options


def _planned(ctx: Context, runs: list[tuple[Variant, str | None]]) -> dict[Path, tuple[str, TrainConfig]]:
    """{run directory: (label, config)} for each distinct run."""
    planned: dict[Path, tuple[str, TrainConfig]] = {}
    for variant, data in runs:
        config = ctx.train_config(variant, data)
        planned.setdefault(ctx.run_dir(config), (variant.run_label, config))
    return planned


def _in_process(ctx: Context, run: Path, label: str, config: TrainConfig) -> Outcome:
    ctx.say(f"training {label}: {ctx.recipe.describe(config.data, config.optimizer)}")
    status, message = _train_in_worker(config, run, torch.get_num_threads())
    if status != "trained":
        ctx.say(f"{label}: {status}: {message}")
    return Outcome(label, status, message)
