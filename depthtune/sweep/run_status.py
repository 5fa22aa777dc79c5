"""Driver-side Tune callback that completes every trial's MLflow run: it fills in any epoch the trial
reported to Tune but could not send to MLflow (a trial stopped by ASHA during a tracking outage dies
with its unsent queue), then gives the run its terminal status (``ledger.end_status``). The writes
go through a background writer, so a tracking outage never stalls Tune's loop; the sweep's end waits
for them. Tune pickles callbacks with the sweep and a resumed sweep gets the first driver's copy, so
the callback keeps only the path of the sweep's folder and reads the current tracking URI from its
state file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from ray.tune import Callback

from depthtune.sweep.ledger import EpochRecord, TrialLedger, end_status
from depthtune.sweep.state import load_state
from depthtune.tracking.runs import RUN_ID_KEY, SWEEP_TAG, TIMESTAMP_KEY, TRIAL_TAG, find_run
from depthtune.tracking.writer import BackgroundWriter

logger = logging.getLogger(__name__)


class RunStatusCallback(Callback):
    """Fills in and closes each trial's run. The run is the one named in the trial's results, or
    (for a trial that failed before its first epoch) the run of the sweep tagged with its id."""

    def __init__(self, experiment_dir: Path, budget: int, flush_timeout: float = 600.0) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.budget = budget
        self.flush_timeout = flush_timeout
        self._ledgers: dict[str, TrialLedger] = {}
        self._writer: BackgroundWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ledgers": {}, "_writer": None}

    def _queue(self, description: str, send) -> None:
        if self._writer is None:
            self._writer = BackgroundWriter("sweep driver")
        self._writer.submit(description, send)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if TIMESTAMP_KEY in result:
            self._ledgers.setdefault(trial.trial_id, TrialLedger()).records.append(EpochRecord.from_result(result))

    def _close(self, trial, errored: bool) -> None:
        ledger = self._ledgers.pop(trial.trial_id, TrialLedger())
        status = end_status(trial.last_result, self.budget, errored)
        run_id = (trial.last_result or {}).get(RUN_ID_KEY)
        experiment_dir, trial_id = self.experiment_dir, trial.trial_id

        def fill_in_and_finish() -> None:
            state = load_state(experiment_dir)
            client = MlflowClient(state.tracking_uri)
            found = run_id or find_run(
                client, state.experiment_id, {TRIAL_TAG: trial_id, SWEEP_TAG: state.parent_run_id}
            )
            if not found:
                logger.warning("trial %s ended (%s) before opening an MLflow run: nothing to close", trial_id, status)
                return
            filled = ledger.complete_run(client, found, status)
            if filled:
                logger.info("trial %s: filled in %d epochs its process could not send to MLflow", trial_id, filled)

        self._queue(f"closing trial {trial_id}'s run ({status})", fill_in_and_finish)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, errored=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        """The sweep's results are final only once every run is filled in and closed."""
        if self._writer is not None and not self._writer.close(self.flush_timeout):
            logger.error(
                "some trial runs were not closed: the tracking server did not come back within %.0f s",
                self.flush_timeout,
            )
        self._writer = None
