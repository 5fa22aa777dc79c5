"""Platform overhead: the same training work run (a) as the bare training loop and (b) as a
one-trial Ray Tune sweep with full MLflow tracking (per-epoch metrics, checkpoints persisted by
Tune, best weights carried, prediction grids), alternating b/a. Prints the median ratio b/a of the
steady-state time per epoch (epoch 2 onwards: the time between consecutive epoch ends) and, apart,
the one-time start-up of each side.

    python benchmarks/platform_overhead.py [--reps 4] [--epochs 6] [--scenes 300] [--threads 2] [--cpu-by-role]

300 scenes is the data the README's sweep trains on by default (an epoch of about 8 s here); with
96 the epochs are 3x shorter and the per-epoch costs weigh 3x more.

``--threads 1`` trains on one of the two cores on both sides and leaves the other to Ray, Tune and
MLflow, as a GPU node's CPUs are left: the platform's own cost without CPU contention.

``--cpu-by-role`` also samples /proc and prints, per steady-state epoch, the CPU seconds of each
process role (trial worker, driver, raylet, gcs, mlflow server): where the extra time goes.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from mlflow import MlflowClient
from proc_cpu import TreeCPUSampler

from depthtune.data import generate_dataset, read_nyu
from depthtune.profiles import model_config
from depthtune.sweep_config import SweepConfig
from depthtune.train import TrainConfig, train
from depthtune.tune import run_sweep

SPACE = {
    "lr": {"type": "loguniform", "low": 0.003, "high": 0.05},
    "momentum": {"type": "uniform", "low": 0.8, "high": 0.95},
    "step_size": {"type": "int", "low": 3, "high": 6},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}


def tracked(data: Path, workdir: Path, epochs: int, preview_frames: int, threads: int) -> tuple[list[float], list[float], float, dict]:
    """(b): a one-trial sweep in ``workdir``; returns epoch-end times (s, from the trial's metric
    timestamps), each epoch's train + evaluation seconds, start-up (call to first epoch end minus
    that epoch's training) and the params."""
    config = SweepConfig.from_dict(
        {
            "model": "net12", "data": str(data), "num_samples": 1, "max_concurrent": 1, "cpus_per_trial": threads,
            "grace_period": epochs, "seed": 0, "storage_path": str(workdir / "ray_results"), "search_space": SPACE,
            "preview_frames": preview_frames,
            "train": {"epochs": epochs, "batch_size": 16, "model_cfg": model_config("cpu", "net12")},
        },
        profile="cpu",
    )
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        started = time.time()
        outcome = run_sweep(config)
    finally:
        os.chdir(previous)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    history = sorted(client.get_metric_history(outcome.best_run_id, "val_loss"), key=lambda m: m.step)
    seconds = sorted(client.get_metric_history(outcome.best_run_id, "epoch_seconds"), key=lambda m: m.step)
    ends = [m.timestamp / 1000 for m in history]
    return ends, [m.value for m in seconds], ends[0] - started - seconds[0].value, outcome.best_params


def bare(data: Path, workdir: Path, epochs: int, params: dict, threads: int) -> tuple[list[float], list[float], float]:
    """(a): the training loop alone with the same settings; returns epoch-end times, each epoch's
    train + evaluation seconds and start-up."""
    torch.set_num_threads(threads)
    config = TrainConfig.from_dict(
        {"model": "net12", "data": str(data), "epochs": epochs, "batch_size": 16, "model_cfg": model_config("cpu", "net12"),
         "select_metric": "val_loss", **params}
    )
    ends: list[float] = []
    seconds: list[float] = []
    started = time.time()
    arrays = read_nyu(data)

    def on_epoch(metrics: dict, _directory: Path) -> None:
        ends.append(time.time())
        seconds.append(metrics["epoch_seconds"])

    train(config, workdir / "checkpoints", arrays=arrays, on_epoch=on_epoch)
    return ends, seconds, ends[0] - started - seconds[0]


