"""The runner (`dissipate.analyses`) and `dissipate figures`: outputs, figures, the cache, the plan and errors."""

import os
import re
import shutil

import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex

from dissipate.analyses import (ANALYSES, RECIPES, Context, Variant, describe_plan, outputs, parse_jobs,
                                 planned_runs, run_analyses, select)
from dissipate.analyses._common import REFERENCE_RUN, gpu_seconds
from dissipate.analyses._jobs import MAX_PER_GPU, parse_options, runs_per_gpu, submit_all, train_all
from dissipate.analyses import accuracy_params, training_curves, transformer_curves
from dissipate.errors import InvalidArgumentError
from dissipate.plots import FAMILY_COLOURS
from tests.helpers import run_cli

FIGURES = [module for module in ANALYSES.values() if hasattr(module, "draw")]


def test_the_smoke_preset_writes_every_csv_and_figure_and_summarises_them(smoke):
    out, stdout, seconds = smoke
    for module in ANALYSES.values():
        for path in outputs(module, out):
            assert path.is_file() and path.stat().st_size > 0, path
        assert f"  {module.NAME} (computed in" in stdout
    assert (out / "cache" / ".gitignore").read_text() == "*\n"  # the runs' checkpoints are never committed
    assert "plain20" in stdout  # the headlines quote the numbers


def _colours(artist) -> set[str]:
    """The colours an artist is drawn in: a line's colour, a marker's or a bar's face and edge."""
    if hasattr(artist, "get_linestyle") and hasattr(artist, "get_xydata"):
        return {to_hex(artist.get_color())}
    faces, edges = artist.get_facecolor(), artist.get_edgecolor()
    found = set()
    for colours in (faces, edges):
        rows = colours if getattr(colours, "ndim", 1) == 2 else [colours]
        found |= {to_hex(c) for c in rows if len(c) == 4 and c[3] > 0}
    return found


@pytest.mark.parametrize("analysis", FIGURES, ids=lambda module: module.NAME)
def test_every_figure_has_titles_labels_with_units_a_legend_a_caption_and_family_colours(analysis, result):
    figure = analysis.draw(result(analysis.NAME))
    assert figure.get_suptitle()
    captions = [text.get_text() for text in figure.texts if text.get_gid() == "caption"]
    assert len(captions) == 1 and "preset smoke" in captions[0] and "synthetic" in captions[0]
    axes = [axis for axis in figure.axes if axis.get_visible()]
    for axis in axes:
        assert "(" in axis.get_xlabel() and axis.get_xlabel().endswith(")"), axis.get_xlabel()
        ylabels = [axis.get_ylabel(), *(a.get_ylabel() for a in axis.get_shared_y_axes().get_siblings(axis))]
        assert any("(" in label and label.endswith(")") for label in ylabels), ylabels
    assert any(axis.get_legend() for axis in axes) or figure.legends
    families = set()
    for axis in axes:
        for artist in (*axis.lines, *axis.collections, *axis.patches):
            family = artist.get_gid()
            if family in FAMILY_COLOURS:
                families.add(family)
                assert FAMILY_COLOURS[family] in _colours(artist), (analysis.NAME, family, _colours(artist))
                assert not ({c for f, c in FAMILY_COLOURS.items() if f != family} & _colours(artist))
    compared = ("plainvit", "vit", "pnnhvit") if analysis is transformer_curves else ("plain", "resnet", "pnnh")
    assert set(compared) <= families


# the words a sentence about the results needs (the old training-curves title was "deep plain nets fall behind,
# residual and PNNH nets do not", which the smoke preset's data contradicted)
CLAIM_WORDS = re.compile(r"\b(not|no|never|fall|falls|behind|better|worse|beats?|outperforms?|keeps?|loses?|fails?|"
                         r"than|while|whereas|only|cannot|do|does)\b", re.IGNORECASE)


