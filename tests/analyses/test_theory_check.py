from dissipate.analyses import theory_check as analysis
from dissipate.bound_check import MUST_HOLD, verdicts


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
