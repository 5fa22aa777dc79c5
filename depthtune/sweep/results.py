"""Reading a finished sweep's results: each trial's best checkpoint by the selection metric, the
winner among trials that trained their whole budget, its test metrics and those of the
paper-settings trial, and every trial's run completed from Tune's own record."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mlflow import MlflowClient
from ray import tune
from torch import nn

from depthtune.checkpoints import BASE_KEY, load_checkpoint
from depthtune.data import NYUArrays
from depthtune.evaluation import evaluate_model
from depthtune.metrics import relative_gain
from depthtune.predictor import write_model_files
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.ledger import TrialLedger, end_status, finished_budget
from depthtune.sweep.plan import SweepPlan
from depthtune.tracking.lineage import load_checkpoint_model
from depthtune.tracking.runs import DIVERGED_TAG, RUN_ID_KEY, RunLogger

logger = logging.getLogger(__name__)


@dataclass
class EvaluatedTrial:
    """A trial's best checkpoint, what chose it (its best epoch's validation metrics) and what is
    reported about it (its metrics on the test split)."""

    trial_id: str
    run_id: str
    params: dict[str, Any]
    best_epoch: int
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    checkpoint: Path


@dataclass
class PaperComparison:
    """The sweep's winner against its paper-settings trial, on validation and on test: ``gains``
    maps ``val_<metric>`` / ``test_<metric>`` to the winner's relative improvement (positive:
    the tuned settings are better). ``paper`` is None, with ``missing`` saying why, when the
    paper trial has no result (it failed or diverged)."""

    paper: EvaluatedTrial | None
    gains: dict[str, float]
    missing: str = ""


def best_checkpoint(result: tune.Result, config: SweepConfig) -> tuple[tune.Checkpoint, dict[str, Any]] | None:
    """The trial's checkpoint of its best epoch by the sweep's metric, with the metrics reported
    alongside it: trials checkpoint every new best and Tune keeps the best ones."""
    if not result.best_checkpoints:
        return None
    pick = min if config.mode == "min" else max
    return pick(result.best_checkpoints, key=lambda kept: kept[1][config.metric])


def best_finished_result(results: Sequence[tune.Result], config: SweepConfig) -> tune.Result:
    """The trial with the best epoch among those that trained their whole budget (ASHA-stopped
    trials only when none did): a stopped trial's early score is not a finished result."""
    usable = [r for r in results if r.error is None and r.metrics and config.metric in r.metrics_dataframe]
    finished = [r for r in usable if finished_budget(r.metrics, config.epochs)]
    candidates = finished or usable
    if not candidates:
        raise RuntimeError(
            f"every trial of the sweep failed or diverged before its first epoch; see the trial errors under "
            f"{Path(results[0].path).parent if results else 'the sweep folder'} and the trials' runs in MLflow "
            f"(tag {DIVERGED_TAG})"
        )
    pick = min if config.mode == "min" else max
    return pick(candidates, key=lambda r: float(getattr(r.metrics_dataframe[config.metric], config.mode)()))


def all_trials_ended(results: tune.ResultGrid, config: SweepConfig) -> bool:
    """Whether the sweep ran to its end: every sample was started, and every trial ended (finished,
    stopped by ASHA or failed for good) rather than being left paused by an interruption."""
    return len(results) >= config.num_samples and results.num_terminated + results.num_errors == len(results)


def paper_result(results: Sequence[tune.Result], config: SweepConfig) -> tune.Result | None:
    """The sweep's paper-settings trial, if it has a checkpoint to evaluate."""
    for result in results:
        if result.config and config.is_baseline(result.config):
            return result if result.best_checkpoints else None
    return None