@pytest.mark.parametrize("analysis", FIGURES, ids=lambda module: module.NAME)
def test_no_title_is_a_fixed_claim_each_names_what_is_plotted_and_any_count_comes_from_the_data(analysis, result):
    frame = result(analysis.NAME)
    figure = analysis.draw(frame)
    titles = [figure.get_suptitle(), *(axis.get_title() for axis in figure.axes)]
    assert all(titles[:1]) and titles[0][0].isupper()
    for title in titles:
        assert not CLAIM_WORDS.search(title), title
    numbers = [title for title in titles if re.search(r"\d+ of \d+", title)]  # e.g. "36 of 36 hold"
    if numbers:  # drawn from half the rows, a count changes with them
        half = analysis.draw(frame.iloc[: len(frame) // 2])
        assert numbers != [t for t in (half.get_suptitle(), *(a.get_title() for a in half.axes)) if re.search(
            r"\d+ of \d+", t)]


def test_a_second_run_reuses_the_cache_and_force_recomputes_once(smoke, tmp_path):
    out = tmp_path / "figures"
    shutil.copytree(smoke[0], out)
    before = (out / "training_curves.csv").stat().st_mtime_ns
    said = []
    reports = run_analyses(["training_curves,tables"], "smoke", out, say=said.append)
    assert [r.cached for r in reports] == [True, True] and said == []
    assert (out / "training_curves.csv").stat().st_mtime_ns == before

    (out / "cache" / "training_curves.json").write_text("{}")  # computed with other settings: recompute from runs
    reports = run_analyses(["training_curves"], "smoke", out, say=said.append)
    assert not reports[0].cached and said == []  # every run it needs is still cached

    reports = run_analyses(["training_curves", "accuracy_params"], "smoke", out, force=True, formats=("png", "pdf"),
                           say=said.append)
    trained = [line for line in said if line.startswith("training")]
    runs = planned_runs(select(["training_curves", "accuracy_params"]), "smoke")
    assert len(trained) == len(runs) > len(training_curves.PRESETS["smoke"].models)  # a shared run trains once
    assert (out / "accuracy_params.pdf").read_bytes().startswith(b"%PDF")


def test_the_paper_plan_lists_runs_epochs_probes_and_outputs(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "figures", "--preset", "paper", "--dry-run", "--out", str(tmp_path / "f"))
    assert code == 0 and not (tmp_path / "f").exists()
    assert "200 epochs" in stdout and "cifar10: " in stdout and "cifar100: " in stdout
    for variant in training_curves.PRESETS["paper"].models:
        assert variant.label in stdout
    assert "pnnh110 k/C=0.25" in stdout and "vgg16" in stdout and "pnnhvit24" in stdout and "AdamW lr 0.001" in stdout
    for module in ANALYSES.values():
        assert all(path.name in stdout for path in outputs(module, tmp_path))
    assert "throughput: plain18, resnet18, pnnh18, plain34, resnet34, pnnh34 at 224 px" in stdout
    assert describe_plan(preset="paper") == describe_plan(preset="paper")  # a plan computes nothing


def test_seeds_multiply_the_decisive_runs_only_and_a_count_below_one_is_one_sentence(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, "figures", "--preset", "cpu", "--dry-run", "--seeds", "5")
    assert code == 0 and "at 5 seed(s)" in stdout
    assert "resnet56 seed=4" in stdout and "resnet20 width=0.71 seed=4" in stdout and "seed=5" not in stdout
    assert "resnet110 seed=1" not in stdout and "pnnh56 seed=1" not in stdout  # one seed: not decisive
    three, five = (len(planned_runs(select(), "cpu", seeds)) for seeds in (None, 5))
    assert five - three == 2 * len(accuracy_params.PRESETS["cpu"].seeded)
    code, _, stderr = run_cli(capsys, "figures", "--preset", "smoke", "--seeds", "0", "--out", str(tmp_path / "f"))
    assert code == 2 and stderr.count("\n") == 1 and "--seeds must be a whole number of at least 1" in stderr


def test_the_gpu_plan_estimates_its_time_from_the_measured_throughput(capsys, tmp_path):
    recipe = RECIPES["gpu"]
    alone = gpu_seconds([(Variant("resnet20"), "fashion-mnist")], recipe)
    assert alone == pytest.approx(recipe.epochs * (60_000 + 10_000 / 3) / REFERENCE_RUN[3])  # the reference itself
    deeper = gpu_seconds([(Variant("resnet56"), "fashion-mnist")], recipe)
    assert 2.5 < deeper / alone < 3.5  # by FLOPs: 56 layers cost about 2.9x 20
    code, stdout, _ = run_cli(capsys, "figures", "--preset", "gpu", "--dry-run", "--out", str(tmp_path / "f"))
    assert code == 0 and "all images, 10 epochs, batch 512" in stdout and "pnnhvit24" in stdout
    minutes = re.search(r"(\d+) min one run at a time, (\d+) min with --jobs auto", stdout)
    assert minutes and 1 <= int(minutes[2]) < int(minutes[1])


def test_unknown_names_are_one_sentence_with_a_suggestion(capsys):
    code, _, stderr = run_cli(capsys, "figures", "--preset", "smoke", "--only", "dissipation")
    assert code == 2 and "did you mean 'dissipation_curves'" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli(capsys, "figures", "--preset", "papr", "--dry-run")
    assert code == 2 and "unknown preset 'papr' (did you mean 'paper'?)" in stderr
    with pytest.raises(InvalidArgumentError):
        select(["tables", "nonsense"])
    assert [m.NAME for m in select(["rank-depth", "tables"])] == ["rank_depth", "tables"]


def test_a_run_killed_before_its_log_was_written_is_resumed_not_read_as_finished(smoke, tmp_path):
    """A kill between latest.pt and log.csv leaves the log an epoch short: the cache must neither read the run as
    finished nor train it again; resuming makes the log agree with latest.pt's history without training."""
    out = tmp_path / "figures"
    shutil.copytree(smoke[0], out)
    ctx = Context("smoke", out)
    run = ctx.run_dir(ctx.train_config(training_curves.PRESETS["smoke"].models[0]))
    log = pd.read_csv(run / "log.csv")
    log.iloc[:-1].to_csv(run / "log.csv", index=False)
    (out / "cache" / "training_curves.json").unlink()
    said = []
    run_analyses(["training_curves"], "smoke", out, say=said.append)
    started = [line for line in said if line.startswith(("training", "resuming"))]
    assert len(started) == 1 and started[0].startswith(f"resuming {run.name.split('-')[0]}")
    assert pd.read_csv(run / "log.csv").equals(log)


def test_jobs_train_runs_at_once_as_they_train_alone_and_report_a_failing_one(tmp_path):
    said = []
    ctx = Context("smoke", tmp_path / "together", say=said.append)
    runs = [(Variant("resnet20"), None), (Variant("plain20"), None), (Variant("pnnh20", {"coder_ratio": 5}), None)]
    outcomes = {o.label: o for o in train_all(ctx, runs, 2)}
    assert {label: o.status for label, o in outcomes.items()} == {
        "resnet20": "trained", "plain20": "trained", "pnnh20 k/C=5": "failed"}
    assert "coder_ratio must be a number in (0, 1], got 5" in outcomes["pnnh20 k/C=5"].message
    assert "training 3 runs, 2 at once" in said
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # a worker's threads: float sums depend on them
    try:
        alone = Context("smoke", tmp_path / "alone", say=said.append).trained(Variant("resnet20")).log
    finally:
        torch.set_num_threads(threads)
    together = ctx.trained(Variant("resnet20")).log  # from the cache: nothing is trained again
    columns = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(together[columns], alone[columns])
    assert {o.status for o in train_all(ctx, runs[:2], 2)} == {"cached"}


def test_the_slurm_launcher_runs_a_tiny_presets_runs_through_submitits_local_executor(tmp_path, capsys):
    """`--launcher local` is the `--launcher slurm` path (one submitit job per run, all into the shared cache) on
    submitit's local executor: the runs train in their own processes, a failing one is named, the rest are cached
    for the analyses, and a second submission trains nothing."""
    said = []
    ctx = Context("smoke", tmp_path / "figures", say=said.append)
    runs = [(Variant("resnet20"), None), (Variant("pnnh20"), None), (Variant("pnnh20", {"coder_ratio": 5}), None)]
    outcomes = {o.label: o for o in submit_all(ctx, runs, "local", {"timeout_min": 10})}
    assert {label: o.status for label, o in outcomes.items()} == {
        "resnet20": "trained", "pnnh20": "trained", "pnnh20 k/C=5": "failed"}
    assert "coder_ratio must be a number in (0, 1], got 5" in outcomes["pnnh20 k/C=5"].message
    assert any(line.startswith("submitted 3 runs to local") for line in said)
    assert (ctx.cache / "smoke" / "submitit").is_dir()
    log = ctx.trained(Variant("resnet20")).log  # read from the cache, as the analyses read it
    assert list(log["epoch"]) == [1, 2]
    assert {o.status for o in submit_all(ctx, runs[:2], "local")} == {"cached"}
    code, _, err = run_cli(capsys, "figures", "--preset", "smoke", "--launcher", "slurm", "--slurm", "partition",
                           "--out", str(tmp_path / "f"))
    assert code == 2 and "--slurm expects KEY=VALUE" in err
    assert parse_options(["slurm_partition=gpu", "timeout_min=120"]) == {"slurm_partition": "gpu", "timeout_min": 120}


def test_jobs_is_a_count_or_auto_and_auto_fills_a_gpu_by_the_first_runs_peak():
    assert (parse_jobs("3"), parse_jobs("auto")) == (3, None)
    for bad in ("0", "-1", "two"):
        with pytest.raises(InvalidArgumentError, match="--jobs takes a positive number of runs or 'auto'"):
            parse_jobs(bad)
    assert runs_per_gpu(peak_mb=2000, free_mb=80_000) == MAX_PER_GPU
    assert runs_per_gpu(peak_mb=10_000, free_mb=40_000) == 3  # 0.8 x 40 GB holds three runs of 10 GB
    assert runs_per_gpu(peak_mb=50_000, free_mb=40_000) == 1
