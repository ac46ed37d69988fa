import pytest
import torch
import torch.nn.functional as F

from dissipate.errors import InvalidArgumentError
from dissipate.metrics import LinearReadout, reconstruction_r2


def test_features_that_contain_the_input_linearly_recover_it():
    images = torch.rand(32, 3, 16, 16)
    mixed = torch.einsum("dk,bkhw->bdhw", torch.randn(8, 3), images)  # a 1x1 map of the image
    features = torch.cat([mixed, torch.randn(32, 24, 16, 16)], dim=1)
    assert reconstruction_r2(features, images) > 0.999


def test_independent_features_recover_nothing():
    images = torch.rand(32, 3, 16, 16)
    r2 = reconstruction_r2(torch.randn(32, 64, 8, 8), images)
    assert -0.02 < r2 < 0.02


def test_low_resolution_features_recover_the_low_pass_image():
    """Features = the image average-pooled by 4: the best a per-pixel read-out of their bilinear upsampling can do is
    that upsampling itself, so R^2 is at least its R^2 (up to the ridge) and well below 1."""
    images = F.avg_pool2d(torch.rand(64, 1, 4, 4), 1).repeat_interleave(4, -1).repeat_interleave(4, -2)
    images = (images + 0.1 * torch.rand(64, 1, 16, 16)).clamp(0, 1)
    pooled = F.avg_pool2d(images, 4)
    upsampled = F.interpolate(pooled, size=(16, 16), mode="bilinear", align_corners=False)
    held_out = images[1::2]
    floor = 1 - (upsampled[1::2] - held_out).square().sum() / (held_out - held_out.mean()).square().sum()
    r2 = reconstruction_r2(pooled, images)
    assert floor.item() - 0.01 <= r2 < 0.99


def test_streamed_statistics_equal_an_explicit_least_squares_fit():
    images, features = torch.rand(16, 3, 16, 16), torch.randn(16, 8, 4, 4)
    readout = LinearReadout(penalties=(0.0,))
    for part in range(0, 16, 5):  # uneven batches
        readout.update(features[part:part + 5], images[part:part + 5], torch.arange(part, min(part + 5, 16)))
    up = F.interpolate(features, size=(16, 16), mode="bilinear", align_corners=False)
    design = torch.cat([up, torch.ones_like(up[:, :1])], 1).permute(0, 2, 3, 1).reshape(16, -1, 9).double()
    target = images.permute(0, 2, 3, 1).reshape(16, -1, 3).double()
    fit = torch.arange(16) % 2 == 0
    weights = torch.linalg.lstsq(design[fit].reshape(-1, 9), target[fit].reshape(-1, 3)).solution
    assert readout.weights.numpy() == pytest.approx(weights.numpy(), abs=1e-5)
    held_x, held_y = design[~fit].reshape(-1, 9), target[~fit].reshape(-1, 3)
    r2 = 1 - (held_x @ weights - held_y).square().sum() / (held_y - held_y.mean(0)).square().sum()
    assert readout.r2() == pytest.approx(r2.item(), abs=1e-6)
    reconstruction = readout.reconstruct(features[~fit], (16, 16))
    assert reconstruction.shape == (8, 3, 16, 16)
    assert reconstruction.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy() == pytest.approx(
        (held_x @ weights).numpy(), abs=1e-5)


def test_vectors_are_one_pixel_maps_and_tokens_off_a_grid_have_no_readout():
    images = torch.rand(16, 3, 8, 8)
    assert reconstruction_r2(images.mean((2, 3)), images) > 0  # per-image mean colour explains some variance
    readout = LinearReadout()
    readout.update(torch.randn(16, 7, 4), images, torch.arange(16))  # 7 tokens: no square grid, with or without one
    assert readout.weights is None and readout.reconstruct(torch.randn(2, 7, 4), (8, 8)) is None


@pytest.mark.parametrize("class_token", [False, True])
def test_tokens_read_out_as_the_feature_map_of_their_patches(class_token):
    """Tokens laid out row by row over a 4x4 grid of patches (as a ViT's patch embedding makes them), with or without
    a class token first, give the read-out of that 4x4 feature map."""
    torch.manual_seed(0)
    images = torch.rand(16, 3, 8, 8)
    feature_map = 0.1 * torch.randn(16, 6, 4, 4) + F.avg_pool2d(images, 2).repeat(1, 2, 1, 1)
    tokens = feature_map.flatten(2).transpose(1, 2)  # (B, 16, 6)
    if class_token:
        tokens = torch.cat([torch.randn(16, 1, 6), tokens], dim=1)
    readouts = [LinearReadout() for _ in range(2)]
    for readout, feats in zip(readouts, (feature_map, tokens), strict=True):
        readout.update(feats, images, torch.arange(16))
    assert readouts[0].r2() > 0.05  # the patches' mean colours explain some of each pixel
    assert readouts[1].r2() == pytest.approx(readouts[0].r2(), abs=1e-6)
    with pytest.raises(InvalidArgumentError, match="same samples"):
        reconstruction_r2(torch.randn(4, 2, 8, 8), images)


def test_channel_means_far_above_the_spread_leave_the_read_out_as_it_is():
    """The same features with channel offsets 1000 times their spread (as trained nets carry): the intercept absorbs
    any offset, so R^2 and the reconstructed images stay those of the centred features."""
    images = torch.rand(32, 3, 16, 16)
    mixed = torch.einsum("dk,bkhw->bdhw", torch.randn(8, 3), images)
    features = torch.cat([mixed, torch.randn(32, 24, 16, 16)], dim=1)
    offset = 1000 * features.std((0, 2, 3))[None, :, None, None]
    readouts = [LinearReadout(penalties=(1e-3,)) for _ in range(2)]
    for readout, feats in zip(readouts, (features, features + offset), strict=True):
        for part in range(0, 32, 8):
            readout.update(feats[part:part + 8], images[part:part + 8], torch.arange(part, part + 8))
    assert readouts[1].r2() > 0.999 and readouts[1].r2() == pytest.approx(readouts[0].r2(), abs=1e-4)
    shown = [r.reconstruct(f[:4], (16, 16)) for r, f in zip(readouts, (features, features + offset), strict=True)]
    assert torch.allclose(*shown, atol=1e-3)
