"""Search efficiency: random search with FIFO (every trial trains all its epochs) against TPE +
ASHA, both run by depthtune's own sweep (real Ray Tune trials, tracked in MLflow, the first trial
of each the paper's settings) on the synthetic benchmark with a small Net12. Both select on the
validation abs rel (``--metric``), which no searched setting changes by itself. For each seed,
the best validation value reached so far is traced against the trial-epochs spent (all trials'
epochs, in the order they ended), and the figure of merit is the share of random search's
trial-epochs TPE + ASHA needs to reach random search's final best. Both get the same budget:
TPE + ASHA's trace is cut where it has spent as many trial-epochs.

    python benchmarks/search_efficiency.py [--seeds 0 1 2] [--random-trials 12] [--epochs 8] [--startup-trials 4]
                                           [--frames 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow import MlflowClient
from shipped import paper_settings

from depthtune.data import generate_dataset
from depthtune.names import metric_mode
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.driver import run_sweep
from depthtune.tracking.runs import SWEEP_TAG

logger = logging.getLogger(__name__)

SPACE = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 0.1},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.95},
    "step_size": {"type": "int", "low": 1, "high": 8},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}
MODEL_CFG = {"input_size": [64, 80], "width": 0.125}
METHODS = {
    "random+fifo": {"searcher": "random", "scheduler": "fifo"},
    "tpe+asha": {"searcher": "tpe", "scheduler": "asha"},
}
THREADS = 2


@dataclass
class Trace:
    """Best validation value so far after each trial-epoch of one sweep (index i: i+1 epochs spent);
    values are negated for a metric where higher is better, so lower is always better here."""

    method: str
    seed: int
    trials: int
    failed: int
    best_so_far: list[float]

    def epochs_to_reach(self, target: float) -> int | None:
        """Trial-epochs spent when the best validation value first reached ``target`` (None: never)."""
        return next((i + 1 for i, best in enumerate(self.best_so_far) if best <= target), None)

    def best_within(self, epochs: int) -> float:
        """Best validation value after ``epochs`` trial-epochs (or all it spent, if fewer)."""
        return self.best_so_far[min(epochs, len(self.best_so_far)) - 1]


def sweep_trace(
    client: MlflowClient, sweep_run_id: str, experiment_id: str, method: str, seed: int, metric: str
) -> Trace:
    """Every epoch each trial of the sweep reported, in the order they ended, as a running minimum."""
    runs = client.search_runs([experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_run_id}'", max_results=10_000)
    sign = -1.0 if metric_mode(metric) == "max" else 1.0
    epochs = sorted(
        (m.timestamp, sign * m.value) for run in runs for m in client.get_metric_history(run.info.run_id, metric)
    )
    best, trace = math.inf, []
    for _, value in epochs:
        best = min(best, value)
        trace.append(best)
    failed = sum(run.info.status == "FAILED" for run in runs)
    return Trace(method, seed, len(runs), failed, trace)


def sweep(
    method: str, seed: int, samples: int, args: argparse.Namespace, data: Path, tracking_uri: str, storage: Path
) -> Trace:
    """One sweep of ``method`` with searcher seed ``seed``; returns its trace."""
    config = SweepConfig.from_dict(
        {
            "model": "net12",
            "data": str(data),
            "experiment": f"search-{method}",
            "name": f"{method}-seed{seed}",
            "num_samples": samples,
            "max_concurrent": args.concurrent,
            "cpus_per_trial": THREADS / args.concurrent,
            "grace_period": 1,
            "reduction_factor": 2,
            "startup_trials": args.startup_trials,
            "seed": seed,
            "max_failures": 0,
            "search_space": SPACE,
            "paper_settings": paper_settings("net12"),
            "metric": args.metric,
            "preview_frames": 0,
            "storage_path": str(storage),
            "tracking_uri": tracking_uri,
            "register_as": f"search-{method}",
            "train": {"epochs": args.epochs, "batch_size": 16, "model_cfg": MODEL_CFG, "seed": 0},
            **METHODS[method],
        },
        profile="cpu",
    )
    started = time.monotonic()
    outcome = run_sweep(config)
    trace = sweep_trace(
        MlflowClient(tracking_uri), outcome.sweep_run_id, outcome.experiment_id, method, seed, args.metric
    )
    print(
        f"  {method} seed {seed}: {trace.trials} trials ({trace.failed} failed), "
        f"{len(trace.best_so_far)} trial-epochs, best {args.metric} "
        f"{trace.best_so_far[-1]:.4f} ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    return trace


def compare(random: Trace, guided: Trace) -> dict[str, float | int | None]:
    """Random search's final best, and the trial-epochs TPE + ASHA needed for it within the same budget."""
    budget = len(random.best_so_far)
    target = random.best_so_far[-1]
    needed = guided.epochs_to_reach(target)
    needed = needed if needed is not None and needed <= budget else None
    return {
        "seed": random.seed,
        "budget": budget,
        "random_best": target,
        "tpe_asha_best_in_budget": guided.best_within(budget),
        "tpe_asha_epochs_to_random_best": needed,
        "share": needed / budget if needed else None,
        "tpe_asha_trials": guided.trials,
        "random_trials": random.trials,
    }


