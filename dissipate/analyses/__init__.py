"""The analyses behind `dissipate figures` (docs/design.md, section 6): one module per figure or table.

Each module defines NAME, DESCRIPTION, PRESETS (its settings for "smoke", "cpu" and "paper"), `compute(ctx)`, which
returns its tidy result frame (one row per model, site or epoch), and `draw(frame)`, which returns its figure
(`tables` and `claims` have `render` instead). `runs(preset, seeds)`, `probes(preset, seeds)` and `plan(preset)` say
what it will compute, for the plan; `headline(frame)` gives its main numbers in a line or two. An analysis with
SEEDED true runs its decisive comparisons at `seeds` seeds (--seeds), and its result depends on that count.

    from dissipate.analyses import run_analyses
    reports = run_analyses(["training_curves"], preset="cpu", out="figures-out")
"""

from __future__ import annotations

import difflib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

from ..errors import InvalidArgumentError, RunsFailed
from ..plots import save_figure
from ..probe import Progress, no_progress
from . import (accuracy_params, claims, dissipation_curves, dissipation_training, rank_depth, remedies,
               signal_propagation, tables, theory_check, throughput, training_curves, transformer_curves)
from ._common import (CONCURRENT_GAIN, PRESETS, RECIPES, REFERENCE_RUN, SEEDS, Context, Run, Variant, check_seeds,
                      gpu_seconds)

GPU_PRESETS = ("gpu", "paper")  # the presets for a GPU, whose plans estimate its time
from ._jobs import LAUNCHERS, parse_jobs, parse_options, submit_all, train_all

ANALYSES: dict[str, ModuleType] = {module.NAME: module for module in (
    dissipation_curves, theory_check, rank_depth, signal_propagation, training_curves, dissipation_training,
    transformer_curves, accuracy_params, throughput, remedies, tables, claims)}
__all__ = ["ANALYSES", "LAUNCHERS", "PRESETS", "RECIPES", "SEEDS", "Context", "Report", "Run", "Variant",
           "describe_plan", "outputs", "parse_jobs", "parse_options", "planned_runs", "run_analyses", "select",
           "with_inputs"]


def _refuse(kind: str, name: str, choices) -> None:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.4)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InvalidArgumentError(f"unknown {kind} {name!r}{hint}; choose from {', '.join(choices)}")


def select(names: Iterable[str] | None = None) -> list[ModuleType]:
    """The analyses named (all when none is), in the order of ANALYSES; an unknown name raises with suggestions."""
    wanted = [part.strip().replace("-", "_") for name in names or () for part in name.split(",") if part.strip()]
    for name in wanted:
        if name not in ANALYSES:
            _refuse("analysis", name, ANALYSES)
    return [module for name, module in ANALYSES.items() if not wanted or name in wanted]


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        _refuse("preset", preset, PRESETS)


def outputs(module: ModuleType, out: str | os.PathLike, formats: Iterable[str] = ("png",)) -> list[Path]:
    """The files an analysis writes into `out`."""
    out = Path(out)
    extra = [out / f"{module.NAME}.md"] if hasattr(module, "render") else [out / f"{module.NAME}.{f}" for f in formats]
    return [out / f"{module.NAME}.csv", *extra]


@dataclass
class Report:
    """What one analysis did: the files it wrote, whether its results came from the cache, and its main numbers."""

    name: str
    paths: list[Path]
    cached: bool
    seconds: float
    headline: list[str]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_analyses(names: Iterable[str] | None = None, preset: str = "cpu", out: str | os.PathLike = "figures-out",
                 force: bool = False, formats: tuple[str, ...] = ("png",), device: str = "auto",
                 data_dir: str | None = None, progress: Progress | None = None,
                 say: Callable[[str], None] = _stderr, jobs: int | None = 1, launcher: str = "processes",
                 launcher_options: dict | None = None, seeds: int | None = None) -> list[Report]:
    """Compute (or read from the cache in `out`) and render each analysis named; one Report each. With `jobs` other
    than 1 (None: auto), the training runs of the plan are trained first, that many at once (`_jobs.train_all`);
    with `launcher` "slurm" (or "local", submitit's local executor), first as one submitit job each
    (`_jobs.submit_all`, with `launcher_options`). Runs that fail are reported together (RunsFailed) after the
    others have finished. `seeds`: how many seeds each decisive comparison is run with (None: the preset's, SEEDS)."""
    _check_preset(preset)
    if launcher not in LAUNCHERS:
        _refuse("launcher", launcher, LAUNCHERS)
    modules = select(names)
    ctx = Context(preset, Path(out), force=force, device=device, data_dir=data_dir, say=say, seeds=seeds)
    if jobs != 1 or launcher != "processes":
        if force:
            raise InvalidArgumentError("--force retrains as the analyses go; use it without --jobs or --launcher")
        runs = planned_runs(modules, preset, ctx.seeds)
        outcomes = (train_all(ctx, runs, jobs) if launcher == "processes"
                    else submit_all(ctx, runs, launcher, launcher_options))
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise RunsFailed(f"{len(failed)} training run(s) failed: "
                             + "; ".join(f"{o.label} ({o.message})" for o in failed)
                             + "; the others are cached, so running again redoes only these")
    reports = []
    with (progress or no_progress)(modules, len(modules), f"figures ({preset})") as items:
        for module in items:
            started = time.perf_counter()
            frame, cached = ctx.result(module)
            if hasattr(module, "render"):
                module.render(frame, ctx.out, formats)
            else:
                save_figure(module.draw(frame), ctx.out / module.NAME, formats)
            headline = module.headline(frame) if hasattr(module, "headline") and len(frame) else []
            reports.append(Report(module.NAME, outputs(module, ctx.out, formats), cached,
                                  time.perf_counter() - started, headline))
    return reports


