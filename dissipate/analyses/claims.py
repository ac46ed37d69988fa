"""The paper's claims, each with a verdict (docs/design.md, section 6): claims.csv and claims.md.

One row per claim of the paper's abstract and theorems, and per claim the figures make. Each row compares two
measurements: the same measure on two nets, each at every seed of the preset's decisive comparisons (--seeds). Its
verdict follows one rule (`_stats.verdict`): a difference counts when its 95% interval excludes 0; "on par" means
the interval lies within +/- 1 point; fewer than three seeds decide nothing. The rows say what was measured, at
which scale, so that a verdict at the cpu preset's 5 short epochs is read as that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..bound_check import check_rows, verdicts
from ..models import REMEDY_FAMILIES
from ..theory import cantelli_bound, predict_moments
from . import accuracy_params, throughput
from ._common import Context, Variant, seeded
from ._stats import FAILS, HOLDS, MIN_SEEDS, OPEN, difference_interval, mean_interval, verdict

NAME = "claims"
DESCRIPTION = "each claim of the paper with its evidence (means, 95% intervals, seeds) and a verdict by a stated rule"
COLUMNS = ("preset", "claim", "source", "measure", "compared", "difference", "low", "high", "seeds", "test", "rule",
           "verdict", "evidence", "scale")
INPUTS = (accuracy_params, throughput)  # the trained accuracies and the timed speeds
SEEDED = True
ON_PAR = 1.0  # "on par": the difference of final test accuracies within one point (percent) either way
FASTER = 1.1  # a speed ratio beyond the timing noise: repeated timings of one net on the shared CPU vary by ~10%
RULES = {"greater": "holds when the 95% interval of the difference excludes 0 from above",
         "on par": f"holds when the 95% interval of the difference lies within ±{ON_PAR:g} point",
         "every site": "holds when the bound-check holds at every site, seed by seed",
         "throughput": f"timed once: holds when a PNNH on par with ResNet trains ≥ {FASTER:g}x as fast, does not "
                       f"hold when the fastest trains ≤ 1/{FASTER:g}x, inconclusive within the timing noise"}


@dataclass(frozen=True)
class Settings:
    shallow: int  # the depths that the plain-against-residual claims compare
    deep: int
    deepest: int  # at initialisation only: the deepest net the preset probes
    on_par: Variant  # a PNNH that is not ResNet's function, at ResNet's parameters
    narrowest: Variant  # a PNNH at about half ResNet's parameters
    vit_depth: int | None  # the transformer forms, compared at initialisation
    remedy_depth: int | None  # the remedies, against plain at this depth


PRESETS = {
    "smoke": Settings(20, 32, 32, *accuracy_params.DECISIVE_PNNH, None, 20),
    "cpu": Settings(20, 56, 110, *accuracy_params.DECISIVE_PNNH, 6, 56),
}
PRESETS["gpu"] = PRESETS["paper"] = PRESETS["cpu"]
MEASURES = {"cka": "linear CKA of the last site with the input", "loss": "final train loss (nats)",
            "acc": "final test accuracy (points)"}


def _init_variants(preset: str) -> tuple[Variant, ...]:
    s = PRESETS[preset]
    models = [f"plain{s.shallow}", f"plain{s.deep}", f"plain{s.deepest}", f"resnet{s.deep}"]
    models += [f"{family}vit{s.vit_depth}" for family in ("plain", "")] if s.vit_depth else []
    models += [f"{family}{s.remedy_depth}" for family in REMEDY_FAMILIES] if s.remedy_depth else []
    return tuple(Variant(model) for model in dict.fromkeys(models))


def _trained_variants(preset: str) -> tuple[Variant, ...]:
    s = PRESETS[preset]
    return tuple(Variant(model) for model in dict.fromkeys((f"plain{s.shallow}", f"plain{s.deep}", f"resnet{s.deep}")))


def runs(preset: str, seeds: int = 1) -> list[tuple[Variant, None]]:
    """The remedies' runs, at seed 0 (the remedies analysis trains them too)."""
    depth = PRESETS[preset].remedy_depth
    return [(Variant(f"{family}{depth}"), None) for family in REMEDY_FAMILIES] if depth else []


def probes(preset: str, seeds: int = 1) -> list[tuple[Variant, str]]:
    return ([(v, "init") for v in seeded(_init_variants(preset), seeds)]
            + [(v, "trained") for v in seeded(_trained_variants(preset), seeds)])


