"""Platform overhead: the same training work run (a) as the bare training loop and (b) as a
one-trial Ray Tune sweep with full MLflow tracking (per-epoch metrics, a checkpoint every epoch
persisted by Tune, prediction grids), run as a b a b ... a. Each b is compared with the mean of
the a before and after it, which cancels the drift of this shared machine's speed (the same bare
run takes 2.0 s an epoch and 3.0 s a few minutes later). Prints the median of those ratios for the
steady-state time per epoch (epoch 2 onwards: the time between consecutive epoch ends) and, apart,
the one-time start-up of each side.

    python benchmarks/platform_overhead.py [--reps 6] [--epochs 6] [--scenes 300] [--threads 2] [--control]
                                           [--cpu-by-role]
    python benchmarks/platform_overhead.py --device cuda --profile paper --data FILE --epochs 10 --checkpoint-every 5 \
                                           --threads 4 --workers 3 --reps 1 [--bare-once]   # a GPU trial, as the YAML

(a) runs in a fresh Python process of its own with nothing else running: no Ray, no measuring
thread in its process. (b) is ``run_sweep`` as a user calls it: it starts a local Ray and a local
mlflow server and stops both at its end. 300 scenes is the data the README's sweep trains on by
default (an epoch of about 8 s here); with 96 the epochs are 3x shorter and the per-epoch costs
weigh 3x more.

``--threads 1`` trains on one of the two cores on both sides and leaves the other to Ray, Tune and
MLflow, as a GPU node's CPUs are left: the platform's own cost without CPU contention.

What both sides train (Net12, batch 16) is set by ``--profile`` (the model's size and variant: ``cpu``,
the default, or ``paper``), ``--device`` (``cpu``, the default, or ``cuda``: the trial then gets one
GPU), ``--workers`` (DataLoader processes; the trial reserves ``--threads`` CPUs as before),
``--checkpoint-every`` (``train.checkpoint_every``; 1, the default, checkpoints every epoch, the
shipped YAMLs say 5) and ``--data`` (an NYU-layout file instead of ``--scenes`` synthetic scenes).
Besides the steady-state median, each rep also compares the mean time per epoch from the first epoch
end to the last, which counts every checkpointed epoch (with ``--checkpoint-every`` > 1 the median
can miss them). ``--bare-once`` runs (a) once, before every (b) is compared with it (a b b ...):
half the runs, for a dedicated machine whose speed does not drift.

``--tracked-env KEY=VALUE`` (repeatable) adds a third run to each rep: (b) again with those variables
in the environment of its Ray (so of the trial's process), compared with the same two (a) runs: a
setting measured against the default side by side.

``--control`` runs the bare loop on both sides (an A/A comparison with the same protocol): the spread
of its ratios is what this machine's noise alone produces.

``--cpu-by-role`` also samples /proc (in a thread of the benchmark's process, so only when asked) and
prints, per steady-state epoch, the CPU seconds of each process role (bare loop, trial worker,
driver, raylet, gcs, mlflow server) and the training process's scheduling (CPU time, time runnable
but waiting for a CPU, involuntary context switches): where the extra time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from environment import environment
from mlflow import MlflowClient
from proc_cpu import TreeCPUSampler
from shipped import paper_settings

from depthtune.data import generate_dataset, read_nyu
from depthtune.paper_settings import PaperSettings
from depthtune.profiles import model_setup
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.driver import run_sweep
from depthtune.train import train
from depthtune.train_config import TrainConfig

SPACE = {
    "lr": {"type": "loguniform", "low": 0.003, "high": 0.05},
    "momentum": {"type": "uniform", "low": 0.8, "high": 0.95},
    "step_size": {"type": "int", "low": 1, "high": 20},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}

# Both sides of ``--control`` train with these (otherwise both train with the paper's settings).
CONTROL_PARAMS = {"lr": 0.01, "momentum": 0.9, "step_size": 5, "grad_weight": 1.0}
BARE_RESULT = "bare_result.json"


@dataclass(frozen=True)
class Work:
    """What both sides train and where: the profile's Net12 (size, layers, per-layer rates), the
    device, training threads (a trial reserves as many CPUs), DataLoader workers and the checkpoint cadence."""

    profile: str = "cpu"
    device: str = "cpu"
    threads: int = 2
    workers: int = 0
    checkpoint_every: int = 1

    def train_values(self, epochs: int) -> dict:
        """The fixed training settings both sides share."""
        setup = model_setup(self.profile, "net12")
        return {
            "epochs": epochs,
            "batch_size": 16,
            "model_cfg": setup.model_cfg,
            "lr_multipliers": setup.lr_multipliers,
            "num_workers": self.workers,
            "checkpoint_every": self.checkpoint_every,
            "device": self.device,
        }


def tracked(
    data: Path, workdir: Path, epochs: int, preview_frames: int, work: Work
) -> tuple[list[float], list[float], float, dict]:
    """(b): a one-trial sweep in ``workdir``; returns epoch-end times (s, from the trial's metric
    timestamps), each epoch's train + evaluation seconds, start-up (call to first epoch end minus
    that epoch's training) and the params."""
    config = SweepConfig.from_dict(
        {
            "model": "net12",
            "data": str(data),
            "num_samples": 1,
            "max_concurrent": 1,
            "cpus_per_trial": work.threads,
            "gpus_per_trial": 1 if work.device == "cuda" else 0,
            "grace_period": epochs,
            "seed": 0,
            "storage_path": str(workdir / "ray_results"),
            "search_space": SPACE,
            "paper_settings": paper_settings("net12"),
            "preview_frames": preview_frames,
            "train": work.train_values(epochs),
        },
        profile=work.profile,
    )
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        started = time.time()
        outcome = run_sweep(config)
    finally:
        os.chdir(previous)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    history = sorted(client.get_metric_history(outcome.winner.run_id, "val_loss"), key=lambda m: m.step)
    seconds = sorted(client.get_metric_history(outcome.winner.run_id, "epoch_seconds"), key=lambda m: m.step)
    ends = [m.timestamp / 1000 for m in history]
    return ends, [m.value for m in seconds], ends[0] - started - seconds[0].value, outcome.winner.params


