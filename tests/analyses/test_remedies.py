"""The remedies analysis: every shortcut-free family beside plain, ResNet and PNNH, probed and trained."""

import pandas as pd

from dissipate.analyses import Context, Variant, _common, remedies as analysis, tables
from dissipate.models import REMEDY_FAMILIES, count_parameters, create_model


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
    assert {line.get_gid() for line in cka.lines} == families == {line.get_gid() for line in curves.lines}
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
    """RATE_SCALE multiplies the family's optimizer rate in the preset (SGD: the preset's; AdamW: 1e-3), and is part
    of what a cached table was computed with, so changing it recomputes the table rather than reading a stale one."""
    ctx = Context("cpu", tmp_path)
    rates = {model: ctx.train_config(Variant(model)).lr for model in ("plain20", "ll20", "dirac56", "iso20", "tat20")}
    assert rates == {"plain20": 0.1, "ll20": 0.05, "dirac56": 0.2, "iso20": 1e-3, "tat20": 1e-3}
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
