import numpy as np

from dissipate.analyses import RECIPES, Context, Variant
from dissipate.analyses import _common as common
from dissipate.analyses import training_curves as analysis
from dissipate.errors import TrainingDiverged


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
