"""FCRN's up-projection, naive (unpool x2 with zeros, then 5x5 convolutions) against Laina's fast
form (four small convolutions of the input, interleaved; ``depthtune.models.fcrn.unpool_conv5``),
which the model uses: forward FLOPs of the whole network (counted by ``torch.utils.flop_counter``
on the meta device) and the training step's time side by side, on the GPU when there is one.

    python benchmarks/up_projection.py [--profile paper|cpu] [--batch 8] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

import depthtune.models.fcrn as fcrn
from depthtune.models import build
from depthtune.profiles import PROFILES, model_config


def naive_unpool_conv5(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.conv2d(fcrn.unpool2x(x), weight, padding=2)


@contextmanager
def up_projection(form: Callable) -> Iterator[None]:
    """Run FCRN's up-projections with ``form`` while the block runs."""
    fast = fcrn.unpool_conv5
    fcrn.unpool_conv5 = form
    try:
        yield
    finally:
        fcrn.unpool_conv5 = fast


def forward_gflops(config: dict) -> float:
    with torch.device("meta"):
        model = build("fcrn", **config).eval()
        image = torch.randn(1, 3, *model.input_size)
        with FlopCounterMode(display=False) as counter:
            model(image)
    return counter.get_total_flops() / 1e9


def step_seconds(config: dict, batch: int, reps: int, device: torch.device) -> float:
    """Median seconds of a forward + backward + SGD step on random data."""
    torch.manual_seed(0)
    model = build("fcrn", **config).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    image = torch.randn(batch, 3, *model.input_size, device=device)
    times = []
    for rep in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(image).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if rep:  # the first is warm-up
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    config = model_config(args.profile, "fcrn")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = {}
    for name, form in (("naive", naive_unpool_conv5), ("fast", fcrn.unpool_conv5)):
        with up_projection(form):
            rows[name] = (forward_gflops(config), step_seconds(config, args.batch, args.reps, device))
    print(f"FCRN ({args.profile} profile), batch {args.batch}, {device}:")
    for name, (gflops, seconds) in rows.items():
        print(f"  {name:5s}  forward {gflops:6.1f} GFLOP per image   training step {seconds * 1000:8.1f} ms")
    print(
        f"  naive / fast: FLOPs {rows['naive'][0] / rows['fast'][0]:.2f}x, "
        f"step time {rows['naive'][1] / rows['fast'][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
