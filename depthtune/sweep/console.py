"""What a sweep prints. Quiet by default: a status table every so often, one line per trial that
finished, was stopped by ASHA or failed, and the summary at the end; Ray's per-trial result boxes
and checkpoint notices, MLflow's run links (to a server that is gone when the sweep ends) and
Optuna's study notices stay off unless ``--verbose`` asks for them."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION

from depthtune.names import metric_mode

logger = logging.getLogger(__name__)

NOISY_LOGGERS = ("mlflow", "ray.train", "ray.tune", "alembic")
QUIET_MLFLOW = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def quiet_process() -> None:
    """In this process (the driver, or a trial's worker): only warnings from Ray Train/Tune, MLflow
    and Optuna, and no MLflow "View run ... at http://..." lines or artifact progress bars."""
    os.environ.update(QUIET_MLFLOW)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


class TrialLines(Callback):
    """One line per trial that ended, and at most every ``every_s`` seconds, when a trial moved on,
    a table of all trials (Tune's own output, verbose=0 in a quiet sweep, prints neither)."""

    def __init__(self, metric: str, budget: int, params: list[str], every_s: float = 60.0) -> None:
        self.metric, self.budget, self.params, self.every_s = metric, budget, params, every_s
        self.mode = metric_mode(metric)
        self._last_table = 0.0
        self._last_shown: list[tuple[str, str, int]] = []

    def _best(self, trial: Trial) -> str:
        value = (trial.metric_analysis.get(self.metric) or {}).get(self.mode)
        return f"best {self.metric} {value:.4f}" if value is not None else f"no {self.metric} yet"

    def _epochs(self, trial: Trial) -> int:
        return int((trial.last_result or {}).get(TRAINING_ITERATION, 0))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        epochs = self._epochs(trial)
        ended = "finished" if epochs >= self.budget else "stopped early"
        logger.info("trial %s %s after %d/%d epochs: %s", trial.trial_id, ended, epochs, self.budget, self._best(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        logger.warning(
            "trial %s failed after %d/%d epochs (error file: %s)",
            trial.trial_id,
            self._epochs(trial),
            self.budget,
            trial.error_file,
        )

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        shown = [(trial.trial_id, trial.status, self._epochs(trial)) for trial in trials]
        if now - self._last_table >= self.every_s and shown != self._last_shown:
            self._last_table, self._last_shown = now, shown
            logger.info("%s", self.table(trials))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        logger.info("%s", self.table(trials))

    def table(self, trials: list[Trial]) -> str:
        """Every trial: status, epochs, its best value so far and its hyperparameters."""
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        header = ["trial", "status", "epochs", f"best {self.metric}", *self.params]
        rows = [
            [
                trial.trial_id,
                trial.status,
                f"{self._epochs(trial)}/{self.budget}",
                self._best(trial).removeprefix(f"best {self.metric} "),
                *(_number(trial.config.get(name)) for name in self.params),
            ]
            for trial in trials
        ]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
        lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
        status = ", ".join(f"{count} {state.lower()}" for state, count in sorted(counts.items()))
        return f"trials: {status}\n" + "\n".join(lines)
