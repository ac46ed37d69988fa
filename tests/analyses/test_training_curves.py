import numpy as np
import pandas as pd

from dissipate.analyses import RECIPES, Context, Variant
from dissipate.analyses import _common as common
from dissipate.analyses import training_curves as analysis
from dissipate.errors import TrainingDiverged
from tests.analyses.figure_checks import caption, chance_lines


def test_one_row_per_model_and_epoch(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    epochs = RECIPES["smoke"].epochs
    for variant in analysis.PRESETS["smoke"].models:
        rows = frame[frame["model"] == variant.label]
        assert rows["epoch"].tolist() == list(range(1, epochs + 1))
        assert (rows["family"] == variant.family).all() and (rows["model_depth"] == variant.depth).all()
    assert np.isfinite(frame["train_loss"]).all() and frame["test_acc"].between(0, 1).all()


def test_a_run_that_diverges_is_kept_as_a_result_not_retried_and_drawn(tmp_path, monkeypatch):
    real_train = common.train

    def train(config, out, **kwargs):
        if config.model == "pnnh32":
            raise TrainingDiverged("training diverged in epoch 1 (the loss is not finite)", epoch=1)
        return real_train(config, out, **kwargs)

    monkeypatch.setattr(common, "train", train)
    said = []
    ctx = Context("smoke", tmp_path, say=said.append)
    frame = analysis.compute(ctx)
    diverged = frame[frame["model"] == "pnnh32"]
    assert diverged["status"].tolist() == ["diverged"] and diverged["epoch"].tolist() == [1]
    assert diverged["train_loss"].isna().all()
    assert any("pnnh32: training diverged in epoch 1" in line for line in said)

    said.clear()
    run = ctx.trained(Variant("pnnh32"))  # recorded, so not trained again
    assert run.diverged == 1 and run.checkpoint is None and said == []
    assert ctx.probed(Variant("pnnh32"), "trained") is None  # no trained net to probe
    labels = [line.get_label() for axis in analysis.draw(frame).axes for line in axis.lines]
    assert "pnnh32 diverged" in labels
    assert any("pnnh32 diverged in epoch 1" in line for line in analysis.headline(frame))


def _logs(dataset: str = "synthetic", accuracy: float | None = None, pnnh_shift: float = 0.0) -> pd.DataFrame:
    """A small training_curves frame: plain, resnet and pnnh at depths 20 and 56 for 3 epochs, PNNH's curves
    ResNet's (plus `pnnh_shift`), every test accuracy `accuracy` where given (a net at chance)."""
    rows = []
    for depth in (20, 56):
        for family in ("plain", "resnet", "pnnh"):
            for epoch in (1, 2, 3):
                shift = pnnh_shift if family == "pnnh" else 0.0
                rows.append({"model": f"{family}{depth}", "family": family, "model_depth": depth, "epoch": epoch,
                             "train_loss": 2.3 / epoch + shift, "status": "ok",
                             "test_acc": accuracy if accuracy is not None else 0.2 * epoch + shift})
    return pd.DataFrame(rows).assign(preset="smoke", dataset=dataset).reindex(columns=list(analysis.COLUMNS))


def test_every_accuracy_panel_marks_chance_from_the_datasets_classes():
    for dataset, level in (("synthetic", 10), ("cifar100", 1)):
        figure = analysis.draw(_logs(dataset))
        panels = figure.axes[len(figure.axes) // 2:]  # the second row: test accuracy
        assert panels[0].get_ylabel() == "test accuracy (%)"
        for axis in panels:
            (line,) = chance_lines(axis)
            assert list(line.get_ydata()) == [level, level]
        assert "chance" in panels[0].get_legend().get_texts()[0].get_text()
    # the smoke preset's nets on synthetic images sit at chance, and read as such: on the line
    smoke = analysis.draw(_logs(accuracy=0.1))
    for axis in smoke.axes[len(smoke.axes) // 2:]:
        assert {y for line in axis.lines for y in line.get_ydata()} == {10.0}


def test_resnet_is_drawn_wide_under_pnnh_and_the_caption_says_why_only_when_they_are_one_function():
    figure = analysis.draw(_logs())
    assert "PNNH at its defaults computes ResNet's function, so its lines cover ResNet's" in caption(figure)
    for axis in figure.axes:
        widths = {line.get_gid(): line.get_linewidth() for line in axis.lines if line.get_gid() != "chance"}
        assert widths["resnet"] > 2 * widths["pnnh"]
        assert axis.get_legend() is None or not [t for t in axis.get_legend().get_texts() if not t.get_text()]
    apart = analysis.draw(_logs(pnnh_shift=0.1))
    assert "ResNet's function" not in caption(apart)
    widths = {line.get_gid(): line.get_linewidth() for line in apart.axes[0].lines}
    assert widths["resnet"] == widths["pnnh"]
