import numpy as np
import pandas as pd

from dissipate.analyses import dissipation_curves, rank_depth as analysis
from tests.analyses.figure_checks import caption, outside, overlapping_tick_labels, points_under, tick_labels


def test_normalised_rank_per_site_from_the_shared_probes(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    expected = {(s, v.label) for v, s in analysis.probes("smoke")}
    assert set(zip(frame["state"], frame["model"], strict=True)) == expected
    np.testing.assert_allclose(frame["erank_per_channel"], frame["erank"] / frame["channels"])
    assert frame["erank_per_channel"].between(0, 1 + 1e-6).all()
    # the dissipation curves read the same cached probes: every site of this table is one of theirs
    curves = result(dissipation_curves.NAME)
    shared = frame.merge(curves, on=["state", "model", "site"])
    assert len(shared) == len(frame)


def _ranks(pnnh_shift: float = 0.0) -> pd.DataFrame:
    """A small rank_depth frame: plain, resnet and pnnh at depths 18, 20, 34, 56 and 110 (trained: the CIFAR ones),
    PNNH's ranks ResNet's (plus `pnnh_shift`), a block output per site."""
    rows = []
    for state, depths in (("init", (20, 56, 110, 18, 34)), ("trained", (20, 56, 110))):
        for depth in depths:
            for family in ("plain", "resnet", "pnnh"):
                for layer in range(1, 6):
                    rank = (0.9 - 0.1 * layer if family == "plain" else 0.8 - 0.02 * layer) - depth / 1000
                    rank += pnnh_shift if family == "pnnh" else 0.0
                    rows.append({"state": state, "model": f"{family}{depth}", "family": family, "model_depth": depth,
                                 "site": f"layer{layer}.0.act2", "layer": layer, "erank_per_channel": rank,
                                 "block_output": True})
    frame = pd.DataFrame(rows).assign(preset="cpu", dataset=lambda f: np.where(f["state"] == "init", "synthetic",
                                                                                "fashion-mnist"))
    return frame.reindex(columns=list(analysis.COLUMNS))


def test_the_depth_ticks_stay_apart_the_legend_covers_no_point_and_resnet_shows_from_under_pnnh():
    figure = analysis.draw(_ranks())
    summary = figure.axes[-1]
    assert tick_labels(summary) == ["20", "56", "110"] and tick_labels(summary, minor=True) == ["18", "34"]
    assert not overlapping_tick_labels(figure)  # 18 and 20 ran together as "1820"
    assert outside(summary.get_legend(), summary) and points_under(summary.get_legend(), summary) == 0
    assert "PNNH at its defaults computes ResNet's function, so its lines cover ResNet's" in caption(figure)
    for axis in figure.axes:
        widths = {line.get_gid(): line.get_linewidth() for line in axis.lines if line.get_gid()}
        assert widths["resnet"] > 2 * widths["pnnh"], (axis.get_title(), widths)


def test_no_twin_note_and_no_wide_line_when_pnnh_measures_otherwise():
    figure = analysis.draw(_ranks(pnnh_shift=0.05))
    assert "ResNet's function" not in caption(figure)
    widths = {line.get_gid(): line.get_linewidth() for line in figure.axes[0].lines}
    assert widths["resnet"] == widths["pnnh"]
