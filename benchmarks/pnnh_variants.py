"""Which PNNH trains like ResNet: each coder and stage transition trained with one recipe, beside resnet and plain.

Every variant trains through `dissipate.train.train` with the same recipe (SGD, nesterov, warm-up then cosine) and
is then probed on its test images for the pre-activation moments. The table gives the last epoch's train loss, the
best test accuracy, whether the run diverged, and the largest |pre_mean| of any site of the trained net: the first
PNNH's coder let it grow to 8e9 at depth 110, where resnet110's stays near 5.

    python benchmarks/pnnh_variants.py                                   # depth 110, Fashion-MNIST, lr 0.1
    python benchmarks/pnnh_variants.py --depth 20 --subset 1024 --epochs 2 --lr 0.2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from dissipate.checkpoint import load_model
from dissipate.data import load_data
from dissipate.errors import TrainingDiverged
from dissipate.probe import probe
from dissipate.train import TrainConfig, train

# (label, family, model options)
VARIANTS = (
    ("resnet", "resnet", {}),
    ("plain", "plain", {}),
    ("pnnh free, plain transitions (v1)", "pnnh", {"coder": "free", "downsample_block": "plain"}),
    ("pnnh orthogonal, plain transitions", "pnnh", {"coder": "orthogonal", "downsample_block": "plain"}),
    ("pnnh free, pnnh transitions", "pnnh", {"coder": "free", "downsample_block": "pnnh"}),
    ("pnnh orthogonal, pnnh transitions", "pnnh", {"coder": "orthogonal", "downsample_block": "pnnh"}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=110)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=4096)
    parser.add_argument("--test-subset", type=int, default=2000, help="test images scored after each epoch")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", help="labels of the variants to run (all by default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"depth {args.depth}, {args.data}, {args.subset} images ({args.test_subset} to test), {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr} (warm-up {args.warmup} epochs, cosine), {args.device}\n")
    print("| variant | last train loss | best test acc | largest abs(pre_mean) | minutes |")
    print("|---|---|---|---|---|")
    test_images = load_data(args.data, length=256)
    for label, family, options in VARIANTS:
        if args.only and label not in args.only:
            continue
        config = TrainConfig(model=f"{family}{args.depth}", data=args.data, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, subset=args.subset,
                             test_subset=args.test_subset, device=args.device, model_kwargs=options)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            try:
                history = train(config, out)
            except TrainingDiverged as error:
                print(f"| {label} | diverged in epoch {error.epoch} | - | - | "
                      f"{(time.perf_counter() - started) / 60:.1f} |", flush=True)
                continue
            model, _ = load_model(f"{out}/latest.pt")
            frame = probe(model, test_images, num_images=256, metrics=("moments",), device=args.device)
        best = max(row["test_acc"] for row in history)
        print(f"| {label} | {history[-1]['train_loss']:.3f} | {100 * best:.1f}% | {frame['pre_mean'].abs().max():.3g} "
              f"| {(time.perf_counter() - started) / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()
