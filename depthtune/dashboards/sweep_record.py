"""A finished (or running) sweep as MLflow recorded it: the parent run's settings, its comparison
of the winner with the paper-settings trial, and, per trial, its hyperparameters, status, whether
it is that baseline, per-epoch validation metric and mean device utilisation. Everything the sweep dashboard
shows comes from here, so it can be rebuilt later from the tracking server alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow import MlflowClient

from depthtune.paper_settings import BASELINE_TAG, PAPER
from depthtune.search_space import ParamRange, parse_search_space
from depthtune.tracking.runs import SWEEP_TAG, TRIAL_TAG
from depthtune.tracking.system_metrics import Utilisation, mean_utilisation


@dataclass
class TrialRecord:
    """One trial: its run, hyperparameters, status, learning curve (1-based epoch, value), whether
    it ran the paper's settings, and its mean GPU (else CPU) utilisation from its system metrics."""

    trial_id: str
    run_id: str
    name: str
    status: str
    params: dict[str, float]
    curve: list[tuple[int, float]]
    paper: bool = False
    utilisation: Utilisation | None = None

    def best(self, mode: str) -> float | None:
        values = [value for _, value in self.curve]
        return (min if mode == "min" else max)(values) if values else None

    @property
    def epochs(self) -> int:
        return max((epoch for epoch, _ in self.curve), default=0)


@dataclass
class SweepRecord:
    """The sweep's settings, its trials, and what its run records of the winner against the
    paper's settings (``winner_*``, ``baseline_*``, ``gain_vs_paper_*`` metrics, gains in percent)."""

    sweep_run_id: str
    name: str
    model: str
    metric: str
    mode: str
    epochs: int
    space: dict[str, ParamRange]
    trials: list[TrialRecord]
    winner_run_id: str | None
    versus_paper: dict[str, float]

    def stopped_early(self, trial: TrialRecord) -> bool:
        """Stopped by ASHA: ended KILLED before its epoch budget."""
        return trial.status == "KILLED" and trial.epochs < self.epochs

    def finished(self) -> list[TrialRecord]:
        """Trials that trained their whole budget and ended FINISHED."""
        return [t for t in self.trials if t.status == "FINISHED" and t.epochs >= self.epochs]

    def ranked(self) -> list[TrialRecord]:
        """Trials with a value, best first."""
        scored = [t for t in self.trials if t.best(self.mode) is not None]
        return sorted(scored, key=lambda t: t.best(self.mode), reverse=self.mode == "max")


def _number(text: str, kind: str) -> float:
    return int(float(text)) if kind == "int" else float(text)


def load_sweep(client: MlflowClient, sweep_run_id: str) -> SweepRecord:
    """Read a sweep's parent run and every trial run nested under it."""
    parent = client.get_run(sweep_run_id)
    params = parent.data.params
    missing = [key for key in ("search_space", "metric", "mode", "epochs") if key not in params]
    if missing:
        raise ValueError(f"run {sweep_run_id} is not a depthtune sweep run: its params lack {missing}")
    space = parse_search_space(json.loads(params["search_space"]), where=f"sweep run {sweep_run_id}: search_space")
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_run_id}'", max_results=5000
    )
    trials = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = client.get_metric_history(run.info.run_id, params["metric"])
        trials.append(
            TrialRecord(
                trial_id=run.data.tags.get(TRIAL_TAG, run.info.run_id),
                run_id=run.info.run_id,
                name=run.info.run_name,
                status=run.info.status,
                params={k: _number(run.data.params[k], space[k].kind) for k in space if k in run.data.params},
                curve=sorted((m.step + 1, m.value) for m in history),
                paper=run.data.tags.get(BASELINE_TAG) == PAPER,
                utilisation=mean_utilisation(client, run.info.run_id, list(run.data.metrics)),
            )
        )
    return SweepRecord(
        sweep_run_id=sweep_run_id,
        name=parent.info.run_name,
        model=params.get("model", "?"),
        metric=params["metric"],
        mode=params["mode"],
        epochs=int(params["epochs"]),
        space=space,
        trials=trials,
        winner_run_id=parent.data.tags.get("depthtune.best_run_id"),
        versus_paper={
            k: v for k, v in parent.data.metrics.items() if k.startswith(("winner_", "baseline_", "gain_vs_paper_"))
        },
    )
