import numpy as np
import pandas as pd
from PIL import Image

from dissipate.plots import _probe_panels, plot_bound_check, plot_probe, probe_figure


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
