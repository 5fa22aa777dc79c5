"""The sweep's Optuna study, kept in an RDB storage beside the sweep (SQLite ``optuna.db`` in its
folder, or the URL ``optuna_storage`` names, e.g. the cluster's PostgreSQL) and named after the
sweep, so that ``optuna-dashboard`` opens it, ``--extend`` adds trials to it and ``--warm-start``
seeds a new sweep's TPE with its finished trials."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from depthtune.names import metric_mode
from depthtune.sweep.config import SweepConfig

logger = logging.getLogger(__name__)

STUDY_FILE = "optuna.db"
METRIC_ATTR = "depthtune.metric"


def storage_url(config: SweepConfig, sweep_dir: Path) -> str:
    """Where the sweep's study lives: ``config.optuna_storage``, else SQLite in the sweep's folder."""
    return config.optuna_storage or f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


@dataclass(frozen=True)
class StudyTarget:
    """The sweep's study: its storage URL and its name (the sweep's)."""

    url: str
    name: str

    def open(self, config: SweepConfig) -> RDBStorage:
        """The storage holding the study, created (and labelled with the metric its values are
        of) unless it exists: the searcher then loads it, and so does ``optuna.load_study``."""
        storage = RDBStorage(self.url)
        study = optuna.create_study(
            storage=storage,
            study_name=self.name,
            direction="minimize" if metric_mode(config.metric) == "min" else "maximize",
            load_if_exists=True,
        )
        study.set_user_attr(METRIC_ATTR, config.metric)
        return storage


@dataclass(frozen=True)
class WarmStart:
    """An earlier sweep's finished trials, as (params, value) pairs for a new sweep's TPE."""

    sweep: str
    points: list[dict[str, float]]
    values: list[float]
    skipped: int

    def describe(self) -> str:
        skipped = f", {self.skipped} outside this sweep's space left out" if self.skipped else ""
        return f"sweep {self.sweep}: {len(self.points)} finished trials{skipped}"


def finished_trials(url: str, sweep: str, config: SweepConfig) -> WarmStart:
    """The COMPLETE trials of sweep ``sweep``'s study whose every searched value lies in ``config``'s
    space. Refuses a study that optimised another metric: its values mean something else."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise FileNotFoundError(f"--warm-start: sweep {sweep!r} has no Optuna study at {url}")
    try:
        study = optuna.load_study(study_name=sweep, storage=url)
    except KeyError:
        raise FileNotFoundError(f"--warm-start: no Optuna study named {sweep!r} in {url}") from None
    metric = study.user_attrs.get(METRIC_ATTR)
    if metric is not None and metric != config.metric:
        raise ValueError(
            f"--warm-start: sweep {sweep!r} selected on {metric}, this sweep on {config.metric}: "
            "its values cannot seed this search"
        )
    points, values, skipped = [], [], 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        params = {name: trial.params.get(name) for name in config.space}
        if any(value is None or not config.space[name].contains(value) for name, value in params.items()):
            skipped += 1
            continue
        points.append(params)
        values.append(float(trial.value))
    return WarmStart(sweep, points, values, skipped)


def describe_study(target: StudyTarget) -> str:
    """The study's trial counts by state and the command that opens it, e.g. ``net12-... (8 trials:
    5 COMPLETE, 3 PRUNED): optuna-dashboard sqlite:///...``."""
    study = optuna.load_study(study_name=target.name, storage=target.url)
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    return f"{target.name} ({sum(states.values())} trials: {counts}): optuna-dashboard {target.url}"
