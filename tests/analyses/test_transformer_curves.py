import numpy as np
import pandas as pd

from dissipate.analyses import transformer_curves as analysis
from tests.analyses.figure_checks import caption


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


def _blocks(pnnh_shift: float = 0.0) -> pd.DataFrame:
    """A small transformer_curves frame: the three ViTs at depth 6 at initialisation, PNNH-ViT's numbers the ViT's
    (plus `pnnh_shift`), a block output and an MLP activation per block."""
    rows = []
    for family in ("plainvit", "vit", "pnnhvit"):
        for block in range(1, 7):
            cka = (0.9 - 0.1 * block if family == "plainvit" else 0.9 - 0.05 * block) + (
                pnnh_shift if family == "pnnhvit" else 0.0)
            common = {"state": "init", "model": f"{family}6", "family": family, "model_depth": 6, "block": block,
                      "erank_per_channel": cka / 2}
            rows.append({**common, "site": f"blocks.{block - 1}.out", "cka_input": cka, "block_output": True})
            rows.append({**common, "site": f"blocks.{block - 1}.mlp.act", "surviving": 0.5, "block_output": False})
    frame = pd.DataFrame(rows).assign(preset="smoke", dataset="synthetic", layer=lambda f: f["block"])
    return frame.reindex(columns=list(analysis.COLUMNS))


def test_the_vit_shows_from_under_pnnh_vit_as_the_wide_line_the_caption_names():
    figure = analysis.draw(_blocks())
    assert ("PNNH-ViT at its defaults computes the ViT's function, so its lines cover the ViT's; the ViT: the wide "
            "line") in caption(figure)
    widths = {line.get_gid(): line.get_linewidth() for line in figure.axes[0].lines}
    assert widths["vit"] > 2 * widths["pnnhvit"]
    apart = analysis.draw(_blocks(pnnh_shift=0.05))
    assert "the ViT's function" not in caption(apart)
