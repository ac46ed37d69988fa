import json

import numpy as np
import pandas as pd
from PIL import Image

from dissipate import __version__
from dissipate.plots import _probe_panels, plot_bound_check, plot_probe, probe_figure, probes_figure
from dissipate.probe import read_probes
from tests.helpers import run_cli


def probe_frame(with_dists: bool) -> pd.DataFrame:
    depth = np.arange(1, 7)
    frame = pd.DataFrame({"site": [f"s{d}" for d in depth], "depth": depth, "kind": ["plain", "residual"] * 3,
                          "channels": 16, "surviving": 0.5, "erank": 8.0, "cka_input": 1 / depth,
                          "recon_r2": 1 / depth ** 2, "dists_input": 0.1 * depth if with_dists else np.nan,
                          "dists_noise": 0.7 if with_dists else np.nan})
    frame.attrs.update(model="m", data="synthetic")
    return frame


def test_probe_figure_has_a_panel_per_available_column(tmp_path):
    assert [title for title, _, _ in _probe_panels(probe_frame(False))] == [
        "surviving fraction", "effective rank / channels", "linear CKA with the input", "linear read-out R$^2$"]
    panels = _probe_panels(probe_frame(True))
    assert panels[-1][0] == "DISTS(input, read-out)" and panels[-1][2] == "dists_noise"
    assert (panels[1][1] == 0.5).all()  # erank / channels


def test_every_probe_panel_spans_at_least_zero_to_one_so_noise_is_not_drawn_as_structure():
    frame = probe_frame(True).assign(surviving=0.5 + 0.005 * np.sin(np.arange(6)), recon_r2=-0.3)
    axes = [axis for axis in probe_figure(frame).axes if axis.get_visible()]
    assert len(axes) == 5
    for axis in axes:
        low, high = axis.get_ylim()
        assert low <= 0 and high >= 1, (axis.get_title(), low, high)
    assert axes[3].get_ylim()[0] < -0.3  # a negative R^2 stays in view


def test_probe_figure_is_written_as_png(tmp_path):
    for with_dists in (False, True):
        path = tmp_path / f"probe{with_dists}.png"
        plot_probe(probe_frame(with_dists), path)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 800
    assert not list(tmp_path.glob(".*.tmp"))


def test_bound_check_figure_has_a_panel_per_model_as_png_or_pdf(tmp_path):
    rows = [{"level": level, "model": model, "site": f"s{i}", "kind": kind, "surv_meas": 0.6, "surv_bound": 0.2,
             "holds": i != 2} for level, model, kind in (("init", "a", "residual"), ("init", "b", "plain"))
            for i in range(4)]
    plot_bound_check(pd.DataFrame(rows), tmp_path / "bound.png")
    with Image.open(tmp_path / "bound.png") as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # two panels side by side
    plot_bound_check(pd.DataFrame(rows), tmp_path / "bound.pdf")
    assert (tmp_path / "bound.pdf").read_bytes().startswith(b"%PDF")


def write_probe(folder, metrics="survival,rank,cka", **config):
    """A probe's files as `dissipate probe` writes them (probe.csv and probe_config.json), from a tiny real probe."""
    from dissipate.models import create_model
    from dissipate.probe import probe, save_probe

    frame = probe(create_model("resnet20"), "synthetic", num_images=8, metrics=(metrics,))
    save_probe(frame, folder, title="a probe", **config)  # version="0.0.9": as another dissipate would write it
    assert json.loads((folder / "probe_config.json").read_text())["version"] == config.get("version", __version__)
    return folder / "probe.csv"


def test_dissipate_plot_overlays_probes_and_the_epochs_of_a_training_runs_probes(tmp_path, capsys):
    a, b = write_probe(tmp_path / "plain"), write_probe(tmp_path / "residual")
    epochs = pd.concat([pd.read_csv(a).assign(epoch=e) for e in (0, 1, 2)])
    (tmp_path / "run").mkdir()
    epochs[["epoch", *pd.read_csv(a).columns]].to_csv(tmp_path / "run" / "probes.csv", index=False)
    code, out, err = run_cli(capsys, "plot", str(a), str(b), str(tmp_path / "run" / "probes.csv"),
                             "--out", str(tmp_path / "compare.png"))
    assert code == 0, err
    assert "5 probes (plain; residual; run, epoch 0; run, epoch 1; run, epoch 2)" in out
    assert Image.open(tmp_path / "compare.png").size[0] > 500
    series = read_probes([a, b])
    figure = probes_figure(series)
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["surviving fraction", "effective rank / channels",
                                                   "linear CKA with the input"]
    assert all(len(axis.lines) == 2 and axis.get_ylim()[1] - axis.get_ylim()[0] >= 1 for axis in axes)
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["plain", "residual"]


def test_probes_that_do_not_compare_are_one_sentence(tmp_path, capsys):
    a = write_probe(tmp_path / "a")
    cases = [(write_probe(tmp_path / "b", metrics="survival,cka"), "different metric families"),
             (write_probe(tmp_path / "c", version="0.0.9"), "different versions of dissipate"),
             (tmp_path / "log.csv", "is not a probe's CSV"), (tmp_path / "missing.csv", "cannot be read")]
    (tmp_path / "log.csv").write_text("epoch,train_loss\n1,2.3\n")
    for other, named in cases:
        code, _, err = run_cli(capsys, "plot", str(a), str(other), "--out", str(tmp_path / "x.png"))
        assert code == 2 and err.count("\n") == 1 and named in err and str(other) in err, err
    assert not (tmp_path / "x.png").exists()
