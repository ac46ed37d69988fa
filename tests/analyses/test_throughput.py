import numpy as np
import pytest

from dissipate.analyses import Context
from dissipate.analyses import throughput as analysis
from dissipate.errors import InvalidArgumentError, OutOfMemory


def test_one_row_per_model_measured(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert frame["model"].tolist() == [v.label for g in analysis.PRESETS["smoke"].groups for v in g.models]
    assert (frame["status"] == "ok").all() and (frame["images_per_s"] > 0).all()


def test_out_of_memory_is_recorded_and_drawn_as_a_labelled_missing_bar(tmp_path, monkeypatch):
    real_train = analysis.train

    def train(config, out, **kwargs):
        if config.model.startswith("pnnh"):
            raise OutOfMemory("pnnh20 does not fit")
        return real_train(config, out, **kwargs)

    monkeypatch.setattr(analysis, "train", train)
    frame = analysis.compute(Context("smoke", tmp_path, say=lambda _: None))
    oom = frame[frame["status"] == "OOM"]
    assert oom["model"].tolist() == ["pnnh20"] and oom["images_per_s"].isna().all()
    assert np.isfinite(frame.loc[frame["status"] == "ok", "images_per_s"]).all()
    axis = analysis.draw(frame).axes[0]
    assert [t.get_text() for t in axis.texts] == ["OOM"]
    hatched = [p for p in axis.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_gid() == "pnnh"


def test_measure_refuses_a_bad_setting_in_one_sentence():
    with pytest.raises(InvalidArgumentError, match="batch_size must be at least 1"):
        analysis.measure("resnet20", image_size=16, batch_size=0, images=64)
