"""Where a training step's device time goes: torch.profiler over a few steady training steps of one
model (gpu_throughput's step: paper configuration, batch 16) under fp32 and bf16 autocast, grouped
into convolutions (forward and backward), matrix products, normalisation, the copies and casts that
autocast and layouts add, and everything else (elementwise, loss, optimizer), with the top operators.
It explains a bf16/fp32 ratio: bf16 speeds up only the tensor-core part.

    python benchmarks/gpu_profile.py [--model fcrn] [--channels-last] [--steps 5] [--top 12]
    python benchmarks/gpu_profile.py --device cpu --smoke      # the code path on CPU (tiny model)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict

import torch
from gpu_throughput import device_name, model_cfg, synchronizer, synthetic_batch, train_step, warm_up
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from depthtune.models import MODEL_NAMES, build

MATRIX_PRODUCTS = {"mm", "bmm", "addmm", "matmul", "linear"}
COPIES = {"copy_", "_to_copy", "to", "contiguous", "clone"}


def category(op: str) -> str:
    """The category of an aten operator name (aten::cudnn_convolution -> 'convolution')."""
    name = op.removeprefix("aten::")
    if "conv" in name:
        return "convolution"
    if name in MATRIX_PRODUCTS:
        return "matrix product"
    if "batch_norm" in name or "layer_norm" in name:
        return "normalisation"
    if name in COPIES:
        return "copy / cast"
    return "other (elementwise, loss, optimizer)"


def self_device_us(event, device: torch.device) -> float:
    """An averaged event's own device (CUDA kernel) time, or its own CPU time on a CPU run, in microseconds."""
    return event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total


def profile_steps(
    name: str, cfg: dict, device: torch.device, bf16: bool, channels_last: bool, batch: int, steps: int
) -> list[tuple[str, float]]:
    """(operator, own device microseconds per step) of `steps` steady training steps; kernels count
    towards the operator that launched them (their own rows are skipped, not counted twice)."""
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build(name, **cfg).to(device, memory_format=layout).train()
    step = train_step(model, name, synthetic_batch(name, cfg, batch, device, channels_last), bf16)
    sync = synchronizer(device)
    warm_up(step, sync, 3)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    per_op = [
        (event.key, self_device_us(event, device) / steps)
        for event in prof.key_averages()
        if event.device_type == DeviceType.CPU
    ]
    return sorted([row for row in per_op if row[1] > 0], key=lambda row: -row[1])


def report(label: str, ops: list[tuple[str, float]], top: int) -> dict[str, float]:
    """Print the category shares and the top operators; return ms per step by category."""
    by_category: dict[str, float] = defaultdict(float)
    for op, us in ops:
        by_category[category(op)] += us / 1e3
    total = sum(by_category.values())
    print(f"\n#### {label}: {total:.2f} ms of device time per step\n")
    print("| category | ms/step | share |\n|---|---|---|")
    for cat, ms in sorted(by_category.items(), key=lambda item: -item[1]):
        print(f"| {cat} | {ms:.2f} | {ms / total:.0%} |")
    print(f"\ntop {top} operators: " + ", ".join(f"{op} {us / 1e3:.2f} ms" for op, us in ops[:top]))
    return dict(by_category)


def main() -> int:
    """Profile fp32 and bf16 steps of one model and print where the device time goes in each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", choices=MODEL_NAMES, default="fcrn")
    parser.add_argument("--smoke", action="store_true", help="tiny model: checks the code path")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (after 3 untimed)")
    parser.add_argument("--top", type=int, default=12, help="operators listed per dtype")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_profile: no CUDA device was found, so nothing was profiled")
        return 0
    device = torch.device(args.device)
    profile_name = "smoke" if args.smoke else "paper"
    cfg = model_cfg(profile_name, args.model)
    batch = 2 if args.smoke else args.batch
    layout = "channels_last" if args.channels_last else "contiguous"
    print(
        f"gpu_profile [{device_name(device)}] {args.model} {profile_name} config, batch {batch}, {layout}, "
        f"{args.steps} profiled training steps per dtype, torch {torch.__version__}"
    )
    shares = {}
    for bf16 in (False, True):
        label = f"{args.model} {'bf16' if bf16 else 'fp32'} {layout}"
        ops = profile_steps(args.model, cfg, device, bf16, args.channels_last, batch, args.steps)
        shares[bf16] = report(label, ops, args.top)
    print(f"\n{args.model} bf16/fp32 device time per step by category:")
    for cat in sorted(set(shares[False]) | set(shares[True])):
        fp32, bf16 = shares[False].get(cat, 0.0), shares[True].get(cat, 0.0)
        print(f"  {cat}: fp32 {fp32:.2f} ms, bf16 {bf16:.2f} ms" + (f" ({fp32 / bf16:.2f}x faster)" if bf16 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
