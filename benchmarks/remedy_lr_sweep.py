"""A short learning-rate sweep of the shortcut-free remedies at depth 20, each by its family's recipe (optimizer, weight
decay, warm-up capped at half the run), on the cpu preset's data: which rate each family trains best at, so that the
remedies analysis does not report a family as untrainable because of its rate. One run per rate, seed 0.

    python benchmarks/remedy_lr_sweep.py                       # 2 epochs of 2048 Fashion-MNIST images each
    python benchmarks/remedy_lr_sweep.py --families tat --extra pln=false
    python benchmarks/remedy_lr_sweep.py --families tat --depth 56 --epochs 5 --rates 1e-4 3e-4

Prints one row per (model, options, rate): final train loss, test accuracy and seconds; the best rate of each is
marked. A run that diverges is a row too.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from dissipate.errors import TrainingDiverged
from dissipate.models import REMEDY_FAMILIES
from dissipate.train import TrainConfig, family_optimizer, train

RATES = {"sgd": (0.02, 0.05, 0.1, 0.2), "adamw": (3e-4, 1e-3, 3e-3)}


def sweep(model: str, options: dict, args: argparse.Namespace) -> list[dict]:
    rows = []
    for lr in args.rates or RATES[family_optimizer(model)]:
        config = TrainConfig(model=model, data=args.data, epochs=args.epochs, batch_size=64, subset=args.subset,
                             test_subset=1000, lr=lr, model_kwargs=options, device="cpu")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            try:
                last = train(config, out)[-1]
                row = {"train_loss": last["train_loss"], "test_acc": last["test_acc"]}
            except TrainingDiverged as error:
                row = {"train_loss": float("nan"), "test_acc": float("nan"), "note": f"diverged in {error.epoch}"}
        rows.append({"model": model, "options": options, "optimizer": config.optimizer, "lr": lr,
                     "seconds": time.perf_counter() - started, **row})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["plain", *REMEDY_FAMILIES])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--extra", nargs="*", default=[], help="KEY=VALUE model options for one more sweep of the "
                                                               "first family (tat pln=false: without PLN)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rates", type=float, nargs="+", help="these rates instead of the optimizer's RATES")
    args = parser.parse_args()
    runs = [(f"{family}{args.depth}", {}) for family in args.families]
    if args.extra:
        options = {k: {"true": True, "false": False}.get(v, v) for k, v in (item.split("=", 1) for item in args.extra)}
        runs.append((f"{args.families[0]}{args.depth}", options))
    print("| model | options | optimizer | lr | train loss | test acc | s |")
    print("|---|---|---|---|---|---|---|")
    for model, options in runs:
        rows = sweep(model, options, args)
        best = max((r for r in rows if r["test_acc"] == r["test_acc"]), key=lambda r: r["test_acc"], default=None)
        for r in rows:
            mark = " **best**" if r is best else f" ({r['note']})" if "note" in r else ""
            print(f"| {model} | {r['options'] or ''} | {r['optimizer']} | {r['lr']:g} | {r['train_loss']:.3f} | "
                  f"{100 * r['test_acc']:.1f}%{mark} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
