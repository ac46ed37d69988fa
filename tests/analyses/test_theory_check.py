import numpy as np
import pandas as pd

from dissipate.analyses import theory_check as analysis
from dissipate.bound_check import MUST_HOLD, verdicts
from tests.analyses.figure_checks import caption, overlapping_tick_labels, tick_labels


def test_monte_carlo_and_one_row_per_site_of_each_net(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    mc = analysis.PRESETS["smoke"].monte_carlo
    assert (frame["level"] == "monte-carlo").sum() == len(mc.kinds) * len(mc.inputs) * mc.depth * len(mc.widths)
    networks = frame[frame["level"] != "monte-carlo"]
    expected = {(s, v.label) for v, s in analysis.probes("smoke")}
    assert set(zip(networks["level"], networks["model"], strict=True)) == expected
    sites = networks.groupby(["level", "model"]).size()
    assert (sites.xs("init") == sites.xs("trained")).all()  # the same sites, before and after training


def test_every_bound_that_must_hold_holds(result):
    frame = result(analysis.NAME)
    must_hold = frame[frame["level"].isin(MUST_HOLD) & verdicts(frame).notna()]
    assert len(must_hold) and must_hold["holds"].all()
    assert ((must_hold["margin"] - (must_hold["surv_meas"] - must_hold["surv_bound"])).abs() < 1e-9).all()
    unpredicted = frame[verdicts(frame).isna()]  # sites that declare no parts: no bound, no margin
    assert len(unpredicted) and unpredicted[["surv_bound", "margin"]].isna().all().all()


def _checked(pnnh_variance: float = 1.0) -> pd.DataFrame:
    """A small theory_check frame: at each level, resnet20 and pnnh20 (the same function: the same numbers, unless
    `pnnh_variance` scales PNNH's measured variance) with 4 predicted sites each, the last one's variance 1.5 times
    its prediction (outside the tolerance, above the bound); and plain20, whose sites have no prediction and
    measure variances up to 2e9, which are not drawn."""
    rows = []
    for level in ("init", "trained"):
        for family, kind in (("resnet", "residual"), ("pnnh", "pnnh")):
            for i in range(4):
                var_pred = 2.0 + i
                var_meas = var_pred * (1.5 if i == 3 else 1.02) * (pnnh_variance if family == "pnnh" else 1)
                bound, surv = 0.1 * (i + 1), 0.6 + 0.05 * i
                rows.append({"level": level, "model": f"{family}20", "family": family, "site": f"s{i}", "kind": kind,
                             "mu_pred": 0.5, "mu_meas": 0.5, "var_pred": var_pred, "var_meas": var_meas,
                             "surv_meas": surv, "surv_bound": bound, "margin": surv - bound, "holds": i != 3})
        for i in range(3):
            rows.append({"level": level, "model": "plain20", "family": "plain", "site": f"s{i}", "kind": "plain",
                         "mu_meas": 0.1, "var_meas": 2e9 if i else 0.3, "surv_meas": 0.5})
    frame = pd.DataFrame(rows).assign(preset="cpu", dataset="synthetic", model_depth=20)
    return frame.reindex(columns=list(analysis.COLUMNS))


def _drawn(axis) -> int:
    """The sites drawn in a panel: the points of its PNNH and ResNet scatters."""
    return sum(len(c.get_offsets()) for c in axis.collections if c.get_gid() in ("pnnh", "resnet"))


def test_each_theory_panel_counts_what_it_draws_and_its_log_axes_fit_the_drawn_sites():
    figure = analysis.draw(_checked())
    for survival, ratio, variance in np.reshape(figure.axes, (-1, 3)):
        assert _drawn(survival) == 8 and survival.get_title().endswith(": 8 of 8 sites on or above the bound")
        assert _drawn(ratio) == 8 and ratio.get_title() == "Theorem 3.2: variance ratio, 6 of 8 sites within x1.33"
        assert _drawn(variance) == 8 and variance.get_title() == "Theorem 3.2: variance, 8 sites"
        assert not any(t.get_text().startswith("plain") for t in survival.get_legend().get_texts())  # none drawn
        # the plain sites' 2e9 (no prediction, not drawn) stretch no axis: the drawn predictions run from 2 to 5,
        # the measured variances to 7.5
        for (low, high), top in ((ratio.get_xlim(), 5), (variance.get_xlim(), 7.5), (variance.get_ylim(), 7.5)):
            assert 1.5 < low < 2 and top < high < 1.2 * top, (low, high)
        for labels in (tick_labels(ratio), tick_labels(variance), tick_labels(variance, "y")):
            assert len(labels) >= 2, labels
    assert "PNNH at its defaults computes ResNet's function, so its dots cover ResNet's" in caption(figure)
    assert "plain nets'" in caption(figure)
    assert not overlapping_tick_labels(figure)


def test_the_twin_note_is_there_only_when_pnnh_measures_as_resnet():
    assert "ResNet's function" not in caption(analysis.draw(_checked(pnnh_variance=1.2)))
