"""Driver-side Tune callback that completes every trial's MLflow run: it fills in any epoch the trial
reported to Tune but could not send to MLflow (a trial stopped by ASHA during a tracking outage dies
with its unsent queue), then gives the run its terminal status: FINISHED when it trained all its
epochs, KILLED when ASHA stopped it early, FAILED when it errored for good or its training diverged.
The writes go through a background writer, so a tracking outage never stalls Tune's loop; the
sweep's end waits for them. Tune pickles callbacks with the sweep and a resumed sweep gets the first
driver's copy, so the callback keeps only the path of the sweep's state file and reads the current
tracking URI from it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION

from depthtune.tracking.runs import DIVERGED_TAG, RUN_ID_KEY, SWEEP_TAG, TIMESTAMP_KEY, TRIAL_TAG, RunLogger, find_run
from depthtune.tracking.writer import BackgroundWriter

logger = logging.getLogger(__name__)


def complete_run(client: MlflowClient, run_id: str, reported: list[dict[str, Any]], status: str) -> int:
    """Log the epochs of ``reported`` ({"timestamp_ms", "metrics"} as the trial reported them to
    Tune) that the run lacks, with their original timestamps, then end the run with ``status``
    (FAILED instead of KILLED when the trial ended early because its training diverged); returns
    how many epochs were filled in."""
    run = RunLogger(client, run_id)
    if status == "KILLED" and DIVERGED_TAG in client.get_run(run_id).data.tags:
        status = "FAILED"
    logged = run.logged_steps("val_loss")
    missing = [r for r in reported if int(r["metrics"]["epoch"]) not in logged]
    for record in missing:
        run.log_epoch(record["metrics"], step=int(record["metrics"]["epoch"]), timestamp_ms=record["timestamp_ms"])
    run.finish(status)
    return len(missing)


class RunStatusCallback(Callback):
    """Fills in and closes each trial's run. The run is the one named in the trial's results, or
    (for a trial that failed before its first epoch) the run of the sweep tagged with its id."""

    def __init__(
        self, state_file: Path, max_epochs: int, metric_keys: tuple[str, ...], flush_timeout: float = 600.0
    ) -> None:
        self.state_file = state_file
        self.max_epochs = max_epochs
        self.metric_keys = metric_keys
        self.flush_timeout = flush_timeout
        self._reported: dict[str, list[dict[str, Any]]] = {}
        self._writer: BackgroundWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reported": {}, "_writer": None}

    def _queue(self, description: str, send) -> None:
        if self._writer is None:
            self._writer = BackgroundWriter("sweep driver")
        self._writer.submit(description, send)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if TIMESTAMP_KEY in result:
            metrics = {key: result[key] for key in self.metric_keys if key in result}
            self._reported.setdefault(trial.trial_id, []).append(
                {"timestamp_ms": int(result[TIMESTAMP_KEY]), "metrics": metrics}
            )

    def _close(self, trial, status: str) -> None:
        reported = self._reported.pop(trial.trial_id, [])
        run_id = (trial.last_result or {}).get(RUN_ID_KEY)
        state_file, trial_id = self.state_file, trial.trial_id

        def fill_in_and_finish() -> None:
            state = json.loads(state_file.read_text())
            client = MlflowClient(state["tracking_uri"])
            found = run_id or find_run(
                client, state["experiment_id"], {TRIAL_TAG: trial_id, SWEEP_TAG: state["parent_run_id"]}
            )
            if not found:
                logger.warning("trial %s ended (%s) before opening an MLflow run: nothing to close", trial_id, status)
                return
            filled = complete_run(client, found, reported, status)
            if filled:
                logger.info("trial %s: filled in %d epochs its process could not send to MLflow", trial_id, filled)

        self._queue(f"closing trial {trial_id}'s run ({status})", fill_in_and_finish)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        reached = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        self._close(trial, "FINISHED" if reached >= self.max_epochs else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info) -> None:
        """The sweep's results are final only once every run is filled in and closed."""
        if self._writer is not None and not self._writer.close(self.flush_timeout):
            logger.error(
                "some trial runs were not closed: the tracking server did not come back within %.0f s",
                self.flush_timeout,
            )
        self._writer = None