def print_curves(traces: list[Trace], budget: int, metric: str) -> None:
    """Best validation value at fractions of the budget, per method and seed."""
    fractions = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    print(f"\nbest {metric} after a share of the budget (trial-epochs; negated where higher is better):")
    print(f"{'method':<12} {'seed':>4} " + " ".join(f"{f:>7.0%}" for f in fractions))
    for trace in traces:
        cells = " ".join(f"{trace.best_within(max(1, round(f * budget))):>7.4f}" for f in fractions)
        print(f"{trace.method:<12} {trace.seed:>4} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--random-trials", type=int, default=12, help="random search's trials; its budget is this x --epochs"
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--frames",
        type=int,
        default=300,
        help=(
            "synthetic frames, 3 views of each room (with 96, 4 validation rooms make it degenerate: README section 3)"
        ),
    )
    parser.add_argument(
        "--metric",
        default="val_abs_rel",
        help="the validation metric both searches select on (val_loss is refused while grad_weight is searched)",
    )
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument(
        "--startup-trials",
        type=int,
        default=SweepConfig.startup_trials,
        help="TPE's seeded random trials before it models results",
    )
    parser.add_argument("--json", type=Path, help="write every trace and comparison here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = (Path("data") / f"bench_synthetic_{args.frames}f_3v.mat").resolve()
    if not data.is_file():
        print(f"generating {args.frames} synthetic frames into {data} (once)")
        data.parent.mkdir(exist_ok=True)
        generate_dataset(data, args.frames, seed=1, workers=THREADS)
    budget = args.random_trials * args.epochs
    # ASHA (grace 1, factor 2) trains a trial about log2(epochs)/2 + 1 epochs on average: enough
    # trials that TPE + ASHA can spend the whole budget (its trace is cut there).
    guided_samples = math.ceil(budget / (math.log2(args.epochs) / 2 + 1))
    traces: list[Trace] = []
    with tempfile.TemporaryDirectory() as workdir:
        backend, artifacts = embedded_store(Path(workdir))
        with TrackingServer(backend, artifacts, log_path=Path(workdir) / "mlflow-server.log") as server:
            ray.init(num_cpus=THREADS, include_dashboard=False, log_to_driver=False)
            previous = os.getcwd()
            os.chdir(workdir)
            try:
                for seed in args.seeds:
                    for method, samples in (("random+fifo", args.random_trials), ("tpe+asha", guided_samples)):
                        traces.append(
                            sweep(method, seed, samples, args, data, server.uri, Path(workdir) / "ray_results")
                        )
            finally:
                os.chdir(previous)
                ray.shutdown()
    by_seed = {(t.method, t.seed): t for t in traces}
    rows = [compare(by_seed["random+fifo", s], by_seed["tpe+asha", s]) for s in args.seeds]
    print_curves(traces, budget, args.metric)
    print(
        f"\nbudget {budget} trial-epochs per sweep ({args.random_trials} random trials x {args.epochs} epochs; "
        f"TPE ({args.startup_trials} random start-up trials) + ASHA sampled up to {guided_samples} trials)"
    )
    for row in rows:
        reached = (
            f"reached it after {row['tpe_asha_epochs_to_random_best']} trial-epochs = {row['share']:.0%} of the budget"
            if row["share"] is not None
            else "did not reach it within the budget"
        )
        print(
            f"seed {row['seed']}: random+fifo final best {row['random_best']:.4f}; tpe+asha {reached} "
            f"(its best within the budget {row['tpe_asha_best_in_budget']:.4f})"
        )
    shares = [row["share"] if row["share"] is not None else math.inf for row in rows]
    median = statistics.median(shares)
    print(
        f"median share of random search's trial-epochs TPE + ASHA needed: "
        f"{'not reached' if math.isinf(median) else f'{median:.0%}'} (bar <= 30%)"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "traces": [t.__dict__ for t in traces]}, indent=1))


if __name__ == "__main__":
    main()
