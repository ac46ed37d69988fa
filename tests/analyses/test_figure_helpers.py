"""What the figures share (_common): the note for a family drawn on its twin, and chance accuracy."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dissipate.analyses._common import chance_accuracy, identical_families, identical_note, mark_chance
from dissipate.plots import plain_log_axis


def _curves(pnnh_shift: float = 0.0) -> pd.DataFrame:
    rows = [{"family": family, "model_depth": 20, "epoch": epoch, "loss": 1 / epoch + (pnnh_shift if family == "pnnh"
                                                                                       else 0.0)}
            for family in ("plain", "resnet", "pnnh") for epoch in (1, 2, 3)]
    frame = pd.DataFrame(rows)
    frame.loc[frame["family"] == "plain", "loss"] += 1
    return frame


def test_a_family_is_noted_as_its_twins_only_where_every_matched_row_measures_alike():
    assert identical_families(_curves(), ("model_depth", "epoch"), ("loss",)) == [("pnnh", "resnet")]
    assert identical_families(_curves(1e-4), ("model_depth", "epoch"), ("loss",)) == [("pnnh", "resnet")]
    assert identical_families(_curves(0.05), ("model_depth", "epoch"), ("loss",)) == []
    assert identical_families(_curves().query("family != 'resnet'"), ("model_depth", "epoch"), ("loss",)) == []
    diverged = _curves()
    diverged.loc[diverged["family"] != "plain", "loss"] = np.nan  # NaN on both sides: the same (a diverged epoch)
    assert identical_families(diverged, ("model_depth", "epoch"), ("loss",)) == [("pnnh", "resnet")]
    note = identical_note([("pnnh", "resnet"), ("pnnhvit", "vit")], under="the wide line")
    assert note == ("PNNH at its defaults computes ResNet's function, so its lines cover ResNet's; ResNet: the wide "
                    "line; PNNH-ViT at its defaults computes the ViT's function, so its lines cover the ViT's; the "
                    "ViT: the wide line")
    assert identical_note([]) == ""


def test_chance_is_one_over_the_classes_of_the_frame_or_else_of_its_dataset():
    assert chance_accuracy(pd.DataFrame({"dataset": ["fashion-mnist"] * 2})) == pytest.approx(0.1)
    assert chance_accuracy(pd.DataFrame({"dataset": ["cifar100"]})) == pytest.approx(0.01)
    assert chance_accuracy(pd.DataFrame({"dataset": ["synthetic"]})) == pytest.approx(0.1)
    assert chance_accuracy(pd.DataFrame({"dataset": ["folder:/x"], "num_classes": [4]})) == pytest.approx(0.25)
    assert chance_accuracy(pd.DataFrame({"dataset": ["folder:/x"]})) is None  # its classes are not known here
    assert chance_accuracy(pd.DataFrame({"dataset": ["cifar10", "cifar100"]})) is None  # two chances: no one line
    assert chance_accuracy(pd.DataFrame({"dataset": []})) is None


def test_chance_is_a_line_where_the_panel_reaches_it_and_else_a_legend_entry_saying_where():
    axis = Figure().subplots()
    axis.plot([0, 1], [12, 80])
    line = mark_chance(axis, 0.1)
    assert line.get_gid() == "chance" and list(line.get_ydata()) == [10, 10] and "10%" in line.get_label()
    zoomed = Figure().subplots()
    zoomed.plot([0, 1], [66, 80])
    entry = mark_chance(zoomed, 0.1)
    assert not len(entry.get_ydata()) and "below this panel" in entry.get_label()
    assert zoomed.get_ylim()[0] > 60  # the zoom is kept
    assert mark_chance(Figure().subplots(), None) is None
    at_chance = Figure().subplots()
    at_chance.plot([0, 1, 2], [10.0, 10.8, 10.2])
    mark_chance(at_chance, 0.1)
    low, high = at_chance.get_ylim()
    assert low < 10 and high - low >= 10  # noise about chance is drawn as the flat line it is


@pytest.mark.parametrize("low, high", [(1.2, 1.9), (1.21, 1.29), (0.55, 0.95), (3.1, 4.9), (0.3, 3), (1.5, 2e9)])
def test_a_log_axis_always_has_two_labelled_ticks_inside_its_range(low, high):
    axis = Figure().subplots()
    axis.set_xlim(low, high)
    plain_log_axis(axis, "x")
    ticks = axis.get_xticks()
    assert len(ticks) >= 2 and all(low <= t <= high for t in ticks), ticks
    assert all(label.get_text() for label in axis.get_xticklabels())
