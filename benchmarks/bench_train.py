"""Training throughput of `dissipate train` itself: plain, residual and PNNH (fused, as it trains by default, and
explicit, its +/- pair materialised) at equal depth, measured in one run.

Each model trains for --epochs epochs through `dissipate.train.train` (on-device data, crop and flip, the optimizer
step, and on CUDA bf16 autocast and channels_last), and the last epoch's images/s and peak memory are reported, with
the ratios PNNH/ResNet and plain/ResNet from this run on this device. The first epoch carries the start-up costs
(cuDNN's algorithm search, the allocator, torch.compile), so run at least two.
A configuration that runs out of memory is reported as OOM and the run goes on.

    python benchmarks/bench_train.py                                      # CIFAR 20/56/110 and 18/34, on the GPU
    python benchmarks/bench_train.py --depths 20 56 --subset 1024 --epochs 2  # quick, on a CPU
"""

from __future__ import annotations

import argparse

import torch
from bench_models import describe_device

from dissipate.analyses.throughput import measure
from dissipate.models.resnet import CIFAR_DEPTHS


# (family, label suffix, model options): PNNH as it trains by default (fused), and with its +/- pair materialised
VARIANTS = (("resnet", "", {}), ("plain", "", {}), ("pnnh", "", {}), ("pnnh", " (explicit)", {"impl": "explicit"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110, 18, 34])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--subset", type=int, default=8192, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--imagenet-size", type=int, default=64, help="image size for depths 18 and 34")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True

    print(f"device: {describe_device(device)}; {args.data}, {args.subset} images per epoch, batch {args.batch_size}, "
          f"last of {args.epochs} epochs; {'bf16 autocast, channels_last' if on_cuda else 'fp32'}"
          f"{', torch.compile' if args.compile else ', eager'}\n")
    print("| model | px | train img/s | peak MiB | vs resnet |")
    print("|---|---|---|---|---|")
    for depth in args.depths:
        image_size = 32 if depth in CIFAR_DEPTHS else args.imagenet_size
        rows = {f"{family}{depth}{suffix}": measure(f"{family}{depth}", image_size, args.batch_size, args.subset,
                                                    args.epochs, args.device, args.compile, data=args.data, **options)
                for family, suffix, options in VARIANTS}
        base = rows[f"resnet{depth}"]
        for name, row in rows.items():
            if row is None:
                print(f"| {name} | {image_size} | OOM | OOM | - |", flush=True)
                continue
            ratio = f"{row['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
            peak = f"{row['peak_mem_mb']:.0f}" if on_cuda else "-"  # on the CPU: the process's peak so far
            print(f"| {name} | {image_size} | {row['images_per_s']:.0f} | {peak} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