def with_inputs(modules: Iterable[ModuleType]) -> list[ModuleType]:
    """`modules` and the analyses whose results they read (INPUTS, and theirs), each once, inputs first."""
    found: dict[str, ModuleType] = {}

    def visit(module: ModuleType) -> None:
        for needed in getattr(module, "INPUTS", ()):
            visit(needed)
        found.setdefault(module.NAME, module)

    for module in modules:
        visit(module)
    return list(found.values())


def planned_runs(modules: list[ModuleType], preset: str, seeds: int | None = None) -> list[tuple[Variant, str]]:
    """The training runs that `modules` need at `preset` with `seeds` (None: the preset's), each once, those of the
    analyses they read included: (variant, dataset)."""
    data, seeds = RECIPES[preset].data, check_seeds(seeds, preset)
    runs: dict[tuple[str, str], Variant] = {}
    for module in with_inputs(modules):
        for variant, state in getattr(module, "probes", lambda *_: [])(preset, seeds):
            if state == "trained":
                runs[(variant.run_label, data)] = variant
        for variant, dataset in getattr(module, "runs", lambda *_: [])(preset, seeds):
            runs[(variant.run_label, dataset or data)] = variant
    return [(variant, dataset) for (_, dataset), variant in runs.items()]


def describe_plan(names: Iterable[str] | None = None, preset: str = "paper", out: str | os.PathLike = "figures-out",
                  formats: tuple[str, ...] = ("png",), seeds: int | None = None) -> list[str]:
    """The plan of a preset, without running it: the training runs (each once, however many analyses share it), the
    probes, the other measurements, and the files each analysis writes."""
    _check_preset(preset)
    modules, recipe, seeds = select(names), RECIPES[preset], check_seeds(seeds, preset)
    runs = {(variant.run_label, data): variant for variant, data in planned_runs(modules, preset, seeds)}
    probes: dict[str, list[str]] = {}
    for module in with_inputs(modules):
        for variant, state in getattr(module, "probes", lambda *_: [])(preset, seeds):
            where = (f"at initialisation on {recipe.init_data} ({recipe.init_image_size} px)" if state == "init"
                     else f"trained, on the test images of {recipe.data}")
            probes.setdefault(where, [])
            if variant.run_label not in probes[where]:
                probes[where].append(variant.run_label)
    lines = [f"preset {preset}: {len(modules)} analyses; the comparisons that decide a claim at {seeds} seed(s)"]
    lines.append(f"training runs ({len(runs)}, {len(runs) * recipe.epochs} epochs in all), each "
                 f"{recipe.describe('on its dataset')}:")
    if preset in GPU_PRESETS and runs:
        alone = gpu_seconds([(variant, data) for (_, data), variant in runs.items()], recipe)
        lines.append(f"estimated GPU time for the training: {alone / 60:.0f} min one run at a time, "
                     f"{alone / 60 / CONCURRENT_GAIN:.0f} min with --jobs auto on one H200-class GPU (resnet20's "
                     f"measured {REFERENCE_RUN[3]:,.0f} images/s, scaled by each net's FLOPs, and "
                     f"{CONCURRENT_GAIN}x for runs at once; probes and figures not counted)")
    datasets = dict.fromkeys(data for _, data in runs)
    lines += [f"  {data}: " + ", ".join(label for label, d in runs if d == data) for data in datasets]
    lines.append(f"probes ({sum(map(len, probes.values()))}, {recipe.probe_images} images each, metrics "
                 f"{', '.join(recipe.probe_metrics)}):")
    lines += [f"  {where}: {', '.join(labels)}" for where, labels in probes.items()]
    other = [line for module in modules for line in getattr(module, "plan", lambda _: [])(preset)]
    if other:
        lines.append("measurements:")
        lines += [f"  {line}" for line in other]
    lines.append(f"outputs in {out}/ (the cache of runs and probes in {out}/cache/):")
    lines += [f"  {module.NAME}: {', '.join(p.name for p in outputs(module, out, formats))}: {module.DESCRIPTION}"
              for module in modules]
    return lines