def bare(data: Path, workdir: Path, epochs: int, params: dict, work: Work) -> tuple[list[float], list[float], float]:
    """(a): the training loop alone with the same settings; returns epoch-end times, each epoch's
    train + evaluation seconds and start-up."""
    torch.set_num_threads(work.threads)
    config = TrainConfig.from_dict(
        {
            "model": "net12",
            "data": str(data),
            **work.train_values(epochs),
            "select_metric": "val_abs_rel",
            **params,
        }
    )
    ends: list[float] = []
    seconds: list[float] = []
    started = time.time()
    arrays = read_nyu(data)

    def on_epoch(metrics: dict, _model: torch.nn.Module) -> None:
        ends.append(time.time())
        seconds.append(metrics["epoch_seconds"])

    train(config, workdir / "checkpoints", arrays=arrays, on_epoch=on_epoch)
    return ends, seconds, ends[0] - started - seconds[0]


def tracked_params(epochs: int) -> dict:
    """The hyperparameters the one-trial sweep trains with: its first trial is always the paper's
    settings (the bare side trains with the same)."""
    return PaperSettings.from_dict(paper_settings("net12")).params(epochs)


def bare_in_own_process(
    data: Path, workdir: Path, epochs: int, params: dict, work: Work
) -> tuple[list[float], list[float], float]:
    """(a) in a fresh Python process (``--bare-child``), so that nothing else runs beside it."""
    job = {"data": str(data), "workdir": str(workdir), "epochs": epochs, "params": params, "work": asdict(work)}
    subprocess.run([sys.executable, __file__, "--bare-child", json.dumps(job)], check=True)
    ends, seconds, start = json.loads((workdir / BARE_RESULT).read_text())
    return ends, seconds, start


def steady(ends: list[float]) -> float:
    """Median time between consecutive epoch ends, from the second epoch on."""
    return statistics.median(b - a for a, b in zip(ends, ends[1:]))


