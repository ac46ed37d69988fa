import numpy as np

from dissipate.analyses import dissipation_curves, rank_depth as analysis


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
