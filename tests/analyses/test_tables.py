import shutil

import pandas as pd
import pytest

from dissipate.analyses import Context, accuracy_params, tables as analysis, throughput
from dissipate.models import REMEDY_FAMILIES


def test_one_row_per_trained_net_joined_with_its_speed(smoke, result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    accuracy = accuracy_params.summarise(result(accuracy_params.NAME))  # one row per net: its seeds' mean
    compared = frame[~frame["family"].isin(REMEDY_FAMILIES)]
    assert compared["model"].tolist() == accuracy["model"].tolist()
    assert compared["test_acc"].tolist() == pytest.approx(accuracy["test_acc"].tolist())
    assert compared["seeds"].tolist() == accuracy["seeds"].tolist()
    timed = frame[frame["images_per_s"].notna()]
    assert sorted(timed["model"]) == ["plain20", "pnnh20", "resnet20"]  # the smoke preset times depth 20 only
    assert (frame["flops"] > 0).all()
    out, _, _ = smoke
    markdown = (out / f"{analysis.NAME}.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 2 + len(frame)  # a header and a line per net, in two tables (the remedies apart)
    assert "| resnet20 | 0.27 |" in markdown


def test_each_net_is_compared_with_the_resnet_of_its_depth_and_the_narrowest_match_is_named(result):
    frame = result(analysis.NAME).set_index("model")
    for name in ("plain20", "pnnh20", "pnnh20 k/C=0.5"):
        resnet = frame.loc["resnet20"]
        assert frame.loc[name, "acc_vs_resnet"] == pytest.approx(frame.loc[name, "test_acc"] - resnet["test_acc"])
        assert frame.loc[name, "params_vs_resnet"] == pytest.approx(frame.loc[name, "params"] / resnet["params"])
    assert frame.loc["pnnh20", "speed_vs_resnet"] == pytest.approx(
        frame.loc["pnnh20", "images_per_s"] / frame.loc["resnet20", "images_per_s"])
    assert frame.loc["resnet32", "params_vs_resnet"] == 1

    made_up = pd.DataFrame({"dataset": "d", "model": ["resnet20", "pnnh20", "pnnh20 narrow", "pnnh20 narrower"],
                            "family": ["resnet", "pnnh", "pnnh", "pnnh"], "model_depth": 20, "width": 1.0,
                            "test_acc": [0.80, 0.81, 0.795, 0.70], "params": [100, 110, 60, 30],
                            "images_per_s": [10.0, 9.0, 12.0, 15.0]})
    made_up["acc_vs_resnet"] = made_up["test_acc"] - 0.80
    made_up["params_vs_resnet"] = made_up["params"] / 100
    made_up["speed_vs_resnet"] = made_up["images_per_s"] / 10
    assert analysis.narrowest(made_up)["model"].tolist() == ["pnnh20 narrow"]  # half a point below: a match
    assert "pnnh20 narrow, 79.5% (-0.5 points), 0.60x the parameters, 1.20x" in analysis.headline(made_up)[0]
    made_up.loc[2, "test_acc"] = made_up.loc[2, "acc_vs_resnet"] = -1  # now only the full-width net matches
    assert analysis.narrowest(made_up)["model"].tolist() == ["pnnh20"]
    assert analysis.headline(made_up.iloc[[0, 3]]) == ["d depth 20: no PNNH within 1 point of ResNet"]


def test_the_table_is_recomputed_when_an_analysis_it_joins_changes(smoke, tmp_path):
    """Its own settings are the same, but a new throughput measurement changes its rows: its cache must not hold."""
    out = tmp_path / "figures"
    shutil.copytree(smoke[0], out)
    _, cached = Context("smoke", out).result(analysis)
    assert cached
    speed = pd.read_csv(out / f"{throughput.NAME}.csv")
    speed["images_per_s"] *= 2  # as if re-timed on a faster machine
    speed.to_csv(out / f"{throughput.NAME}.csv", index=False)
    frame, cached = Context("smoke", out).result(analysis)
    assert not cached
    timed = frame.set_index("model")["images_per_s"].dropna()
    assert timed.to_dict() == speed.drop_duplicates("model").set_index("model")["images_per_s"].loc[timed.index].to_dict()