def span(ends: list[float]) -> float:
    """Mean time per epoch from the first epoch end to the last: every epoch from the second on,
    checkpointed ones included."""
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def in_loop(seconds: list[float]) -> float:
    """Median train + evaluation seconds of an epoch, from the second epoch on."""
    return statistics.median(seconds[1:])


def between_epochs(ends: list[float], seconds: list[float]) -> float:
    """Median seconds per epoch outside training and evaluation (checkpointing and, tracked, the
    trial's reporting: grids, queueing metrics, ``tune.report`` copying the checkpoint), from the second on."""
    return statistics.median(b - a - s for a, b, s in zip(ends, ends[1:], seconds[1:]))


def cpu_per_epoch(sampler: TreeCPUSampler, ends: list[float]) -> str:
    """CPU seconds per steady-state epoch of each process role, largest first, and how the training
    process was scheduled: its CPU seconds, seconds runnable but waiting for a CPU, preemptions."""
    epoch = steady(ends)
    used = {role: rate * epoch for role, rate in sampler.by_role(ends[1], ends[-1]).items()}
    ran, waited, preempted = (rate * epoch for rate in sampler.training_scheduling(ends[1], ends[-1]))
    roles = ", ".join(
        f"{role} {seconds:.2f}" for role, seconds in sorted(used.items(), key=lambda kv: -kv[1]) if seconds > 0
    )
    return (
        f"{roles}; training process: on a CPU {ran:.2f} s, waiting for one {waited:.3f} s, "
        f"preempted {preempted:.0f} times"
    )


