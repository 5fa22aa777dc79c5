"""Optuna TPE inside Ray Tune, told the truth about ASHA: a trial stopped before its full epoch
budget is recorded as PRUNED (with its per-epoch values as intermediate reports), not as a
finished trial whose low-budget score TPE would rank against fully trained ones; a trial that
failed for good is recorded as FAIL even when it had reported epochs."""

from __future__ import annotations

import logging

from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that marks trials ending before ``max_epochs`` reported epochs as pruned and
    errored trials as failed."""

    def __init__(self, *args, max_epochs: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        reached = (result or {}).get(TRAINING_ITERATION, 0)
        finished = not error and (not result or reached >= self.max_epochs)
        if finished or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        state = TrialState.FAIL if error else TrialState.PRUNED
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)
        logger.debug("trial %s ended after %d of %d epochs: told Optuna %s", trial_id, reached, self.max_epochs, state.name)
