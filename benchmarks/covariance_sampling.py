"""Would a subsample of positions do for the rank's channel covariance? Each site's exact covariance (every position of
every image, as the probe computes it) against the covariance of a seeded random subset of positions per image:
rho * C / B positions per image for a site of C channels in batches of B, so that each batch gives rho samples per
channel (a site with no more positions than that is left exact, and not counted). Prints the worst relative error of
erank and srank, and the worst absolute error of nrank, over the sites that were subsampled.

    python benchmarks/covariance_sampling.py resnet20 --rhos 16 64 256               # at initialisation, 32 px
    python benchmarks/covariance_sampling.py torchvision:resnet50 --image-size 224 --num-images 64
    python benchmarks/covariance_sampling.py RUN/best.pt --data fashion-mnist         # a trained checkpoint
"""

from __future__ import annotations

import argparse

import torch

from dissipate.checkpoint import load_model
from dissipate.data import load_data
from dissipate.metrics._validate import channels_by_position
from dissipate.metrics.rank import ChannelCovariance, effective_rank, numerical_rank, singular_values, stable_rank
from dissipate.models import create_model
from dissipate.probe import calibrate_batchnorm
from dissipate.record import record


class SampledCovariance(ChannelCovariance):
    """ChannelCovariance over rho * C / B positions per image, drawn without replacement by a seeded generator."""

    def __init__(self, rho: int):
        super().__init__()
        self.rho, self.sampled = rho, False
        self.generator = torch.Generator().manual_seed(0)

    def update(self, features: torch.Tensor) -> None:
        x = channels_by_position(features.detach().float())  # (B, C, N)
        batch, channels, positions = x.shape
        keep = -(-self.rho * channels // batch)
        if keep < positions:
            self.sampled = True
            chosen = torch.rand(batch, positions, generator=self.generator).argsort(-1)[:, :keep]
            x = x.gather(2, chosen[:, None].expand(batch, channels, keep))
        super().update(x[..., None])  # (B, C, N, 1): a map of N positions


def ranks(covariance: ChannelCovariance) -> tuple[float, int, float]:
    sigma = singular_values(covariance.covariance())
    return effective_rank(sigma), numerical_rank(sigma), stable_rank(sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model name, or a checkpoint (.pt)")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rhos", type=int, nargs="+", default=[64, 256, 1024])
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model.endswith(".pt"):
        model, _ = load_model(args.model)
        data = load_data(args.data, in_chans=model.spec.in_chans)
    else:
        model = create_model(args.model, image_size=args.image_size)
        in_chans = getattr(getattr(model, "spec", None), "in_chans", 3)
        data = load_data(args.data, image_size=args.image_size, in_chans=in_chans, length=args.num_images)
    images = torch.stack([data.dataset[i][0] for i in range(args.num_images)])
    batches = [data.normalize(x) for x in images.split(args.batch_size)]
    if not args.model.endswith(".pt"):
        calibrate_batchnorm(model, batches)  # at initialisation, as the probe calibrates it
    model.eval()
    streams: dict[str, list[ChannelCovariance]] = {}

    def on_site(site, pre: torch.Tensor, post: torch.Tensor) -> None:
        for stream in streams.setdefault(site.name, [ChannelCovariance(), *map(SampledCovariance, args.rhos)]):
            stream.update(post)

    with torch.no_grad(), record(model, on_site):
        for x in batches:
            model(x)
    print(f"{args.model}, {args.num_images} images of {data.name} at {images.shape[-1]} px, batch {args.batch_size}, "
          f"{len(streams)} sites")
    print("| rho (samples per channel per batch) | sites subsampled | erank, worst rel. | nrank, worst abs. | "
          "srank, worst rel. |")
    print("|---|---|---|---|---|")
    for index, rho in enumerate(args.rhos, start=1):
        errors = []
        for exact, *sampled in streams.values():
            if sampled[index - 1].sampled:
                (e0, n0, s0), (e, n, s) = ranks(exact), ranks(sampled[index - 1])
                errors.append((abs(e / e0 - 1), abs(n - n0), abs(s / s0 - 1)))
        worst = [max(column) for column in zip(*errors)] if errors else [0.0, 0, 0.0]
        print(f"| {rho} | {len(errors)} of {len(streams)} | {100 * worst[0]:.2f}% | {worst[1]} | "
              f"{100 * worst[2]:.2f}% |")


if __name__ == "__main__":
    main()
