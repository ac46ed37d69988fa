"""What the probe costs: its time against a bare forward pass over the same images, and its peak memory as the
number of probe images grows, measured in one run on one device.

Timing: the same images (a tensor made once) go through (a) the model alone, batch by batch, without gradients,
(b) the probe with survival + moments + rank + CKA, (c) the probe with the linear read-out + SSIM (a second pass
over the scoring half), and with --split (d) the probe with each metric family alone, whose time above the forward
pass is that family's share. BN is calibrated once beforehand, so the probe times measure the recording and the
metrics, not the calibration pass. Each is timed --repeats times after --warmup untimed runs; the minimum counts.

Memory: each size runs in a fresh process that streams `synthetic` images (nothing held per image), and reports its
peak: CUDA's max_memory_allocated on a GPU, the process's peak RSS on a CPU.

    python benchmarks/bench_probe.py                         # plain34, 256 images at 32 px
    python benchmarks/bench_probe.py --model resnet20 --num-images 128 --repeats 1
    python benchmarks/bench_probe.py --model torchvision:resnet50 --image-size 224 --num-images 64 --split
    python benchmarks/bench_probe.py --model timm:vit_tiny_patch16_224 --image-size 224 --num-images 64

--model takes any name that `dissipate probe --model` takes: the registry's, torchvision:NAME, timm:NAME and
module:PACKAGE.MODULE:FACTORY.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from dissipate.data import load_data
from dissipate.models import create_model
from dissipate.probe import ProbeConfig, calibrate_batchnorm, probe, resolve_device

FAST = ("survival", "moments", "rank", "cka")
READOUT = ("recon", "ssim")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch {torch.__version__}"


def best_time(run, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):  # allocator, kernels, lazy imports
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def timing(args, device: torch.device) -> None:
    source = synthetic(args)
    images = torch.stack([source.dataset[i][0] for i in range(args.num_images)]).to(device)
    model = create_model(args.model, image_size=args.image_size).to(device)
    calibrate_batchnorm(model, (source.normalize(x) for x in images.split(args.batch_size)))

    @torch.no_grad()
    def bare() -> None:
        for x in images.split(args.batch_size):
            model(source.normalize(x))

    def probed(metrics) -> None:
        probe(model, source_like(images), ProbeConfig(metrics=metrics, num_images=args.num_images,
                                                      batch_size=args.batch_size, device=str(device),
                                                      calibrate_bn=False, download=False))

    def source_like(tensor):  # the same ImageData, over the tensor already made (no image generation timed)
        dataset = torch.utils.data.TensorDataset(tensor, torch.zeros(len(tensor), dtype=torch.long))
        return type(source)(source.name, dataset, source.num_classes, source.in_chans, source.image_size,
                            source.mean, source.std)

    forward = best_time(bare, device, args.repeats, args.warmup)
    print(f"{args.model}, {args.num_images} images at {args.image_size} px, batch {args.batch_size}, "
          f"{describe_device(device)}")
    print(f"{'what':<44} {'seconds':>8} {'vs forward':>10}")
    print(f"{'bare forward':<44} {forward:8.3f} {1:9.2f}x")
    for metrics in (FAST, READOUT, *([family] for family in FAST + READOUT if args.split)):
        seconds = best_time(lambda metrics=metrics: probed(metrics), device, args.repeats, args.warmup)
        print(f"{'probe: ' + ' + '.join(metrics):<44} {seconds:8.3f} {seconds / forward:9.2f}x", flush=True)


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def synthetic(args):
    """The benchmark's images: `synthetic`, streamed (drawn as they are read), at --image-size."""
    return load_data("synthetic", length=args.num_images, image_size=args.image_size)


def peak_memory_child(args, device: torch.device) -> None:
    model = create_model(args.model, image_size=args.image_size).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_memory(device)  # the model, torch and the libraries
    probe(model, synthetic(args), num_images=args.num_images, batch_size=args.batch_size, device=str(device),
          metrics=FAST + READOUT, download=False)
    print(json.dumps({"peak_mib": peak_memory(device) / 2 ** 20, "before_mib": before / 2 ** 20}))


def memory(args) -> None:
    what = "CUDA max_memory_allocated" if resolve_device(args.device).type == "cuda" else "peak RSS of the process"
    print(f"\npeak memory ({what}), probe with {' + '.join(FAST + READOUT)}:")
    peaks = {}
    for count in (args.num_images, 4 * args.num_images):
        command = [sys.executable, __file__, "--child", "--model", args.model, "--num-images", str(count),
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size), "--device",
                   args.device]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        peaks[count] = report["peak_mib"]
        print(f"  {count:>6} images: {peaks[count]:8.1f} MiB (before probing: {report['before_mib']:.1f} MiB)")
    print(f"  {4 * args.num_images} vs {args.num_images}: {peaks[4 * args.num_images] / peaks[args.num_images]:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="plain34")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--split", action="store_true", help="also time the probe with each metric family alone")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.child:
        peak_memory_child(args, device)
        return
    timing(args, device)
    if not args.no_memory:
        memory(args)


if __name__ == "__main__":
    main()
