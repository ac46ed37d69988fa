import io

import pandas as pd
import pytest
import torch

from dissipate import bound_check
from dissipate.bound_check import (COLUMNS, check_monte_carlo, check_network, failures, findings, network_level,
                                   not_holding, verdicts)
from dissipate.checkpoint import load_model, save_checkpoint
from dissipate.errors import InvalidArgumentError
from dissipate.models import create_model
from dissipate.theory import MonteCarloConfig
from tests.helpers import run_cli

NETWORK = dict(num_images=128, batch_size=64, device="cpu")


def declared_sites(model: torch.nn.Module) -> set[str]:
    """The sites whose blocks declare the parts they sum: the ones with a prediction."""
    return {f"{name}.{site}" for name, module in model.named_modules()
            for site in getattr(module, "site_components", {})}


def at_init(name: str):
    torch.manual_seed(0)
    return check_network(create_model(name, image_size=32), "synthetic", **NETWORK)


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "pnnh20", "pnnh56", "resnet34"])
def test_level_2_every_residual_and_pnnh_bound_holds_at_initialisation(name):
    frame = at_init(name)
    assert list(frame.columns) == list(COLUMNS) and (frame["level"] == "init").all()
    assert set(frame.loc[verdicts(frame).notna(), "site"]) == declared_sites(create_model(name))
    frame = frame[verdicts(frame).notna()]
    assert frame["holds"].all() and failures(frame).empty
    summing = frame
    assert (summing["surv_meas"] >= summing["surv_bound"]).all()
    # a block whose shortcut keeps the input's positive mean has a real bound, not a trivial 0
    assert (summing["surv_bound"] > 0.1).sum() >= len(summing) // 3
    # means add exactly; variances add under independence, which random weights give to within a few percent
    assert (frame["mu_meas"] - frame["mu_pred"]).abs().max() < 1e-5
    assert (frame["var_meas"] / frame["var_pred"]).between(0.8, 1.2).all()


@pytest.mark.parametrize("name", ["plain20", "plain56"])
def test_level_2_plain_sites_have_no_prediction_and_survive_at_one_half(name):
    """A plain site declares no parts, so there is nothing to predict: no row holds by predicting itself."""
    frame = at_init(name)
    assert (frame["kind"] == "plain").all() and verdicts(frame).isna().all() and frame["surv_bound"].isna().all()
    assert failures(frame).empty and findings(frame).empty
    assert (frame["surv_meas"] - 0.5).abs().max() < 0.05


def wrecked_pnnh20() -> torch.nn.Module:
    """A pnnh20 with free coders as training could leave it, against the coder rule's assumption: coders shrunk to
    0.05 E (so E^T E x is 0.0025 x, not x), second learner layers near a constant -0.01, and BN statistics from data
    (not at init). (An orthogonal coder cannot shrink: E^T E stays a projection.)"""
    torch.manual_seed(0)
    model = create_model("pnnh20", coder="free")
    with torch.no_grad():
        model.train()(torch.rand(16, 3, 32, 32))
        for block in model.modules():
            if hasattr(block, "coder"):
                block.coder.mul_(0.05)
                block.bn2.weight.fill_(1e-3)
                block.bn2.bias.fill_(-0.01)
    return model


def test_level_3_a_failed_bound_is_a_finding_not_a_failure():
    frame = check_network(wrecked_pnnh20(), "synthetic", **NETWORK)
    assert (frame["level"] == "trained").all()  # its BN has seen data, so it is not at initialisation
    found = findings(frame)
    assert len(found) >= 2 and failures(frame).empty
    assert (found["kind"] == "pnnh").all() and found["site"].str.endswith(".act2").all()  # the coder's sites
    off_variance = ~(found["var_meas"] / found["var_pred"]).between(1 / bound_check.VAR_TOLERANCE,
                                                                    bound_check.VAR_TOLERANCE)
    assert ((found["margin"] < 0) | off_variance).all() and (found["margin"] < 0).sum() >= 2
    assert (found["mu_meas"] < found["mu_pred"] / 10).all()


def test_the_level_can_be_named_and_is_checked():
    model = create_model("resnet20")
    assert (check_network(model, "synthetic", level="trained", **NETWORK)["level"] == "trained").all()
    with pytest.raises(InvalidArgumentError, match="'init' or 'trained'"):
        check_network(model, "synthetic", level="monte-carlo", **NETWORK)


def test_monte_carlo_rows_lead_with_the_shared_columns():
    frame = check_monte_carlo(MonteCarloConfig(kinds=("plain",), inputs=("uniform",), depth=1, samples=200))
    assert list(frame.columns[:len(COLUMNS)]) == list(COLUMNS) and {"mu_se", "var_se", "surv_se"} <= set(frame)
    assert frame["holds"].all() and failures(frame).empty and findings(frame).empty


def test_a_variance_off_theorem_3_2_fails_level_2(monkeypatch):
    """Level 2 tests the variance too: a branch whose variance is counted twice leaves every bound standing (it
    only lowers them) but puts measured / predicted near 0.6, outside VAR_TOLERANCE."""
    from dissipate import probe as probe_module

    right = probe_module.component_moments
    monkeypatch.setattr(probe_module, "component_moments", lambda role, mean, var, s2, ratio=1.0: right(
        role, mean, 2 * var if role == "branch" else var, s2, ratio))
    frame = at_init("resnet20")
    failed = failures(frame)
    assert len(failed) == (frame["kind"] == "residual").sum() and (failed["margin"] >= 0).all()
    assert (failed["var_meas"] / failed["var_pred"] < 1 / bound_check.VAR_TOLERANCE).all()


