"""Per-site metrics: one module per family, each a pure function plus a streaming accumulator.

The functions take whole tensors and state their definition; the accumulators (`update` per batch, `result` at the
end) compute the same numbers while keeping only per-channel statistics, so memory grows with a layer's width and
not with the number of probe images.
"""

from .cka import MinibatchCKA, hsic_unbiased, linear_cka
from .moments import Moments, moments
from .perceptual import DISTS_FILES, DistsUnavailable, load_dists, ssim_per_image
from .rank import ChannelCovariance, effective_rank, numerical_rank, singular_values, stable_rank
from .readout import LinearReadout, reconstruction_r2
from .survival import ChannelSurvival, always_on_fraction, dead_fraction, surviving_fraction

__all__ = ["ChannelCovariance", "ChannelSurvival", "DISTS_FILES", "DistsUnavailable", "LinearReadout",
           "MinibatchCKA", "Moments", "always_on_fraction", "dead_fraction", "effective_rank", "hsic_unbiased",
           "linear_cka", "load_dists", "moments", "numerical_rank", "reconstruction_r2", "singular_values",
           "ssim_per_image", "stable_rank", "surviving_fraction"]