def _last_cka(ctx: Context, model: str, state: str) -> list[float]:
    """The last site's CKA with the input, one value per seed (NaN for a run that diverged)."""
    values = []
    for variant in seeded((Variant(model),), ctx.seeds):
        table = ctx.probe_table(variant, state)
        values.append(np.nan if table is None else float(table.loc[table["layer"].idxmax(), "cka_input"]))
    return values


def _describe(values: list[float]) -> str:
    mean, low, high = mean_interval(values)
    interval = f" [{low:.3g}, {high:.3g}]" if np.isfinite(low) else ""
    return f"{mean:.3g}{interval}"


def _row(claim: str, source: str, measure: str, a: tuple[str, list[float]], b: tuple[str, list[float]],
         test: str = "greater", scale: float = 1.0, note: str = "") -> dict:
    """The row of a claim that `a`'s measure exceeds `b`'s (test "greater") or matches it (test "on par"), from each
    side's values (one per seed), in the measure's units (`scale` 100: fractions as points, as ON_PAR is)."""
    (name_a, values_a), (name_b, values_b) = a, b
    values_a, values_b = (np.asarray(values, dtype=float) * scale for values in (values_a, values_b))
    difference, low, high = difference_interval(values_a, values_b)
    counts = [int(np.isfinite(values).sum()) for values in (values_a, values_b)]  # a diverged run's NaN is no seed
    seeds = min(counts)
    diverged = len(values_a) + len(values_b) - sum(counts)
    ruling = verdict(low, high, seeds, test, ON_PAR)
    evidence = (f"{name_a} {_describe(values_a)} against {name_b} {_describe(values_b)}: difference "
                f"{difference:+.3g}" + (f" [{low:+.3g}, {high:+.3g}]" if np.isfinite(low) else " (no interval)")
                + f"; {counts[0]} and {counts[1]} seeds" + (f" ({diverged} diverged, left out)" if diverged else "")
                + (f"; {note}" if note else ""))
    if seeds < MIN_SEEDS:
        evidence += f"; fewer than {MIN_SEEDS} seeds decide nothing"
    return _fact(claim, source, measure, f"{name_a} - {name_b}", difference, test, ruling, evidence, seeds, low, high)


def _fact(claim: str, source: str, measure: str, compared: str, value: float, test: str, ruling: str, evidence: str,
          seeds: float = np.nan, low: float = np.nan, high: float = np.nan) -> dict:
    """One row of the claims table."""
    return {"claim": claim, "source": source, "measure": measure, "compared": compared, "difference": value,
            "low": low, "high": high, "seeds": seeds, "test": test, "rule": RULES[test], "verdict": ruling,
            "evidence": evidence}


def compute(ctx: Context) -> pd.DataFrame:
    s = PRESETS[ctx.preset]
    accuracy, _ = ctx.result(accuracy_params)
    accuracy = accuracy[accuracy["dataset"] == ctx.recipe.data]  # the paper preset trains on two
    speed, _ = ctx.result(throughput)

    def trained(label: str, column: str) -> list[float]:
        """One value per seed; NaN for a seed that diverged."""
        return [float(v) for v in accuracy.loc[accuracy["model"] == label, column]]

    def cka(model: str, state: str) -> tuple[str, list[float]]:
        return model, _last_cka(ctx, model, state)

    plain, deep, resnet = f"plain{s.shallow}", f"plain{s.deep}", f"resnet{s.deep}"
    rows = [
        _row("Plain nets lose the input with depth, at initialisation", "abstract", MEASURES["cka"] + ", at init",
             cka(plain, "init"), cka(f"plain{s.deepest}", "init")),
        _row("Plain nets lose the input with depth, trained", "abstract", MEASURES["cka"] + ", trained",
             cka(plain, "trained"), cka(deep, "trained")),
        _row("A residual connection keeps the input that a plain net loses, at initialisation", "abstract",
             MEASURES["cka"] + ", at init", cka(resnet, "init"), cka(deep, "init")),
        _row("A residual connection keeps the input that a plain net loses, trained", "abstract",
             MEASURES["cka"] + ", trained", cka(resnet, "trained"), cka(deep, "trained")),
        _row("Deep plain nets train worse: a deeper plain net ends at a higher training loss (degradation)",
             "abstract: deep plain nets fail to converge", MEASURES["loss"], (deep, trained(deep, "train_loss")),
             (plain, trained(plain, "train_loss"))),
        _theorem_3_3(ctx, resnet),
        _theorems_hold(ctx, (plain, deep, resnet)),
        *_pnnh_rows(s, accuracy, speed, trained),
    ]
    if s.vit_depth:  # PNNH-ViT at its defaults is the ViT's function: its row would repeat this one
        rows.append(_row("A residual ViT keeps more of the input than a plain ViT, at initialisation",
                         "the transformer forms", MEASURES["cka"] + ", at init", cka(f"vit{s.vit_depth}", "init"),
                         cka(f"plainvit{s.vit_depth}", "init")))
    if s.remedy_depth:
        for family in REMEDY_FAMILIES:
            model = f"{family}{s.remedy_depth}"
            accuracy_note = _remedy_note(_final_accuracy(ctx, model), trained(f"plain{s.remedy_depth}", "test_acc"))
            rows.append(_row(f"{model} keeps more of the input than plain{s.remedy_depth}, at initialisation",
                             "the remedies", MEASURES["cka"] + ", at init", cka(model, "init"),
                             cka(f"plain{s.remedy_depth}", "init"), note=accuracy_note))
    scale = f"preset {ctx.preset}: {ctx.recipe.describe()}; probes of {ctx.recipe.probe_images} images"
    return pd.DataFrame(rows).assign(preset=ctx.preset, scale=scale).reindex(columns=list(COLUMNS))


