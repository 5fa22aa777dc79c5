"""Optuna TPE inside Ray Tune, told the truth about ASHA: a trial stopped before its full epoch
budget is recorded as PRUNED (with its per-epoch values as intermediate reports), not as a
finished trial whose low-budget score TPE would rank against fully trained ones; a trial that
failed for good is recorded as FAIL even when it had reported epochs. Also builds a sweep's
searcher (TPE, or random as the brute-force comparison), whose first trial is the paper's
settings, and scheduler (ASHA, which never stops that trial early, or FIFO) from its config."""

from __future__ import annotations

import logging
import math

from optuna.samplers import RandomSampler, TPESampler
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from depthtune.search_space import optuna_space
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.study import WarmStart

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
        logger.debug(
            "trial %s ended after %d of %d epochs: told Optuna %s", trial_id, reached, self.max_epochs, state.name
        )


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that lets the paper-settings trial train its whole budget, so "the champion beats the
    paper's settings" compares two fully trained models. Its results still enter every rung, so
    the cutoffs other trials face are the ones it sets."""

    def __init__(self, *args, config: SweepConfig, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sweep = config

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (
            action == TrialScheduler.STOP
            and result.get(TRAINING_ITERATION, 0) < self.sweep.epochs
            and self.sweep.is_baseline(trial.config)
        ):
            self._num_stopped -= 1
            logger.info(
                "ASHA would stop the paper-settings trial %s at epoch %d: it trains on",
                trial.trial_id,
                result[TRAINING_ITERATION],
            )
            return TrialScheduler.CONTINUE
        return action


def search_algorithm(
    config: SweepConfig,
    storage: BaseStorage,
    study_name: str,
    *,
    extension: int = 0,
    warm_start: WarmStart | None = None,
) -> BudgetAwareOptunaSearch:
    """The sweep's searcher on its persistent study: seeded Optuna TPE, or seeded uniform random
    sampling (the brute-force comparison) through the same Optuna plumbing, so both draw from the
    same distributions. A new sweep's first trial is the paper's settings (Optuna's enqueued
    trial), and the searcher learns from its result like any other's; ``warm_start`` trials enter
    the study as finished before it. Extension ``k`` of a finished sweep continues its study with
    seed + k (the same seed would repeat the first run's random draws) and no paper trial again."""
    seed = config.seed + extension
    if config.searcher == "tpe":
        sampler = TPESampler(seed=seed, n_startup_trials=config.startup_trials)
    else:
        sampler = RandomSampler(seed=seed)
    searcher = BudgetAwareOptunaSearch(
        optuna_space(config.space),
        metric=config.metric,
        mode=config.mode,
        sampler=sampler,
        max_epochs=config.epochs,
        storage=storage,
        study_name=study_name,
        points_to_evaluate=[] if extension else [config.baseline_params],
    )
    for params, value in zip(warm_start.points, warm_start.values) if warm_start else ():
        searcher.add_evaluated_point(params, value)
    return searcher


def trial_scheduler(config: SweepConfig) -> TrialScheduler:
    """ASHA on training iterations (epochs) that never stops the paper-settings trial early, or
    FIFO: every trial trains its whole budget."""
    if config.scheduler == "fifo":
        return FIFOScheduler()
    return BaselineKeepingASHA(
        time_attr="training_iteration",
        max_t=config.epochs,
        grace_period=config.grace_period,
        reduction_factor=config.reduction_factor,
        config=config,
    )


def stopping_epochs(config: SweepConfig) -> frozenset[int]:
    """Epochs after whose report the scheduler may end a trial's process: ASHA's rungs (placed as
    ASHAScheduler places them) and the last epoch, where ASHA stops every trial; none under FIFO,
    where a trial's function returns by itself after its last epoch."""
    if config.scheduler == "fifo":
        return frozenset()
    rungs = int(math.log(config.epochs / config.grace_period) / math.log(config.reduction_factor) + 1)
    return frozenset(config.grace_period * config.reduction_factor**k for k in range(rungs)) | {config.epochs}


def describe_search(config: SweepConfig) -> dict[str, str]:
    """The searcher and scheduler as the sweep's parent run records them."""
    searcher = (
        f"TPE, seed={config.seed}, {config.startup_trials} random start-up trials"
        if config.searcher == "tpe"
        else f"random, seed={config.seed}"
    )
    scheduler = (
        "FIFO (no early stopping)"
        if config.scheduler == "fifo"
        else f"ASHA(metric={config.metric}, mode={config.mode}, max_t={config.epochs}, "
        f"grace_period={config.grace_period}, reduction_factor={config.reduction_factor}; "
        "never stops the paper-settings trial)"
    )
    return {
        "searcher": f"OptunaSearch({searcher}, first trial the paper's settings, ASHA-stopped trials told as pruned)",
        "scheduler": scheduler,
    }
