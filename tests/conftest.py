import pytest
import torch
from hypothesis import settings

# the same examples on every run: a failure in CI reproduces on the next machine
settings.register_profile("dissipate", derandomize=True)
settings.load_profile("dissipate")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No test touches the network or the user's caches: downloads are off, and the data dir and torch's hub cache
    (where DISTS looks for its weights) are empty temporary directories unless a test fills them."""
    monkeypatch.setenv("DISSIPATE_OFFLINE", "1")
    monkeypatch.setenv("DISSIPATE_DATA", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))


@pytest.fixture(scope="session")
def dists_torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds DISTS's two weight files, synthetic but of the real shapes: piq's own
    DISTS code loads them as it loads the real ones. VGG16's convolutions are random (so features differ between
    images); its classifier, unused by DISTS, is zero. alpha and beta are positive and sum to 1, as trained."""
    from torchvision.models import vgg16

    home = tmp_path_factory.mktemp("dists_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vgg16().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=generator) * (2 / max(s[1:].numel(), 1)) ** 0.5 if k.startswith("features")
                 else torch.zeros(s)) for k, s in shapes.items()}
    torch.save(state, checkpoints / "vgg16-397923af.pth")
    weights = torch.rand(2, 1, 1475, 1, 1, generator=generator)  # 1475 = 3 + 64 + 128 + 256 + 512 + 512 channels
    weights /= weights.sum()
    torch.save({"alpha": weights[0], "beta": weights[1]}, checkpoints / "dists_weights.pt")
    return home
