"""What a finished sweep hands back (``SweepOutcome``) and the summary the user reads at its end: the
winner, the paper-settings trial, which split chose and which is reported, and where to look."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthtune.data.splits import Splits
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.results import EvaluatedTrial, PaperComparison
from depthtune.tracking.registry import Registration


@dataclass
class SweepOutcome:
    """Where a finished sweep's results are, which trial won, and how it compares with the paper's settings."""

    sweep_run_id: str
    experiment_id: str
    tracking_uri: str
    results_path: Path
    trials: int
    metric: str
    splits: Splits
    winner: EvaluatedTrial
    paper: PaperComparison
    registration: Registration
    dashboard: Path
    study: str


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _test_text(metrics: dict[str, float]) -> str:
    return f"abs_rel={metrics['abs_rel']:.4f}, rmse={metrics['rmse']:.4f}, delta1={metrics['delta1']:.4f}"


def paper_lines(outcome: SweepOutcome) -> list[str]:
    """The summary's comparison of the winner with the paper-settings trial."""
    comparison, metric = outcome.paper, outcome.metric
    if comparison.paper is None:
        return [f"paper settings: no result to compare with ({comparison.missing})"]
    paper = comparison.paper
    lines = [
        f"paper settings (trial {paper.trial_id}: {_params_text(paper.params)}): best epoch {paper.best_epoch}: "
        f"{metric}={paper.val_metrics[metric]:.4f}; test split: {_test_text(paper.test_metrics)}",
    ]
    if paper.run_id == outcome.winner.run_id:
        lines.append(
            "  the paper's settings won this sweep: no sampled setting beat them on validation within this budget"
        )
    else:
        lines.append(
            f"  gain over the paper's settings (positive = tuning helped): validation {metric} "
            f"{100 * comparison.gains[metric]:+.1f}%, test abs_rel {100 * comparison.gains['test_abs_rel']:+.1f}%, "
            f"test rmse {100 * comparison.gains['test_rmse']:+.1f}%, "
            f"test delta1 {100 * comparison.gains['test_delta1']:+.1f}%"
        )
    return lines


def summary_text(outcome: SweepOutcome, config: SweepConfig) -> str:
    """What the user sees at the end: the winner, the paper-settings trial, which split chose and
    which is reported, and where to look."""
    winner, metric = outcome.winner, outcome.metric
    val = ", ".join(
        f"{k}={winner.val_metrics[k]:.4f}"
        for k in dict.fromkeys((metric, "val_abs_rel", "val_rmse", "val_delta1"))
        if k in winner.val_metrics
    )
    splits = outcome.splits
    # MLflow 3's UI opens every experiment in its GenAI view unless the address asks for model training
    page = f"#/experiments/{outcome.experiment_id}?workflowType=machine_learning"
    if config.tracking_uri and config.tracking_uri.startswith(("http://", "https://")):
        ui = (
            f"open {config.tracking_uri.rstrip('/')}/{page} "
            "(the tracking server's UI; from a laptop through an SSH tunnel, docs/cluster.md)"
        )
    elif config.tracking_uri:
        ui = (
            f"{sys.executable} -m mlflow ui --backend-store-uri {config.tracking_uri}   "
            f"(then open http://127.0.0.1:5000/{page})"
        )
    else:
        # this interpreter's mlflow: the command works in a shell where the environment is not activated
        ui = f"cd {Path.cwd()} && {sys.executable} -m mlflow ui   (then open http://127.0.0.1:5000/{page})"
    return "\n".join(
        [
            f"sweep {config.experiment_name}: {outcome.trials} trials, results in {outcome.results_path}",
            f"chosen on validation {metric} ({len(splits.val)} frames, split {splits.source}: no scene in two splits); "
            f"the test split ({len(splits.test)} frames) is reported, never used to choose",
            f"best trial {winner.trial_id} (MLflow run {winner.run_id}): {_params_text(winner.params)}",
            f"  best epoch {winner.best_epoch}: {val}",
            f"  checkpoint: {winner.checkpoint}",
            f"  test split: {_test_text(winner.test_metrics)}",
            *paper_lines(outcome),
            f"registered {outcome.registration.name} version {outcome.registration.version} as "
            f"@{outcome.registration.alias} ({outcome.registration.reason}): load it with "
            f'depthtune.load_model("{outcome.registration.name}@{outcome.registration.alias}")',
            f"sweep run id: {outcome.sweep_run_id} (experiment {outcome.experiment_id})",
            f"dashboard: {outcome.dashboard} (also an artifact of the sweep run)",
            f"Optuna study: {outcome.study}",
            f"look at it: {ui}",
        ]
    )
