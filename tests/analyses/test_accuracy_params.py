from matplotlib.container import ErrorbarContainer

from dissipate.analyses import accuracy_params as analysis
from dissipate.models import count_parameters, create_model


def test_one_row_per_run_every_net_at_seed_0_and_the_decisive_ones_at_each_seed(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    settings = analysis.PRESETS["smoke"]
    seeded = {v.label for v in settings.seeded}
    runs = frame.groupby("model")["seed"].apply(sorted).to_dict()
    assert runs == {v.label: [0, 1, 2] if v.label in seeded else [0] for v in settings.models}
    first = frame[frame["seed"] == 0].set_index("model")
    for variant in settings.models:
        net = create_model(variant.model, image_size=16, **variant.options)  # synthetic: 10 classes, RGB
        assert first.loc[variant.label, "params"] == count_parameters(net)
    narrow = [v.label for v in settings.models if v.family == "pnnh" and v.options]
    assert narrow and (first.loc[narrow, "params"] < first.loc["pnnh20", "params"]).all()
    assert (first.loc[narrow, "coder_ratio"] * first.loc[narrow, "learner_ratio"] < 1).all()
    assert (frame["status"] == "ok").all() and frame["test_acc"].between(0, 1).all()
    assert (frame["best_test_acc"] >= frame["test_acc"]).all()
    # the width controls: about a quarter and a half of the parameters (measured: 0.252 and 0.499 at depth 20)
    ratio = first["params"] / first.loc["resnet20", "params"]
    assert 0.24 < ratio["resnet20 width=0.5"] < 0.27 and 0.48 < ratio["resnet20 width=0.71"] < 0.52


def test_each_point_is_the_seeds_mean_with_its_interval_and_the_frontier_has_its_own_panel(result):
    frame = result(analysis.NAME)
    summary = analysis.summarise(frame).set_index("model")
    resnet = frame.loc[frame["model"] == "resnet20", "test_acc"]
    assert summary.loc["resnet20", "test_acc"] == resnet.mean() and summary.loc["resnet20", "seeds"] == 3
    assert summary.loc["resnet20", "low"] < resnet.mean() < summary.loc["resnet20", "high"] or resnet.nunique() == 1
    assert summary.loc["resnet32"].isna()["low"] and summary.loc["resnet32", "seeds"] == 1
    figure = analysis.draw(frame)
    depths, frontier = figure.axes[:2]
    assert "width frontier" in frontier.get_title()
    bars = {c.get_label(): c for c in frontier.containers if isinstance(c, ErrorbarContainer)}
    resnets = bars[next(label for label in bars if label.startswith("residual"))]
    assert len(resnets.lines[0].get_xdata()) == 3  # widths 0.5, 0.71 and 1
    low, high = (100 * summary.loc["resnet20", side] for side in ("low", "high"))
    segments = resnets.lines[2][0].get_segments()
    assert any(abs(seg[0][1] - low) < 1e-6 and abs(seg[1][1] - high) < 1e-6 for seg in segments)
