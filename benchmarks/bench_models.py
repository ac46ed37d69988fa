"""Throughput of plain, residual and PNNH nets at equal depth: what the coder costs, measured in one run.

For each depth, times the forward pass (inference) and the training step (forward, backward, SGD with nesterov) on
random data of the right shape, and prints images/s, peak memory and the ratios PNNH/ResNet and plain/ResNet,
all from this run on this device. On CUDA it uses bf16 autocast and channels_last, as training will.
The CIFAR family runs at 32 px (cifar stem); 18 and 34 at --imagenet-size with the imagenet stem.
A configuration that runs out of memory is reported as OOM and the run goes on.

    python benchmarks/bench_models.py                                  # CIFAR 20/56/110 and 18/34
    python benchmarks/bench_models.py --depths 20 56 --batch-size 64 --imagenet-size 64   # quick, on a CPU
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from dissipate.models import create_model
from dissipate.models.resnet import CIFAR_DEPTHS

FAMILIES = ("resnet", "plain", "pnnh")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, device: torch.device, batch_size: int, image_size: int, steps: int, warmup: int,
            compile_model: bool = False) -> dict:
    """Images/s for inference and for training steps, and the peak memory of training (CUDA only)."""
    stem = "cifar" if image_size < 64 else "imagenet"
    model = create_model(name, num_classes=10, stem=stem).to(device)
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if on_cuda else torch.contiguous_format  # NHWC: tensor-core friendly convs
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    if compile_model:  # fuses the small element-wise kernels that dominate narrow nets in eager mode
        model = torch.compile(model)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda)  # bf16: no loss scaling needed

    def train_step() -> None:
        with autocast:
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad(), autocast:
            model(images)

    result = {}
    for mode, step in (("infer", infer_step), ("train", train_step)):
        model.train(mode == "train")
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            step()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        result[f"{mode}_img_s"] = steps * batch_size / (time.perf_counter() - start)
        if on_cuda:
            result[f"{mode}_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110, 18, 34])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--imagenet-size", type=int, default=224, help="image size for depths 18 and 34")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model (warm-up includes compiling)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv algorithms

    print(f"device: {describe_device(device)}; batch {args.batch_size}; {args.steps} timed steps "
          f"after {args.warmup} warm-up; {'bf16 autocast, channels_last' if device.type == 'cuda' else 'fp32'}"
          f"{', torch.compile' if args.compile else ', eager'}\n")
    # untimed: the first model run in a process also pays for library start-up (cuDNN, oneDNN, the allocator)
    first_depth = args.depths[0]
    measure(f"resnet{first_depth}", device, args.batch_size, 32 if first_depth in CIFAR_DEPTHS else args.imagenet_size,
            steps=1, warmup=args.warmup, compile_model=args.compile)
    print("| model | px | infer img/s | train img/s | train peak MiB | train vs resnet |")
    print("|---|---|---|---|---|---|")
    for depth in args.depths:
        image_size = 32 if depth in CIFAR_DEPTHS else args.imagenet_size
        results = {}
        for family in FAMILIES:
            try:
                results[family] = measure(f"{family}{depth}", device, args.batch_size, image_size, args.steps,
                                          args.warmup, args.compile)
            except torch.cuda.OutOfMemoryError:
                results[family] = None
                torch.cuda.empty_cache()
        for family in FAMILIES:
            r, base = results[family], results["resnet"]
            if r is None:
                print(f"| {family}{depth} | {image_size} | OOM | OOM | OOM | - |")
                continue
            ratio = f"{r['train_img_s'] / base['train_img_s']:.2f}x" if base else "-"
            peak = f"{r['train_peak_mib']:.0f}" if "train_peak_mib" in r else "-"
            print(f"| {family}{depth} | {image_size} | {r['infer_img_s']:.0f} | {r['train_img_s']:.0f} | {peak} "
                  f"| {ratio} |", flush=True)


if __name__ == "__main__":
    main()
