"""Driver-side Tune callback that gives every trial's MLflow run its terminal status: FINISHED
when it trained all its epochs, KILLED when ASHA stopped it early, FAILED when it errored for good.
(A stopped trial's process is ended by Tune, so the trial itself cannot say so.)"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION

from depthtune.tracking.runs import RunLogger

logger = logging.getLogger(__name__)


class RunStatusCallback(Callback):
    """Ends each trial's run with FINISHED, KILLED or FAILED."""

    def __init__(self, tracking_uri: str, max_epochs: int, run_id_key: str) -> None:
        self.tracking_uri = tracking_uri
        self.max_epochs = max_epochs
        self.run_id_key = run_id_key

    def _finish(self, trial, status: str) -> None:
        run_id = (trial.last_result or {}).get(self.run_id_key)
        if not run_id:
            logger.warning("trial %s ended (%s) before reporting an epoch: no MLflow run to close", trial.trial_id, status)
            return
        RunLogger(MlflowClient(self.tracking_uri), run_id).finish(status)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reached = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        self._finish(trial, "FINISHED" if reached >= self.max_epochs else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, "FAILED")
