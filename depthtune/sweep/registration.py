"""The sweep's commit point: the winner compared with the paper-settings trial on the sweep's run,
then logged as a model and registered as a version, gated on the selection metric under a protocol
that pins the data, the split and the evaluation."""

from __future__ import annotations

from mlflow import MlflowClient
from torch import nn

from depthtune.metrics import EIGEN_PROTOCOL
from depthtune.sweep.plan import SweepPlan
from depthtune.sweep.results import EvaluatedTrial, PaperComparison
from depthtune.tracking.registry import Registration, log_depth_model, register_version
from depthtune.tracking.runs import RunLogger


def log_paper_comparison(
    parent: RunLogger, winner: EvaluatedTrial, comparison: PaperComparison, metric: str, *, step: int
) -> None:
    """On the sweep's run, at ``step`` (0; k after the sweep's k-th extension): ``winner_*`` and
    ``baseline_*`` (the paper-settings trial) validation and test metrics, and ``gain_vs_paper_*``
    in percent (positive: tuning helped)."""
    values = {
        f"winner_{metric}": winner.val_metrics[metric],
        **{f"winner_test_{k}": v for k, v in winner.test_metrics.items()},
    }
    if comparison.paper is not None:
        values[f"baseline_{metric}"] = comparison.paper.val_metrics[metric]
        values.update({f"baseline_test_{k}": v for k, v in comparison.paper.test_metrics.items()})
        values.update({f"gain_vs_paper_{k}": 100.0 * gain for k, gain in comparison.gains.items()})
    parent.log_epoch(values, step=step)
    parent.set_tags({"depthtune.baseline_run_id": comparison.paper.run_id if comparison.paper else comparison.missing})


def register_winner(plan: SweepPlan, client: MlflowClient, winner: EvaluatedTrial, model: nn.Module) -> Registration:
    """Log the winner as a model in its run and register a version. A run that is already a version
    of the model (a resumed sweep whose driver died after registering) is not registered again."""
    config, name = plan.config, plan.config.registered_name
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{winner.run_id}'")
    if existing:
        version = client.get_model_version(name, str(existing[0].version))  # search results carry no aliases
        alias = next(iter(version.aliases), "no alias")
        return Registration(name, str(version.version), alias, None, "already registered from this trial's run")
    protocol = {
        **EIGEN_PROTOCOL.as_dict(),
        "split": plan.splits.source,
        "val_frames": len(plan.splits.val),
        "test_frames": len(plan.splits.test),
        "data_sha256": plan.data_sha256,
    }
    logged = log_depth_model(model.cpu(), winner.run_id, plan.tracking.uri, step=winner.best_epoch - 1)
    return register_version(
        client,
        plan.tracking.uri,
        logged,
        name,
        selection=(config.metric, winner.val_metrics[config.metric]),
        test_metrics=winner.test_metrics,
        protocol=protocol,
        tags={
            "sweep_run_id": plan.tracking.parent_run_id,
            "run_id": winner.run_id,
            "trial_id": winner.trial_id,
            "data_sha256": plan.data_sha256,
            "profile": config.profile,
            "variant": str(config.variant),
            **{f"param_{k}": str(v) for k, v in winner.params.items()},
            **{key.removeprefix("depthtune."): value for key, value in plan.tracking.lineage.items()},
        },
    )