def _final_accuracy(ctx: Context, model: str) -> float | None:
    """A remedy's final test accuracy at seed 0, from its run (shared with the remedies analysis)."""
    run = ctx.trained(Variant(model))
    return None if run.diverged is not None else float(run.log["test_acc"].iloc[-1])


def _remedy_note(accuracy: float | None, plain: list[float]) -> str:
    shown = "diverged" if accuracy is None else f"{100 * accuracy:.1f}%"
    return f"trained (one seed): {shown}, plain {_describe([100 * v for v in plain])}%"


def _theorem_3_3(ctx: Context, resnet: str) -> dict:
    """Theorem 3.3: a residual layer's surviving fraction has a positive lower bound, where a plain layer's, a
    zero-mean weighted sum, has none (0, by the theorem: not measured). Per seed, the mean bound over the residual
    net's sites at initialisation, predicted from their measured parts; the bound-check row says whether the measured
    fractions stay above it."""
    bounds = []
    for variant in seeded((Variant(resnet),), ctx.seeds):
        bounds.append(float(check_rows(ctx.probed(variant, "init"), "init")["surv_bound"].mean()))
    moments = predict_moments("plain", 0.0, 1.0, 1.0)
    none = cantelli_bound(moments.mean, moments.var)
    return _row("A residual connection keeps a better lower bound of surviving neurons", "Theorem 3.3",
                "Theorem 3.3's bound on the surviving fraction at init: the mean over the residual net's sites, "
                "against a plain layer's, which the theorem puts at 0", (resnet, bounds),
                ("a plain layer (the theorem)", [none] * len(bounds)))


def _theorems_hold(ctx: Context, models: tuple[str, ...]) -> dict:
    """Theorems 3.2 (the moments) and 3.3 (the bound) at initialisation, site by site: the bound-check's verdicts
    over the seeds of `models`."""
    held = total = 0
    for variant in seeded(tuple(Variant(m) for m in models), ctx.seeds):
        checked = verdicts(check_rows(ctx.probed(variant, "init"), "init")).dropna()
        held, total = held + int(checked.sum()), total + len(checked)
    ruling = OPEN if ctx.seeds < MIN_SEEDS or not total else HOLDS if held == total else FAILS
    return _fact("Theorem 3.2's moments and Theorem 3.3's bound hold at every site at initialisation",
                 "the bound-check", "the bound-check at init: the surviving fraction at or above its bound, and the "
                 "variance within its tolerance", ", ".join(models), held / total if total else np.nan, "every site",
                 ruling, f"{held} of {total} site checks hold over {ctx.seeds} seeds of {', '.join(models)}",
                 seeds=ctx.seeds)


