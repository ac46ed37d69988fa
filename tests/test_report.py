import pandas as pd
import pytest

from dissipate import report
from tests.helpers import run_cli


def frame(cka=(0.9, 0.5, 0.3, 0.1), dists=float("nan")) -> pd.DataFrame:
    return pd.DataFrame({"site": [f"s{i}" for i in range(len(cka))], "depth": range(1, len(cka) + 1),
                         "kind": "plain", "channels": 16, "surviving": 0.5, "dead": 0.0, "erank": 8.0,
                         "cka_input": cka, "recon_r2": [c / 2 for c in cka], "dists_input": dists})


def test_the_view_has_erank_per_channel_and_drops_dists_only_where_it_was_not_computed():
    shown = report.view(frame())
    assert list(shown.columns) == ["site", "depth", "kind", "surviving", "erank/ch", "cka_input", "recon_r2"]
    assert (shown["erank/ch"] == 0.5).all()
    assert "dists_input" in report.view(frame(dists=0.4))
    assert [line.split()[0] for line in report.legend(shown)] == ["kind", "surviving", "erank/ch", "cka_input",
                                                                  "recon_r2"]
    kind = next(line for line in report.legend(shown) if line.split()[0] == "kind")
    assert "1/2 at a stage transition" in kind and "zero-mean" in kind


def test_the_summary_names_the_first_mid_depth_and_last_sites_and_a_counterpart():
    lines = report.summary(frame(), "plain34")
    assert lines[0] == "input left (cka_input / recon_r2; about 0 is nothing left):"
    assert lines[1:4] == ["  first site  s0  0.900 / 0.450", "  mid-depth   s2  0.300 / 0.150",
                          "  last site   s3  0.100 / 0.050"]
    assert lines[4] == "compare: dissipate probe --model resnet34"
    assert report.summary(frame().drop(columns=["cka_input", "recon_r2"]), "plain34") == []
    staged = frame().assign(site=["act1", "layer2.1.act2", "layer3.0.act2", "layer3.1.act2"])
    marked = [line for line in report.summary(staged, "resnet20") if "stage transition" in line]
    assert len(marked) == 1 and "layer3.0.act2" in marked[0]


@pytest.mark.parametrize("model, other", [("plain56", "resnet56"), ("resnet18", "plain18"), ("pnnh20", "resnet20"),
                                          ("vgg16", None), ("plain1000", None), (None, None)])
def test_the_counterpart_is_the_other_family_at_the_same_depth(model, other):
    assert report.counterpart(model) == other


def test_the_probe_prints_the_view_the_legend_and_a_summary_that_matches_the_csv(capsys, tmp_path):
    code, out, err = run_cli(capsys, "probe", "--model", "plain20", "--num-images", "16", "--metrics",
                             "survival,rank,cka,recon", "--out", str(tmp_path))
    assert code == 0, err
    saved = pd.read_csv(tmp_path / "probe.csv")
    header = out.splitlines()[0].split()
    assert header == ["site", "depth", "kind", "surviving", "erank/ch", "cka_input", "recon_r2"]
    assert all(f"  {column}" in out for column in report.LEGEND if column != "dists_input")
    for name, index in (("first site", 0), ("mid-depth", len(saved) // 2), ("last site", len(saved) - 1)):
        row = saved.iloc[index]
        assert f"  {name:<10}  {row['site']:<13}  {row['cka_input']:.3f} / {row['recon_r2']:.3f}" in out
    assert "compare: dissipate probe --model resnet20" in out
