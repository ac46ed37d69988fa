import torch

from dissipate.analyses import RECIPES
from dissipate.analyses import dissipation_curves as analysis
from dissipate.models import create_model
from tests.helpers import count_activation_calls


def activation_sites(model: str, image_size: int) -> int:
    net = create_model(model, image_size=image_size).eval()
    return sum(count_activation_calls(net, torch.zeros(2, 3, image_size, image_size)).values())


def test_one_row_per_site_of_every_model_probed_at_init_and_trained(result):
    frame = result(analysis.NAME)
    assert list(frame.columns) == list(analysis.COLUMNS)
    expected = {(s, v.label) for v, s in analysis.probes("smoke")}
    assert set(zip(frame["state"], frame["model"], strict=True)) == expected
    recipe = RECIPES["smoke"]
    for (state, model), rows in frame.groupby(["state", "model"]):
        size = recipe.init_image_size if state == "init" else recipe.image_size
        assert rows["layer"].tolist() == list(range(1, activation_sites(model, size) + 1)), (state, model)
    assert frame["cka_input"].between(-0.1, 1 + 1e-6).all() and frame["recon_r2"].le(1 + 1e-6).all()
    assert frame["dists_input"].isna().all()  # DISTS is not part of the smoke preset


def test_plain_keeps_less_of_the_input_than_resnet_at_the_last_site_at_init(result):
    frame = result(analysis.NAME)
    last = frame[frame["state"] == "init"].groupby("model").tail(1).set_index("model")
    assert last.loc["plain32", "cka_input"] < 0.5 * last.loc["resnet32", "cka_input"]
    assert last.loc["plain32", "recon_r2"] < last.loc["resnet32", "recon_r2"] - 0.01


def test_the_headline_quotes_every_cifar_models_last_site(result):
    lines = analysis.headline(result(analysis.NAME))
    assert any(line.startswith("init") and "plain20" in line for line in lines)
    assert any(line.startswith("trained") and "pnnh32" in line for line in lines)
