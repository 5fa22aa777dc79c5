"""Does tuning beat the papers' settings? For each sweep seed, the shipped sweeps of Net12, Net3 (on
that seed's Net12 winner) and FCRN, as a user runs them (the shipped depthtune/configs/*.yaml, the cpu
profile without a GPU, the default synthetic data), each with the paper-settings trial first. Per
sweep: the paper trial against the winner on validation abs rel (what chose the winner) and on test
abs rel (reported only), and the gain. The seed is both the searcher's and the training seed, so
the paper trial itself is trained three times and its spread shows the noise any gain must exceed.

    python benchmarks/paper_vs_tuned.py [--seeds 0 1 2] [--models net12 net3 fcrn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from depthtune.config import read_yaml
from depthtune.configs import shipped_config
from depthtune.data.source import resolve_data
from depthtune.profiles import resolve_profile
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.driver import run_sweep
from depthtune.sweep.summary import SweepOutcome

MODELS = ("net12", "net3", "fcrn")


def sweep(model: str, seed: int, uri: str, storage: Path, data: Path) -> SweepOutcome:
    """The shipped sweep of ``model`` with searcher and training seed ``seed``."""
    values = read_yaml(shipped_config(model))
    overrides = {
        "name": f"{model}-seed{seed}",
        "seed": seed,
        "data": str(data),
        "tracking_uri": uri,
        "storage_path": str(storage),
        "register_as": f"paper-vs-tuned-{model}-s{seed}",
        "train": {"seed": seed},
        **({"net12_model": f"models:/paper-vs-tuned-net12-s{seed}/1"} if model == "net3" else {}),
    }
    config = SweepConfig.from_dict(values, profile=resolve_profile("auto"), where=f"{model}.yaml", overrides=overrides)
    return run_sweep(config)


def row(model: str, seed: int, outcome: SweepOutcome, seconds: float) -> dict:
    """One sweep's paper trial against its winner."""
    paper, winner = outcome.paper.paper, outcome.winner
    values = {
        "model": model,
        "seed": seed,
        "trials": outcome.trials,
        "minutes": seconds / 60,
        "winner_is_paper": paper is not None and paper.run_id == winner.run_id,
        "winner_params": winner.params,
        "winner_val_abs_rel": winner.val_metrics["val_abs_rel"],
        "winner_test_abs_rel": winner.test_metrics["abs_rel"],
    }
    if paper is not None:
        values.update(
            {
                "paper_val_abs_rel": paper.val_metrics["val_abs_rel"],
                "paper_test_abs_rel": paper.test_metrics["abs_rel"],
                "gain_val_pct": 100 * outcome.paper.gains["val_abs_rel"],
                "gain_test_pct": 100 * outcome.paper.gains["test_abs_rel"],
            }
        )
    return values


def print_table(rows: list[dict]) -> None:
    print(
        "\n| model | seed | paper val abs rel | winner val abs rel | gain (val) "
        "| paper test abs rel | winner test abs rel | gain (test) | winner |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "paper_val_abs_rel" not in r:
            print(
                f"| {r['model']} | {r['seed']} | (paper trial failed) | {r['winner_val_abs_rel']:.4f} | | "
                f"| {r['winner_test_abs_rel']:.4f} | | |"
            )
            continue
        who = "paper" if r["winner_is_paper"] else ", ".join(f"{k}={v:.3g}" for k, v in r["winner_params"].items())
        print(
            f"| {r['model']} | {r['seed']} | {r['paper_val_abs_rel']:.4f} | {r['winner_val_abs_rel']:.4f} "
            f"| {r['gain_val_pct']:+.1f}% "
            f"| {r['paper_test_abs_rel']:.4f} | {r['winner_test_abs_rel']:.4f} | {r['gain_test_pct']:+.1f}% | {who} |"
        )
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and "gain_val_pct" in r]
        if mine:
            papers = [r["paper_test_abs_rel"] for r in mine]
            print(
                f"{model}: median gain {statistics.median(r['gain_val_pct'] for r in mine):+.1f}% (val), "
                f"{statistics.median(r['gain_test_pct'] for r in mine):+.1f}% (test); "
                "paper trial's test abs rel over seeds "
                f"{min(papers):.4f}-{max(papers):.4f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--models", nargs="+", default=list(MODELS), choices=MODELS, help="net3 needs net12 in the same run"
    )
    parser.add_argument("--json", type=Path, help="write every row here (rewritten after each sweep)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    defaults = read_yaml(shipped_config("net12"))
    data = resolve_data(
        None, synthetic_path=defaults["synthetic_path"], synthetic_frames=defaults["synthetic_frames"], workers=2
    ).resolve()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir:
        backend, artifacts = embedded_store(Path(workdir))
        with TrackingServer(backend, artifacts, log_path=Path(workdir) / "mlflow-server.log") as server:
            ray.init(include_dashboard=False, log_to_driver=False)
            previous = os.getcwd()
            os.chdir(workdir)
            try:
                for seed in args.seeds:
                    for model in args.models:
                        started = time.monotonic()
                        outcome = sweep(model, seed, server.uri, Path(workdir) / "ray_results", data)
                        rows.append(row(model, seed, outcome, time.monotonic() - started))
                        last = rows[-1]
                        print(
                            f"{model} seed {seed}: {last['minutes']:.1f} min, "
                            f"winner val abs rel {last['winner_val_abs_rel']:.4f}, "
                            f"paper {last.get('paper_val_abs_rel', float('nan')):.4f}",
                            flush=True,
                        )
                        if args.json:
                            args.json.write_text(json.dumps(rows, indent=1))
            finally:
                os.chdir(previous)
                ray.shutdown()
    print_table(rows)


if __name__ == "__main__":
    main()