def test_a_wrong_component_rule_fails_level_2(monkeypatch):
    """The check can fail on a real network: a coder rule that counts E^T E x twice (mean 2 mu_x) is caught."""
    from dissipate import probe as probe_module

    right = probe_module.component_moments
    monkeypatch.setattr(probe_module, "component_moments", lambda role, mean, var, s2, ratio=1.0: right(
        role, 2 * mean if role == "coder" else mean, var, s2, ratio))
    failed = failures(at_init("pnnh20"))
    assert len(failed) and set(failed["kind"]) == {"pnnh"}
    assert bound_check.MUST_HOLD == ("monte-carlo", "init")


def misscaled_vit6(scale: float = 1.0) -> torch.nn.Module:
    """vit6 at initialisation with `blocks.2.fc1`'s weights times `scale`: a net built wrong, which the check at
    level "init" must catch (a factory for `--model module:tests.test_bound_check:misscaled_vit6`)."""
    model = create_model("vit6")
    with torch.no_grad():
        model.blocks[2].fc1.weight.mul_(scale)
    return model


def bn_free_resnet20(scale: float = 1.0) -> torch.nn.Module:
    """resnet20 with every batch norm an identity and `layer2.0.conv1` times `scale`: a CNN that no BN calibration
    can mark as being at initialisation."""
    model = create_model("resnet20")
    for block in [model, *model.modules()]:
        for name, child in list(block.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(block, name, torch.nn.Identity())
    with torch.no_grad():
        model.layer2[0].conv1.weight.mul_(scale)
    return model


@pytest.mark.parametrize("factory, scale", [("misscaled_vit6", 3.0), ("misscaled_vit6", 1.0),
                                            ("bn_free_resnet20", 3.0), ("bn_free_resnet20", 1.0)])
def test_the_api_and_the_command_line_give_the_same_verdicts_at_initialisation(capsys, factory, scale):
    """A net without batch norm, made at initialisation, is checked at level "init" by both (the first version's API
    took it for trained, and passed a broken vit6); a row that does not hold is then a failure, and exit code 1."""
    name = f"module:tests.test_bound_check:{factory}"
    torch.manual_seed(0)
    api = check_network(create_model(name, scale=scale), "synthetic", **NETWORK)
    code, out, err = run_cli(capsys, "bound-check", "--model", name, "--model-arg", f"scale={scale}", "--format",
                             "csv", "--num-images", str(NETWORK["num_images"]), "--device", "cpu")
    cli = pd.read_csv(io.StringIO(out))
    assert (api["level"] == "init").all() and (cli["level"] == "init").all() and "level init:" in err
    assert api.attrs["level_reason"].startswith("no weights were loaded")
    assert list(verdicts(api)) == list(verdicts(cli)) and list(api["site"]) == list(cli["site"])
    failed = set(failures(api)["site"])
    assert failed == set(api.loc[not_holding(api), "site"]) and code == (1 if failed else 0)
    if factory == "misscaled_vit6":
        assert failed == ({"blocks.2.act"} if scale != 1 else set())


def test_a_vit_with_weights_loaded_is_checked_as_trained(tmp_path):
    model = misscaled_vit6(3.0)
    save_checkpoint(tmp_path / "vit6.pt", model)
    loaded, _ = load_model(tmp_path / "vit6.pt")
    frame = check_network(loaded, "synthetic", **NETWORK)
    assert (frame["level"] == "trained").all() and frame.attrs["level_reason"] == "weights were loaded into it"
    assert failures(frame).empty and "blocks.2.act" in set(findings(frame)["site"])
    assert network_level(create_model("vit6")) == ("init", "no weights were loaded into it and no batch norm has "
                                                           "seen data")


def test_a_model_that_create_model_did_not_make_needs_its_level_named():
    model = bn_free_resnet20()
    foreign = torch.nn.Sequential(*model.children())  # the same layers, and no record of loads
    with pytest.raises(InvalidArgumentError, match="pass level='init' or level='trained'"):
        check_network(foreign, "synthetic", **NETWORK)


def test_a_net_whose_activations_are_nan_fails_at_initialisation(capsys):
    """The probe gives a non-finite site NaN measurements and a note; the check must not take those for a site
    without a prediction, or for a declared output: a net that computes no numbers meets no bound."""
    name = "module:tests.test_bound_check:nan_resnet20"
    code, out, err = run_cli(capsys, "bound-check", "--model", name, "--format", "csv", "--num-images", "16",
                             "--device", "cpu")
    table = pd.read_csv(io.StringIO(out))
    assert code == 1 and "FAILED" in err and "not applicable" not in err
    assert (~table["holds"].astype("boolean")).all()  # every site after the NaN, the plain ones too


def nan_resnet20() -> torch.nn.Module:
    """resnet20 whose stem weights are finite but overflow: its activations are infinite, then NaN."""
    model = create_model("resnet20")
    with torch.no_grad():
        model.conv1.weight.fill_(3e38)
    return model


def test_a_net_checked_twice_is_still_at_initialisation():
    """The probe's BN calibration sets statistics, which is not training: the second check is at level init too."""
    model = create_model("plain20")
    first = check_network(model, "synthetic", **NETWORK)
    second = check_network(model, "synthetic", **NETWORK)
    assert (first["level"] == "init").all() and (second["level"] == "init").all()
