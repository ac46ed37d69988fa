from dissipate.analyses import dissipation_training as analysis


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
