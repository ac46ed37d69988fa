import pandas as pd
from matplotlib.container import ErrorbarContainer

from dissipate.analyses import accuracy_params as analysis
from dissipate.models import count_parameters, create_model
from tests.analyses.figure_checks import chance_lines, outside, overlapping_tick_labels, tick_labels


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


def _accuracies(chance_run: bool = False) -> pd.DataFrame:
    """A small accuracy_params frame shaped as the cpu preset's: plain, resnet and pnnh at 20, 56 and 110, the width
    controls and a grid of narrower PNNH nets at depth 20, one at 56, and the ViTs at 6; resnet20 at three seeds.
    `chance_run`: every net at about 10% (the smoke preset's nets on synthetic images)."""
    full = {20: 0.27e6, 56: 0.85e6, 110: 1.73e6}
    rows = []

    def add(model, family, depth, params, acc, base=None, seed=0, **options):
        rows.append({"model": model, "family": family, "model_depth": depth, "base_model": base or model,
                     "width": options.get("width", 1.0), "seed": seed, "params": int(params),
                     "test_acc": 0.1 + 0.002 * (len(rows) % 5) if chance_run else acc,
                     "coder_ratio": options.get("coder_ratio", 1.0 if family == "pnnh" else None),
                     "learner_ratio": options.get("learner_ratio", 1.0 if family == "pnnh" else None)})

    for depth, params in full.items():
        add(f"plain{depth}", "plain", depth, params, 0.75 - depth / 200)
        for seed in (0, 1, 2) if depth == 20 else (0,):
            add(f"resnet{depth}", "resnet", depth, params, 0.76 - depth / 1000 + 0.01 * seed, seed=seed)
        add(f"pnnh{depth}", "pnnh", depth, params * 1.04, 0.755 - depth / 1000)
    for family in ("plain", "resnet"):
        for width, share in ((0.5, 0.25), (0.71, 0.5)):
            add(f"{family}20 width={width}", family, 20, full[20] * share, 0.70 + 0.05 * share, f"{family}20",
                width=width)
    for coder in (0.25, 0.5, 1):
        for learner in (0.25, 0.5, 1):
            if (coder, learner) != (1, 1):
                add(f"pnnh20 k/C={coder} learner={learner}", "pnnh", 20, full[20] * (0.25 + 0.35 * coder * learner
                                                                                     + 0.1 * learner),
                    0.74 + 0.01 * coder, "pnnh20", coder_ratio=coder, learner_ratio=learner)
    add("pnnh56 learner=0.5", "pnnh", 56, 0.51e6, 0.72, "pnnh56", learner_ratio=0.5)
    for family, params, acc in (("plainvit", 2.68e6, 0.46), ("vit", 2.68e6, 0.59), ("pnnhvit", 3.13e6, 0.59)):
        add(f"{family}6", family, 6, params, acc)
    frame = pd.DataFrame(rows).assign(preset="cpu", dataset="fashion-mnist", image_size=28, flops=1, epochs=5,
                                      best_test_acc=lambda f: f["test_acc"], train_loss=1.0, status="ok")
    return frame.reindex(columns=list(analysis.COLUMNS))


def test_accuracy_marks_chance_and_the_labels_neither_overlap_nor_cover_points():
    figure = analysis.draw(_accuracies())
    depths, frontier = figure.axes[:2]
    (line,) = chance_lines(depths)
    assert list(line.get_ydata()) == [10, 10] and "1 of 10 classes" in line.get_label()
    (entry,) = chance_lines(frontier)  # a zoomed panel: chance is named, not drawn 60 points under it
    assert not len(entry.get_ydata()) and "below this panel" in entry.get_label()
    assert frontier.get_ylim()[0] > 50
    assert "chance" in [t.get_text() for t in frontier.get_legend().get_texts()][0]
    # depth names each group of full-width nets once, over the panel, not beside its points
    (top,) = depths.child_axes
    assert tick_labels(top) == ["20", "56", "110", "6"] and not depths.texts
    assert not frontier.texts or all(t.get_text().startswith("x") for t in frontier.texts)  # widths only
    assert not overlapping_tick_labels(figure)
    for axis in (depths, frontier):
        assert outside(axis.get_legend(), axis)


def test_nets_at_chance_read_as_chance():
    figure = analysis.draw(_accuracies(chance_run=True))
    for axis in figure.axes[:2]:
        (line,) = chance_lines(axis)
        assert list(line.get_ydata()) == [10, 10]
        low, high = axis.get_ylim()  # 10.0% to 10.8%: the points sit on the line, not spread over the panel
        assert low < 10 < high and high - low >= 10 and low > 5
