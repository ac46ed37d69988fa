from dissipate.analyses import accuracy_params as analysis
from dissipate.models import count_parameters, create_model


def test_one_row_per_variant_with_its_parameters(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    frame = frame.set_index("model")
    variants = analysis.PRESETS["smoke"].models
    assert sorted(frame.index) == sorted(v.label for v in variants)
    for variant in variants:
        net = create_model(variant.model, image_size=16, **variant.options)  # synthetic: 10 classes, RGB
        assert frame.loc[variant.label, "params"] == count_parameters(net)
    narrow = [v.label for v in variants if v.options]
    assert narrow and (frame.loc[narrow, "params"] < frame.loc["pnnh20", "params"]).all()
    assert (frame.loc[narrow, "coder_ratio"] * frame.loc[narrow, "learner_ratio"] < 1).all()
    assert (frame["status"] == "ok").all() and frame["test_acc"].between(0, 1).all()
    assert (frame["best_test_acc"] >= frame["test_acc"]).all()
