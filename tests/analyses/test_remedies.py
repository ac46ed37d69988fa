"""The remedies analysis: every shortcut-free family beside plain, ResNet and PNNH, probed and trained."""

import pandas as pd
import pytest

from dissipate.analyses import Context, Variant, _common, remedies as analysis, tables
from dissipate.models import REMEDY_FAMILIES, count_parameters, create_model
from tests.analyses.figure_checks import caption, chance_lines, render


def test_every_family_is_probed_at_init_and_trained_with_its_parameters(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert set(frame["family"]) == set(analysis.FAMILIES) == {"plain", "resnet", "pnnh", *REMEDY_FAMILIES}
    for state in ("init", "trained"):
        assert set(frame.loc[frame["state"] == state, "model"]) == {f"{f}20" for f in analysis.FAMILIES}
    nets = frame.drop_duplicates("model").set_index("model")
    for model in ("tat20", "ll20", "repvgg20"):
        assert nets.loc[model, "params"] == count_parameters(create_model(model, image_size=16))
    assert nets.loc["ll20", "params"] > 1.9 * nets.loc["plain20", "params"]  # a CReLU doubles the next conv's input
    ok = nets["status"] == "ok"
    assert nets.loc[ok, "test_acc"].between(0, 1).all() and (nets.loc[ok, "train_minutes"] > 0).all()
    last = analysis.last_sites(frame)
    assert len(last) == len(analysis.FAMILIES)
    for row in last.itertuples():
        assert row.layer == frame.loc[(frame["model"] == row.model) & (frame["state"] == "init"), "layer"].max()


def test_the_figure_shows_each_family_at_init_against_trained_and_block_by_block(result):
    frame = result(analysis.NAME)
    figure = analysis.draw(frame)
    cka, recon, curves = figure.axes
    families = set(analysis.FAMILIES)
    assert {line.get_gid() for line in cka.lines} - {"chance"} == families == {line.get_gid() for line in curves.lines}
    last = analysis.last_sites(frame).set_index("model")
    dirac = next(line for line in cka.lines if line.get_gid() == "dirac")
    assert dirac.get_xdata()[0] == last.loc["dirac20", "cka_input"]
    assert "one seed" in figure.texts[-1].get_text() or any("one seed" in t.get_text() for t in figure.texts)


def test_the_tables_list_each_trained_remedy(smoke, result):
    frame = result(tables.NAME)
    remedy = frame[frame["family"].isin(REMEDY_FAMILIES)]
    assert sorted(remedy["model"]) == sorted(f"{f}20" for f in REMEDY_FAMILIES)
    assert remedy["acc_vs_resnet"].notna().all()
    markdown = (smoke[0] / f"{tables.NAME}.md").read_text()
    assert "The shortcut-free remedies" in markdown and "| repvgg20 |" in markdown


def test_each_remedy_trains_at_its_swept_rate_and_a_changed_rate_recomputes_the_table(tmp_path, monkeypatch):
    """RATE_SCALE multiplies the model's or else the family's optimizer rate in the preset (SGD: the preset's; AdamW: 1e-3), and is part
    of what a cached table was computed with, so changing it recomputes the table rather than reading a stale one."""
    ctx = Context("cpu", tmp_path)
    models = ("plain20", "ll20", "dirac56", "iso20", "tat20", "tat56")
    rates = {model: ctx.train_config(Variant(model)).lr for model in models}
    assert rates == pytest.approx({"plain20": 0.1, "ll20": 0.05, "dirac56": 0.2, "iso20": 1e-3, "tat20": 1e-3,
                                   "tat56": 1e-4})  # a model's own entry before its family's
    smoke = Context("smoke", tmp_path)
    assert smoke.train_config(Variant("dirac20")).lr == 2 * smoke.recipe.lr

    computed = []

    class Counted:  # an analysis whose table is how many times it was computed
        NAME, PRESETS, COLUMNS = "counted", analysis.PRESETS, ("times",)

        @staticmethod
        def compute(_: Context) -> pd.DataFrame:
            computed.append(1)
            return pd.DataFrame({"times": [len(computed)]})

    assert ctx.result(Counted)[0]["times"].tolist() == [1]
    assert ctx.result(Counted)[0]["times"].tolist() == [1]  # read back from the cache
    monkeypatch.setitem(_common.RATE_SCALE, "tat", 0.5)
    assert ctx.result(Counted)[0]["times"].tolist() == [2]


def _remedies() -> pd.DataFrame:
    """A small remedies frame: plain, resnet, pnnh and tat probed at depths 20 and 110, trained at 20 only (tat20
    at chance, 10%), four block outputs each."""
    rows = []
    for depth in (20, 110):
        for index, family in enumerate(("plain", "resnet", "pnnh", "tat")):
            trained = {"test_acc": (0.1, 0.7, 0.7, 0.1)[index] + 0.01 * index, "status": "ok"} if depth == 20 else {}
            for state in ("init", "trained") if depth == 20 else ("init",):
                for layer in range(1, 5):
                    rows.append({"state": state, "model": f"{family}{depth}", "family": family, "model_depth": depth,
                                 "site": f"layer{layer}.0.act2", "layer": layer, "cka_input": 0.9 - 0.1 * layer * index,
                                 "recon_r2": 0.8 - 0.05 * layer * index,
                                 "dataset": "synthetic" if state == "init" else "fashion-mnist", **trained})
    return pd.DataFrame(rows).assign(preset="cpu").reindex(columns=list(analysis.COLUMNS))


def test_accuracy_marks_chance_and_no_note_or_legend_covers_it_or_a_point():
    figure = analysis.draw(_remedies())
    cka, recon, _ = figure.axes
    for axis in (cka, recon):
        (line,) = chance_lines(axis)
        assert list(line.get_ydata()) == [10, 10]
        assert not axis.texts or all(text.get_text().isdigit() for text in axis.texts)  # depths beside points only
        assert axis.get_legend() is None
    assert "depth 110: probed at init only (right panel), not trained here" in caption(figure)
    legend = figure.legends[0].get_window_extent(render(figure))
    assert not any(legend.overlaps(axis.get_window_extent()) for axis in figure.axes)
    assert "chance (10%: 1 of 10 classes)" in [text.get_text() for text in figure.legends[0].get_texts()]
