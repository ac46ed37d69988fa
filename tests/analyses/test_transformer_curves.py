import numpy as np

from dissipate.analyses import transformer_curves as analysis


def test_vits_per_block_from_their_probes(result):
    """At initialisation (smoke: depth 6, 64 synthetic images), the plain ViT's last block keeps less of the input
    than the residual one; the PNNH ViT at its defaults computes the residual ViT's function, so its curves are the
    ViT's (to the rounding of the explicit code path)."""
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    assert set(frame["model"]) == {"plainvit6", "vit6", "pnnhvit6"} and set(frame["state"]) == {"init"}
    outputs = frame[frame["block_output"]]
    assert outputs["site"].str.endswith(".out").all() and outputs.groupby("model")["block"].max().eq(6).all()
    assert frame["surviving"].notna().eq(frame["site"].str.endswith(".act")).all()  # activations only
    last = outputs.groupby("model").tail(1).set_index("model")
    assert last.loc["plainvit6", "cka_input"] < last.loc["vit6", "cka_input"]
    assert last.loc["plainvit6", "erank_per_channel"] < last.loc["vit6", "erank_per_channel"]
    np.testing.assert_allclose(last.loc["pnnhvit6", ["cka_input", "erank_per_channel"]].to_numpy(float),
                               last.loc["vit6", ["cka_input", "erank_per_channel"]].to_numpy(float), atol=1e-3)
