"""Driver-side Tune callback that gives every trial's MLflow run its terminal status: FINISHED
when it trained all its epochs, KILLED when ASHA stopped it early, FAILED when it errored for good.
(A stopped trial's process is ended by Tune, so the trial itself cannot say so.) Tune pickles
callbacks with the sweep and a resumed sweep gets the first driver's copy, so the callback keeps
only the path of the sweep's state file and reads the current tracking URI from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mlflow import MlflowClient
from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION

from depthtune.tracking.runs import SWEEP_TAG, TRIAL_TAG, RunLogger, find_run

logger = logging.getLogger(__name__)


class RunStatusCallback(Callback):
    """Ends each trial's run with FINISHED, KILLED or FAILED. The run is the one named in the
    trial's last result, or (for a trial that failed before its first epoch) the run of the sweep
    tagged with the trial's id."""

    def __init__(self, state_file: Path, max_epochs: int, run_id_key: str) -> None:
        self.state_file = state_file
        self.max_epochs = max_epochs
        self.run_id_key = run_id_key

    def _finish(self, trial, status: str) -> None:
        state = json.loads(self.state_file.read_text())
        client = MlflowClient(state["tracking_uri"])
        run_id = (trial.last_result or {}).get(self.run_id_key)
        if not run_id:
            tags = {TRIAL_TAG: trial.trial_id, SWEEP_TAG: state["parent_run_id"]}
            run_id = find_run(client, state["experiment_id"], tags)
        if not run_id:
            logger.warning("trial %s ended (%s) before opening an MLflow run: nothing to close", trial.trial_id, status)
            return
        RunLogger(client, run_id).finish(status)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reached = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        self._finish(trial, "FINISHED" if reached >= self.max_epochs else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, "FAILED")
