import pandas as pd

from dissipate.analyses import dissipation_training as analysis
from tests.analyses.figure_checks import caption


def test_two_block_outputs_of_every_run_at_every_epoch_from_0(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert set(frame["model"]) == {v.label for v in analysis.PRESETS["smoke"].models}
    for _, rows in frame.groupby("model"):
        assert rows.groupby("position")["epoch"].apply(sorted).to_dict() == {"last": [0, 1, 2],
                                                                            "mid-depth": [0, 1, 2]}
        mid, last = (rows[rows["position"] == p] for p in ("mid-depth", "last"))
        assert mid["layer"].nunique() == last["layer"].nunique() == 1  # the same sites at every epoch
        assert 1 < mid["layer"].iloc[0] < last["layer"].iloc[0]
        assert not mid["site"].str.endswith("act1").any()  # block outputs: a block's last activation
    assert frame[["surviving", "erank_per_channel"]].stack().between(0, 1).all()
    assert frame["cka_input"].between(-0.1, 1).all()
    # each epoch is its own net: the probes change as it trains
    assert frame.groupby(["model", "position"])["erank_per_channel"].nunique().min() > 1


def _probed(pnnh_shift: float = 0.0) -> pd.DataFrame:
    """A small dissipation_training frame: plain, resnet and pnnh at depth 20, two block outputs, epochs 0 to 2,
    PNNH's numbers ResNet's (plus `pnnh_shift`)."""
    rows = [{"model": f"{family}20", "family": family, "model_depth": 20, "epoch": epoch, "position": position,
             "cka_input": (0.2 if family == "plain" else 0.7) + 0.05 * epoch + (pnnh_shift if family == "pnnh" else 0),
             "erank_per_channel": 0.3, "surviving": 0.5}
            for family in ("plain", "resnet", "pnnh") for position in ("mid-depth", "last") for epoch in (0, 1, 2)]
    return pd.DataFrame(rows).assign(preset="smoke", dataset="synthetic").reindex(columns=list(analysis.COLUMNS))


def test_resnet_shows_from_under_pnnh_as_the_wide_line_the_caption_names():
    figure = analysis.draw(_probed())
    assert "PNNH at its defaults computes ResNet's function, so its lines cover ResNet's; ResNet: the wide line" in (
        caption(figure))
    for axis in figure.axes:
        widths = {line.get_gid(): line.get_linewidth() for line in axis.lines}
        assert widths["resnet"] > 2 * widths["pnnh"]
    legend = {text.get_text(): line.get_linewidth() for text, line in
              zip(figure.legends[0].get_texts(), figure.legends[0].get_lines(), strict=True)}
    assert legend["residual (ResNet)"] > 2 * legend["PNNH"]
    assert "ResNet's function" not in caption(analysis.draw(_probed(pnnh_shift=0.1)))
