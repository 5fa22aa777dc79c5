"""MLflow runs owned by depthtune rather than by Ray's helpers: a trial's run id travels in its
checkpoint, so a trial restored by Tune continues its own run, and each epoch's metrics go out
in one ``log_batch`` call instead of one request per value."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

RUN_ID_FILE = "mlflow_run_id"
TERMINAL = ("FINISHED", "FAILED", "KILLED")


def save_run_id(checkpoint_dir: str | os.PathLike, run_id: str) -> None:
    """Record the run a checkpoint belongs to, inside the checkpoint directory."""
    (Path(checkpoint_dir) / RUN_ID_FILE).write_text(run_id)


def load_run_id(checkpoint_dir: str | os.PathLike) -> str | None:
    """The run id recorded in a checkpoint directory, if any."""
    path = Path(checkpoint_dir) / RUN_ID_FILE
    return path.read_text().strip() if path.is_file() else None


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

    def log_epoch(self, metrics: dict[str, float], step: int) -> None:
        """All finite metrics of one epoch in a single request."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with a terminal status."""
        if status not in TERMINAL:
            raise ValueError(f"run status {status!r}; expected one of {TERMINAL}")
        self.client.set_terminated(self.run_id, status=status)