def steady(ends: list[float]) -> float:
    """Median time between consecutive epoch ends, from the second epoch on."""
    return statistics.median(b - a for a, b in zip(ends, ends[1:]))


def in_loop(seconds: list[float]) -> float:
    """Median train + evaluation seconds of an epoch, from the second epoch on."""
    return statistics.median(seconds[1:])


def between_epochs(ends: list[float], seconds: list[float]) -> float:
    """Median seconds per epoch outside training and evaluation (checkpointing and, tracked, the
    trial's reporting: best weights, grids, queueing metrics, ``tune.report``), from the second on."""
    return statistics.median(b - a - s for a, b, s in zip(ends, ends[1:], seconds[1:]))


def cpu_per_epoch(sampler: TreeCPUSampler, ends: list[float]) -> str:
    """CPU seconds per steady-state epoch of each process role, largest first."""
    used = sampler.by_role(ends[1], ends[-1])
    epochs = len(ends) - 2
    return ", ".join(f"{role} {seconds / epochs:.2f}" for role, seconds in sorted(used.items(), key=lambda kv: -kv[1]) if seconds > 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2, help="training threads on both sides (this machine has 2 cores)")
    parser.add_argument("--preview-frames", type=int, default=4, help="0: no prediction grids (to see what they cost)")
    parser.add_argument("--cpu-by-role", action="store_true", help="print CPU seconds per epoch of each process role")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = (Path("data") / f"bench_synthetic_{args.scenes}.mat").resolve()
    if not data.is_file():
        print(f"generating {args.scenes} synthetic scenes into {data} (once)")
        data.parent.mkdir(exist_ok=True)
        generate_dataset(data, args.scenes, seed=1, workers=2)
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    ratios, loop_ratios, outside_a, outside_b, starts_a, starts_b = [], [], [], [], [], []
    try:
        for rep in range(args.reps):
            with tempfile.TemporaryDirectory() as b_dir, tempfile.TemporaryDirectory() as a_dir, TreeCPUSampler() as sampler:
                ends_b, seconds_b, start_b, params = tracked(data, Path(b_dir), args.epochs, args.preview_frames, args.threads)
                ends_a, seconds_a, start_a = bare(data, Path(a_dir), args.epochs, params, args.threads)
            if args.cpu_by_role:
                print(f"  CPU s per epoch, tracked: {cpu_per_epoch(sampler, ends_b)}\n  CPU s per epoch, bare:    {cpu_per_epoch(sampler, ends_a)}")
            ratio = steady(ends_b) / steady(ends_a)
            ratios.append(ratio)
            loop_ratios.append(in_loop(seconds_b) / in_loop(seconds_a))
            outside_a.append(between_epochs(ends_a, seconds_a))
            outside_b.append(between_epochs(ends_b, seconds_b))
            starts_a.append(start_a)
            starts_b.append(start_b)
            print(f"rep {rep + 1}: per epoch bare {steady(ends_a):.2f} s, tracked {steady(ends_b):.2f} s, ratio b/a {ratio:.3f}; "
                  f"start-up bare {start_a:.1f} s, tracked {start_b:.1f} s; train + evaluation b/a {loop_ratios[-1]:.3f}, "
                  f"between epochs bare {outside_a[-1]:.2f} s, tracked {outside_b[-1]:.2f} s")
    finally:
        ray.shutdown()
    print(f"median steady-state ratio tracked/bare over {args.reps} alternating runs: {statistics.median(ratios):.3f} "
          f"(bar <= 1.05); start-up: bare {statistics.median(starts_a):.1f} s, tracked sweep {statistics.median(starts_b):.1f} s "
          f"(Ray, the local mlflow server, runs; a shared server and a running cluster take less)")
    print(f"of it: train + evaluation b/a median {statistics.median(loop_ratios):.3f} (threads beside the training, and noise); "
          f"between epochs median bare {statistics.median(outside_a):.2f} s, tracked {statistics.median(outside_b):.2f} s "
          f"(the trial's own per-epoch work)")


if __name__ == "__main__":
    main()