def evaluate_trial(
    result: tune.Result, plan: SweepPlan, client: MlflowClient, arrays: NYUArrays
) -> tuple[EvaluatedTrial, nn.Module]:
    """Test a trial's best checkpoint (the one its selection metric chose) and log the test
    metrics into its run; returns the evaluation and the loaded model."""
    config = plan.config
    checkpoint, metrics = best_checkpoint(result, config)
    params = {name: result.config[name] for name in config.space}
    with checkpoint.as_directory() as directory:
        model = load_checkpoint_model(
            directory, expected=config.model, tracking_uri=plan.tracking.uri, known=plan.base_model
        )
    trial_config = plan.trial_config(params)
    test_metrics = evaluate_model(model, trial_config, arrays)
    run_id = result.metrics[RUN_ID_KEY]
    RunLogger(client, run_id).log_epoch({f"test_{k}": v for k, v in test_metrics.items()}, step=trial_config.epochs)
    evaluated = EvaluatedTrial(
        trial_id=result.metrics["trial_id"],
        run_id=run_id,
        params=params,
        best_epoch=int(metrics["epoch"]) + 1,
        val_metrics={k: float(v) for k, v in metrics.items() if k.startswith("val_")},
        test_metrics=test_metrics,
        checkpoint=Path(checkpoint.path),
    )
    return evaluated, model


def compare_with_paper(
    winner: EvaluatedTrial, paper: EvaluatedTrial | None, metric: str, missing: str = ""
) -> PaperComparison:
    """The winner's relative gain over the paper-settings trial on the selection metric
    (validation) and on every test metric."""
    if paper is None:
        return PaperComparison(None, {}, missing)
    gains = {metric: relative_gain(metric, winner.val_metrics[metric], paper.val_metrics[metric])}
    gains.update(
        {f"test_{k}": relative_gain(k, winner.test_metrics[k], paper.test_metrics[k]) for k in winner.test_metrics}
    )
    return PaperComparison(paper, gains)


def paper_comparison(
    results: Sequence[tune.Result], winner: EvaluatedTrial, plan: SweepPlan, client: MlflowClient, arrays: NYUArrays
) -> PaperComparison:
    """The winner against the paper-settings trial, which is tested too unless it is the winner."""
    metric = plan.config.metric
    paper = paper_result(results, plan.config)
    if paper is None:
        return compare_with_paper(
            winner, None, metric, "the paper-settings trial has no checkpoint (it failed or diverged)"
        )
    if paper.metrics[RUN_ID_KEY] == winner.run_id:
        return compare_with_paper(winner, winner, metric)
    return compare_with_paper(winner, evaluate_trial(paper, plan, client, arrays)[0], metric)


def log_best_weights(client: MlflowClient, results: tune.ResultGrid, config: SweepConfig) -> None:
    """Each trial's best checkpoint as weights + architecture JSON into its run's ``best_model/`` (a
    Net3's scale-3 weights and the reference of its Net12, as in the checkpoint), and the best epoch as tags."""
    for result in results:
        run_id = (result.metrics or {}).get(RUN_ID_KEY)
        best = best_checkpoint(result, config)
        if best is None or not run_id:
            continue
        checkpoint, metrics = best
        with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as staging:
            state = load_checkpoint(directory)
            write_model_files(staging, state["model_name"], state["model_config"], state["model"], state.get(BASE_KEY))
            client.log_artifacts(run_id, staging, "best_model")
        RunLogger(client, run_id).set_tags(
            {
                "depthtune.best_epoch": int(metrics["epoch"]) + 1,
                f"depthtune.best_{config.metric}": metrics[config.metric],
            }
        )


def close_trial_runs(client: MlflowClient, results: tune.ResultGrid, budget: int) -> None:
    """Every trial's run complete and closed, from Tune's own record of what each trial reported:
    the callback does this as trials end, but a driver killed before its writes went out leaves
    runs RUNNING or short of epochs, and a resumed sweep does not end those trials again."""
    for result in results:
        run_id = (result.metrics or {}).get(RUN_ID_KEY)
        if not run_id or client.get_run(run_id).info.status != "RUNNING":
            continue
        frame = result.metrics_dataframe
        ledger = TrialLedger.from_results(frame.to_dict("records") if frame is not None else [])
        status = end_status(result.metrics, budget, errored=result.error is not None)
        filled = ledger.complete_run(client, run_id, status)
        logger.info(
            "closed trial run %s left RUNNING by an earlier driver (%s, %d epochs filled in)", run_id, status, filled
        )