def run_bare_child(job: dict) -> None:
    """The ``--bare-child`` process: run (a) and leave its timings in the job's work directory."""
    workdir = Path(job["workdir"])
    result = bare(Path(job["data"]), workdir, job["epochs"], job["params"], Work(**job["work"]))
    (workdir / BARE_RESULT).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument(
        "--threads", type=int, default=2, help="training threads on both sides (this machine has 2 cores)"
    )
    parser.add_argument("--preview-frames", type=int, default=4, help="0: no prediction grids (to see what they cost)")
    parser.add_argument("--control", action="store_true", help="bare loop on both sides: the ratio noise alone gives")
    parser.add_argument("--cpu-by-role", action="store_true", help="print CPU seconds per epoch of each process role")
    parser.add_argument(
        "--tracked-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run the tracked side with this environment variable set, side by side (repeatable)",
    )
    parser.add_argument("--profile", choices=("cpu", "paper"), default="cpu", help="Net12's size and variant")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the trial gets one GPU")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes on both sides")
    parser.add_argument("--checkpoint-every", type=int, default=1, help="train.checkpoint_every (the YAMLs say 5)")
    parser.add_argument("--data", type=Path, help="an NYU-layout file to train on instead of --scenes synthetic ones")
    parser.add_argument("--bare-once", action="store_true", help="run (a) once and compare every (b) with it")
    parser.add_argument("--bare-child", metavar="JOB_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variant = dict(item.split("=", 1) for item in args.tracked_env)
    logging.basicConfig(level=logging.WARNING)
    if args.bare_child:
        run_bare_child(json.loads(args.bare_child))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        print("platform_overhead: no CUDA device was found, so nothing was measured")
        return
    work = Work(args.profile, args.device, args.threads, args.workers, args.checkpoint_every)
    data = args.data.resolve() if args.data else (Path("data") / f"bench_synthetic_{args.scenes}f_3v.mat").resolve()
    if not data.is_file():
        print(f"generating {args.scenes} synthetic frames into {data} (once)")
        data.parent.mkdir(exist_ok=True)
        generate_dataset(data, args.scenes, seed=1, workers=2)
    ratios, loop_ratios, outside_a, outside_b, starts_a, starts_b, variant_ratios = [], [], [], [], [], [], []
    span_ratios = []
    params = CONTROL_PARAMS if args.control else tracked_params(args.epochs)
    with tempfile.TemporaryDirectory() as a_dir:
        before = bare_in_own_process(data, Path(a_dir), args.epochs, params, work)
    for rep in range(args.reps):
        sampling = TreeCPUSampler(period=1.0) if args.cpu_by_role else contextlib.nullcontext()
        with tempfile.TemporaryDirectory() as b_dir, tempfile.TemporaryDirectory() as a_dir, sampling as sampler:
            if args.control:
                ends_b, seconds_b, start_b = bare_in_own_process(data, Path(b_dir), args.epochs, params, work)
            else:
                ends_b, seconds_b, start_b, _ = tracked(data, Path(b_dir), args.epochs, args.preview_frames, work)
            if variant:
                with tempfile.TemporaryDirectory() as v_dir, environment(variant):
                    ends_v = tracked(data, Path(v_dir), args.epochs, args.preview_frames, work)[0]
            after = before if args.bare_once else bare_in_own_process(data, Path(a_dir), args.epochs, params, work)
        if args.cpu_by_role:
            print(
                f"  CPU s per epoch, tracked: {cpu_per_epoch(sampler, ends_b)}\n"
                f"  CPU s per epoch, bare:    {cpu_per_epoch(sampler, after[0])}"
            )
        bare_steady = statistics.mean(steady(ends) for ends, _, _ in (before, after))
        ratio = steady(ends_b) / bare_steady
        ratios.append(ratio)
        span_ratios.append(span(ends_b) / statistics.mean(span(ends) for ends, _, _ in (before, after)))
        loop_ratios.append(in_loop(seconds_b) / statistics.mean(in_loop(seconds) for _, seconds, _ in (before, after)))
        outside_a.append(statistics.mean(between_epochs(ends, seconds) for ends, seconds, _ in (before, after)))
        outside_b.append(between_epochs(ends_b, seconds_b))
        starts_a.append(after[2])
        starts_b.append(start_b)
        print(
            f"rep {rep + 1}: per epoch bare {steady(before[0]):.2f} s before, "
            f"{'(bare loop run once)' if args.bare_once else f'{steady(after[0]):.2f} s after'}, "
            f"tracked {steady(ends_b):.2f} s, "
            f"ratio b/a {ratio:.3f}; start-up bare {after[2]:.1f} s, tracked {start_b:.1f} s; "
            f"train + evaluation b/a {loop_ratios[-1]:.3f}, "
            f"between epochs bare {outside_a[-1]:.2f} s, tracked {outside_b[-1]:.2f} s; "
            f"mean per epoch, checkpoints included, bare {span(before[0]):.2f} / {span(after[0]):.2f} s, "
            f"tracked {span(ends_b):.2f} s, b/a {span_ratios[-1]:.3f}",
            flush=True,
        )
        if variant:
            variant_ratios.append(steady(ends_v) / bare_steady)
            print(
                f"  tracked with {args.tracked_env}: {steady(ends_v):.2f} s per epoch, "
                f"ratio b/a {variant_ratios[-1]:.3f}",
                flush=True,
            )
        before = after
    if args.control:
        print("CONTROL: both sides ran the bare loop; 'tracked' below is a second bare run")
    print(f"{work}, {args.epochs} epochs on {data}")
    print(
        f"median steady-state ratio tracked/bare over {args.reps} alternating runs: {statistics.median(ratios):.3f} "
        f"(bar <= 1.05); start-up: bare {statistics.median(starts_a):.1f} s, "
        f"tracked sweep {statistics.median(starts_b):.1f} s "
        f"(a local Ray and mlflow server started and the runs created; a running cluster and a shared server take less)"
    )
    print(
        f"of it: train + evaluation b/a median {statistics.median(loop_ratios):.3f} "
        "(CPU taken by what runs beside the training, "
        f"and noise); between epochs median bare {statistics.median(outside_a):.2f} s, "
        f"tracked {statistics.median(outside_b):.2f} s "
        f"(the trial's own per-epoch work); mean time per epoch from the first epoch end to the last "
        f"(checkpointed epochs included) b/a median {statistics.median(span_ratios):.3f}"
    )
    if variant:
        print(
            f"tracked with {args.tracked_env}: median ratio {statistics.median(variant_ratios):.3f} "
            f"({', '.join(f'{r:.3f}' for r in variant_ratios)}), default {statistics.median(ratios):.3f}"
        )


if __name__ == "__main__":
    main()
