"""The claims analysis: every row's verdict follows the stated rule from the numbers it reports."""

import re

import numpy as np
import pandas as pd
import pytest

from dissipate.analyses import accuracy_params, claims as analysis
from dissipate.analyses._stats import FAILS, HOLDS, MIN_SEEDS, OPEN, VERDICTS, verdict
from dissipate.models import REMEDY_FAMILIES


def test_every_row_has_a_verdict_that_the_rule_gives_from_its_own_interval_and_seeds(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert frame["verdict"].isin(VERDICTS).all() and frame["claim"].is_unique
    compared = frame[frame["test"].isin(["greater", "on par"])]
    assert len(compared) >= 10
    for row in compared.itertuples():
        assert row.verdict == verdict(row.low, row.high, row.seeds, row.test, analysis.ON_PAR), row.claim
    assert (frame.loc[frame["seeds"] < MIN_SEEDS, "verdict"] != HOLDS).all()
    decided = compared[compared["verdict"] != OPEN]
    assert len(decided) >= 3  # the smoke preset's 3 seeds decide some rows (the remedies' CKA at init, Theorem 3.3)
    assert (compared["seeds"] == 3).sum() >= 8  # the decisive comparisons ran at the preset's 3 seeds


def test_the_markdown_leads_with_the_verdicts_and_states_the_rule_and_scale(smoke, result):
    frame = result(analysis.NAME)
    markdown = (smoke[0] / f"{analysis.NAME}.md").read_text()
    counts = frame["verdict"].value_counts()
    assert f"{counts.get(HOLDS, 0)} holds, {counts.get(FAILS, 0)} does not hold" in markdown
    for row in frame.itertuples():
        assert f"| {row.claim} ({row.source}) | **{row.verdict}** |" in markdown
    assert "excludes 0" in markdown and "within ±1 point" in markdown and "preset smoke: synthetic" in markdown
    assert {f"{family}20 keeps more of the input than plain20, at initialisation" for family in REMEDY_FAMILIES} <= set(
        frame["claim"])


def test_the_efficiency_claim_is_judged_against_a_resnet_within_ten_percent_of_its_parameters(result):
    frame = result(analysis.NAME)
    row = frame[frame["claim"].str.startswith("PNNH beats a ResNet of its parameters")].iloc[0]
    pnnh, control = row["compared"].split(" - ")
    assert control.startswith("resnet20 width=")
    params = result(accuracy_params.NAME).drop_duplicates("model").set_index("model")["params"]
    assert abs(params[pnnh] / params[control] - 1) <= 0.1
    assert row["seeds"] == 3
    on_par = result(analysis.NAME).set_index("claim").loc["PNNH matches ResNet's accuracy"]
    assert "ResNet's function" in on_par["evidence"] and on_par["compared"] == "pnnh20 k/C=0.5 - resnet20"


@pytest.mark.parametrize("a, b, seeds, expected", [
    ([1.0, 1.1, 1.2], [0.0, 0.1, 0.2], 3, HOLDS), ([0.0, 0.1, 0.2], [1.0, 1.1, 1.2], 3, FAILS),
    ([0.0, 0.5, 1.0], [0.4, 0.5, 0.6], 3, OPEN), ([1.0, 1.1], [0.0, 0.1], 2, OPEN)])
def test_a_row_from_constructed_seeds(a, b, seeds, expected):
    row = analysis._row("a beats b", "test", "a measure", ("a", a), ("b", b))
    assert row["verdict"] == expected and row["seeds"] == seeds
    assert row["difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert re.search(r"difference [+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]", row["evidence"])


def test_on_par_is_judged_in_points_of_accuracy():
    resnet = [0.750, 0.752, 0.748]
    close = analysis._row("on par", "test", "acc", ("pnnh", [0.751, 0.749, 0.750]), ("resnet", resnet),
                          test="on par", scale=100)
    far = analysis._row("on par", "test", "acc", ("pnnh", [0.70, 0.71, 0.705]), ("resnet", resnet), test="on par",
                        scale=100)
    assert close["verdict"] == HOLDS and -1 < close["low"] < close["high"] < 1
    assert far["verdict"] == FAILS and far["difference"] == pytest.approx(-4.5, abs=0.01)


def test_the_markdown_of_a_made_up_frame_counts_each_verdict():
    frame = pd.DataFrame([analysis._row(f"claim {i}", "test", "m", ("a", a), ("b", [0.0, 0.1, 0.2]))
                          for i, a in enumerate(([1, 1.1, 1.2], [-1, -1.1, -1.2], [1, -1, 0.5]))])
    frame = frame.assign(preset="cpu", scale="preset cpu: a scale")
    text = analysis.markdown(frame)
    assert "1 holds, 1 does not hold, 1 inconclusive at this scale." in text
    assert analysis.headline(frame) == [f"{v}: claim {i}" for i, v in enumerate((HOLDS, FAILS, OPEN))]
