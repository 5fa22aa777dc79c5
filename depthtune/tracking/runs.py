"""MLflow runs owned by depthtune rather than by Ray's helpers: runs are found again by their tags
(a trial restored by Tune continues its own run), and each epoch's metrics go out in one
``log_batch`` call instead of one request per value."""

from __future__ import annotations

import math
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

TERMINAL = ("FINISHED", "FAILED", "KILLED")
TRIAL_TAG, SWEEP_TAG = "depthtune.trial_id", "depthtune.sweep_run_id"
DIVERGED_TAG = "depthtune.diverged"  # on a trial's run whose training diverged: why (it ends FAILED)
RUN_ID_KEY, TIMESTAMP_KEY = "mlflow_run_id", "mlflow_timestamp_ms"  # in every Tune result of a trial
# MLflow 3's UI treats an experiment without this tag as a GenAI project (traces); with it, the experiment's
# model-training view opens on its runs (the UI's own GenAI / Model training switch still starts on GenAI:
# a link with ?workflowType=machine_learning picks the second, sweep/summary.py).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def training_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created when missing, tagged as model training so that
    ``mlflow ui`` opens it on its runs (an experiment made by an earlier version gets the tag too)."""
    key, kind = EXPERIMENT_KIND
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, tags={key: kind})
    if experiment.tags.get(key) != kind:
        client.set_experiment_tag(experiment.experiment_id, key, kind)
    return experiment.experiment_id


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    """The id of the run in ``experiment_id`` carrying all ``tags`` (e.g. a trial's id under its
    sweep), or None: how a trial that failed before its first checkpoint finds its run again."""
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=2)
    if len(runs) > 1:
        raise RuntimeError(f"more than one run in experiment {experiment_id} matches {tags}")
    return runs[0].info.run_id if runs else None


class RunLogger:
    """One MLflow run: start or continue it, log epochs in batches, end it with a status."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    @classmethod
    def start(
        cls,
        client: MlflowClient,
        experiment_id: str,
        *,
        name: str,
        parent_run_id: str | None = None,
        params: dict[str, object] | None = None,
        tags: dict[str, str] | None = None,
    ) -> "RunLogger":
        """Create a run (nested under ``parent_run_id`` when given) with its params and tags."""
        all_tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = client.create_run(experiment_id, run_name=name, tags=all_tags)
        logger = cls(client, run.info.run_id)
        if params:
            client.log_batch(logger.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return logger

    @classmethod
    def resume(cls, client: MlflowClient, run_id: str) -> "RunLogger":
        """Continue an existing run (a restored trial): mark it RUNNING again."""
        client.update_run(run_id, status="RUNNING")
        return cls(client, run_id)

    def log_epoch(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """All finite metrics of one epoch in a single request. With the ``timestamp_ms`` of its
        first attempt, sending the same epoch again stores nothing new (MLflow drops exact repeats)."""
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=batch)

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which ``key`` was already logged (the epochs a resumed run must not repeat)."""
        return {metric.step for metric in self.client.get_metric_history(self.run_id, key)}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with a terminal status."""
        if status not in TERMINAL:
            raise ValueError(f"run status {status!r}; expected one of {TERMINAL}")
        self.client.set_terminated(self.run_id, status=status)