def _pnnh_rows(s: Settings, accuracy: pd.DataFrame, speed: pd.DataFrame,
               trained: Callable[[str, str], list[float]]) -> list[dict]:
    """PNNH's three claims: on par with ResNet, parameter efficiency (against the width control), and throughput at
    equal accuracy."""
    resnet = f"resnet{s.on_par.depth}"
    base = (resnet, trained(resnet, "test_acc"))
    defaults = trained(f"pnnh{s.on_par.depth}", "test_acc")
    note = (f"pnnh{s.on_par.depth} at its defaults is ResNet's function: {100 * defaults[0]:.1f}% at seed 0, on par "
            "by construction, so not evidence" if defaults else "")
    on_par = {variant.label: _row("PNNH matches ResNet's accuracy", "abstract", MEASURES["acc"],
                                  (variant.label, trained(variant.label, "test_acc")), base, test="on par", scale=100,
                                  note=note)
              for variant in (s.on_par, s.narrowest)}
    # throughput: the PNNH nets on par with ResNet, and how fast each trains against it (timed once)
    images = speed.drop_duplicates("model").set_index("model")["images_per_s"]
    timed = [(label, images[label] / images[resnet]) for label, row in on_par.items()
             if row["verdict"] == HOLDS and label in images and resnet in images]
    fastest = max(timed, key=lambda pair: pair[1], default=None)
    ratio = fastest[1] if fastest else np.nan
    ruling = HOLDS if ratio >= FASTER else FAILS if ratio <= 1 / FASTER else OPEN
    listed = ", ".join(f"{label} {r:.2f}x" for label, r in timed) or "none of the seeded PNNH nets"
    throughput_row = _fact("PNNH trains faster than ResNet at equal accuracy (the paper: up to 1.3x)", "abstract",
                           "training images/s over ResNet's (timed once), for PNNH nets on par with ResNet",
                           f"PNNH / {resnet}", ratio, "throughput", ruling,
                           f"on par with {resnet} (3 seeds or more) and timed: {listed}")
    return [on_par[s.on_par.label], _efficiency(s, accuracy, trained), throughput_row]


def _efficiency(s: Settings, accuracy: pd.DataFrame, trained: Callable[[str, str], list[float]]) -> dict:
    """PNNH's parameter efficiency, against its control: the ResNet of the same depth, narrowed to within 10% of
    the narrowest PNNH's parameters (`width`); inconclusive when no width comes that close."""
    params = accuracy.drop_duplicates("model").set_index("model")["params"]
    resnets = accuracy[(accuracy["family"] == "resnet") & (accuracy["model_depth"] == s.narrowest.depth)]
    target = params.get(s.narrowest.label, np.nan)
    controls = resnets.drop_duplicates("model").assign(gap=lambda f: (f["params"] / target - 1).abs())
    control = controls.sort_values("gap").iloc[0] if len(controls) else None
    claim = "PNNH beats a ResNet of its parameters (the paper: 2x parameter efficiency), against the width control"
    if control is None or not control["gap"] <= 0.1:
        return _fact(claim, "abstract", MEASURES["acc"], s.narrowest.label, np.nan, "greater", OPEN,
                     "no width-scaled ResNet within 10% of its parameters was trained", seeds=0)
    note = (f"parameters {target / 1e6:.3f}M against {control['params'] / 1e6:.3f}M "
            f"({100 * (target / control['params'] - 1):+.0f}%)")
    return _row(claim, "abstract", MEASURES["acc"], (s.narrowest.label, trained(s.narrowest.label, "test_acc")),
                (control["model"], trained(control["model"], "test_acc")), scale=100, note=note)


def verdict_table(frame: pd.DataFrame) -> list[str]:
    """The count of each verdict, then the claims with their verdicts and evidence: the lines of a Markdown table."""
    counts = frame["verdict"].value_counts()
    return [", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, FAILS, OPEN)) + ".", "",
            "| claim | verdict | evidence (mean [95% interval]) |", "|---|---|---|",
            *(f"| {row.claim} ({row.source}) | **{row.verdict}** | {row.evidence} |" for row in frame.itertuples())]


def markdown(frame: pd.DataFrame) -> str:
    """The verdicts first, then the evidence, then the rule and the scale."""
    lines = [f"# The paper's claims at preset {frame['preset'].iloc[0]}", "", f"{frame['scale'].iloc[0]}.", "",
             *verdict_table(frame)]
    lines += ["", "The rule: a difference counts when its 95% interval excludes 0 (Welch's interval for two nets' "
              f"seeds); \"on par\" means the interval of the difference lies within ±{ON_PAR:g} point; with fewer "
              f"than {MIN_SEEDS} seeds a claim is inconclusive, never holds. Each row's measure:", ""]
    lines += [f"- {row.claim}: {row.measure}; {row.rule}." for row in frame.itertuples()]
    return "\n".join(lines) + "\n"


def render(frame: pd.DataFrame, out: Path, formats: tuple[str, ...]) -> list[str]:
    """claims.md beside claims.csv: there is no figure."""
    path = out / f"{NAME}.md"
    atomic_write(path, lambda f: f.write(markdown(frame).encode()))
    return [str(path)]


def headline(frame: pd.DataFrame) -> list[str]:
    return [f"{row.verdict}: {row.claim}" for row in frame.itertuples()]
