import shutil
import urllib.error
import warnings

import pytest
import torch

from dissipate.metrics import DISTS_FILES, DistsUnavailable, load_dists, ssim_per_image
from tests.helpers import Exploit


def test_ssim_is_one_for_identical_images_and_lower_for_noise():
    x = torch.rand(4, 3, 32, 32)
    assert ssim_per_image(x, x) == pytest.approx(torch.ones(4))
    assert (ssim_per_image(x, torch.rand(4, 3, 32, 32)) < 0.2).all()


@pytest.mark.parametrize("size, channels", [(8, 1), (32, 3), (600, 1)])  # 600 px: piq pools by 2 first
def test_ssim_is_piqs(size, channels):
    import piq

    x, y = torch.rand(2, channels, size, size), torch.rand(2, channels, size, size)
    y[0] = (x[0] + 0.1 * y[0]).clamp(0, 1)
    kernel_size = min(11, (size - 1) // 2 * 2 + 1)
    torch.testing.assert_close(ssim_per_image(x, y), piq.ssim(x, y, data_range=1.0, kernel_size=kernel_size,
                                                              reduction="none"))


def test_ssim_narrows_its_window_for_small_images():
    x = torch.rand(2, 1, 8, 8)
    assert ssim_per_image(x, x).shape == (2,)


def test_dists_without_its_weight_files_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DistsUnavailable) as unavailable:
        load_dists(download=False)
    message = str(unavailable.value)
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert all(name in message for name in DISTS_FILES) and "\n" not in message


def test_dists_runs_piqs_code_on_synthetic_weight_files(monkeypatch, dists_torch_home):
    monkeypatch.setenv("TORCH_HOME", str(dists_torch_home))
    dists = load_dists(download=False)
    x = torch.rand(3, 3, 32, 32)
    assert dists(x, x) == pytest.approx(torch.zeros(3), abs=1e-5)  # alpha and beta sum to 1
    farther = dists(x, torch.rand(3, 3, 32, 32))
    nearer = dists(x, (x + 0.05 * torch.randn_like(x)).clamp(0, 1))
    assert (farther > nearer).all() and (nearer > 0).all()


def test_dists_weight_files_that_do_not_load_are_reported(monkeypatch, tmp_path):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in DISTS_FILES:
        (checkpoints / name).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DistsUnavailable, match="do not load"):
        load_dists(download=False)


def test_dists_matches_piqs_own_constructor_on_the_same_files(monkeypatch, dists_torch_home):
    """load_dists builds piq's DISTS from tensors it read itself; piq.DISTS() (which unpickles through torch.hub,
    harmless on these test files) must give the same network."""
    import piq

    monkeypatch.setenv("TORCH_HOME", str(dists_torch_home))
    ours = load_dists(download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = piq.DISTS(reduction="none").eval()
    assert ours.layers == theirs.layers and len(ours.weights) == len(theirs.weights) == 12
    assert all(torch.equal(a, b) for a, b in zip(ours.weights, theirs.weights, strict=True))
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.allclose(ours(x, y), theirs(x, y), atol=1e-6)


@pytest.mark.parametrize("hostile", list(DISTS_FILES))
def test_a_dists_weight_file_that_would_run_code_is_refused_unrun(monkeypatch, tmp_path, dists_torch_home, hostile):
    home = tmp_path / "home"
    shutil.copytree(dists_torch_home, home)
    victim = tmp_path / "created_by_pickle"
    torch.save({"alpha": Exploit(victim)}, home / "hub" / "checkpoints" / hostile)
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(DistsUnavailable, match="do not load .*could run code"):
        load_dists(download=False)
    assert not victim.exists()


def test_a_failed_fetch_is_tried_once_and_said_in_one_short_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fetched = []

    def no_network(url, dst, progress=True):
        fetched.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    messages = []
    for _ in range(3):
        with pytest.raises(DistsUnavailable) as unavailable:
            load_dists(download=True)
        messages.append(str(unavailable.value))
    cache = str(tmp_path / "hub" / "checkpoints")
    assert len(fetched) == 1 and all(len(m.replace(cache, "")) < 200 and "\n" not in m for m in messages)
    assert "fetching its weights" in messages[0] and "fetching them failed before" in messages[2]
