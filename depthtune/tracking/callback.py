"""Driver-side Tune callback that gives every trial's MLflow run its terminal status: FINISHED
when it trained all its epochs, KILLED when ASHA stopped it early, FAILED when it errored for good.
(A stopped trial's process is ended by Tune, so the trial itself cannot say so.)"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION

from depthtune.tracking.runs import SWEEP_TAG, TRIAL_TAG, RunLogger, find_run

logger = logging.getLogger(__name__)


class RunStatusCallback(Callback):
    """Ends each trial's run with FINISHED, KILLED or FAILED. The run is the one named in the
    trial's last result, or (for a trial that failed before its first epoch) the run of the sweep
    tagged with the trial's id."""

    def __init__(self, tracking_uri: str, max_epochs: int, run_id_key: str, experiment_id: str, sweep_run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.max_epochs = max_epochs
        self.run_id_key = run_id_key
        self.experiment_id = experiment_id
        self.sweep_run_id = sweep_run_id

    def _finish(self, trial, status: str) -> None:
        client = MlflowClient(self.tracking_uri)
        run_id = (trial.last_result or {}).get(self.run_id_key)
        if not run_id:
            run_id = find_run(client, self.experiment_id, {TRIAL_TAG: trial.trial_id, SWEEP_TAG: self.sweep_run_id})
        if not run_id:
            logger.warning("trial %s ended (%s) before opening an MLflow run: nothing to close", trial.trial_id, status)
            return
        RunLogger(client, run_id).finish(status)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reached = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        self._finish(trial, "FINISHED" if reached >= self.max_epochs else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, "FAILED")
