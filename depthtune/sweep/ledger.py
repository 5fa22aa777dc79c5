"""A trial's epochs as it reported them to Tune: what its checkpoints carry, what fills in the epochs
a tracking outage kept from its MLflow run, whether it trained its whole budget, and how its run
ends. The trial, the driver's callback and a resumed driver all read these rules from here."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from mlflow import MlflowClient

from depthtune.names import EPOCH_METRICS
from depthtune.tracking.runs import DIVERGED_TAG, TIMESTAMP_KEY, RunLogger


def epochs_done(metrics: Mapping[str, Any] | None) -> int:
    """How many epochs a trial has trained, from the last metrics it reported (0 before any)."""
    if not metrics or metrics.get("epoch") is None:
        return 0
    return int(metrics["epoch"]) + 1


def finished_budget(metrics: Mapping[str, Any] | None, budget: int) -> bool:
    """Whether a trial trained all ``budget`` epochs (ASHA stops the others early)."""
    return epochs_done(metrics) >= budget


def end_status(metrics: Mapping[str, Any] | None, budget: int, errored: bool) -> str:
    """A trial run's terminal status: FAILED on an error, FINISHED after its budget, else KILLED (stopped by ASHA)."""
    return "FAILED" if errored else "FINISHED" if finished_budget(metrics, budget) else "KILLED"


@dataclass(frozen=True)
class EpochRecord:
    """One epoch as reported: its 0-based step, when it was reported and its metrics."""

    step: int
    timestamp_ms: int
    metrics: dict[str, float]

    @classmethod
    def now(cls, metrics: Mapping[str, float]) -> "EpochRecord":
        return cls(int(metrics["epoch"]), int(time.time() * 1000), dict(metrics))

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> "EpochRecord":
        """The record inside a Tune result (a row of Tune's record of a trial, or a live result)."""
        metrics = {key: float(result[key]) for key in EPOCH_METRICS if key in result}
        return cls(int(result["epoch"]), int(result[TIMESTAMP_KEY]), metrics)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "EpochRecord":
        return cls(int(values["step"]), int(values["timestamp_ms"]), dict(values["metrics"]))

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "timestamp_ms": self.timestamp_ms, "metrics": self.metrics}

    def send(self, run: RunLogger) -> None:
        """Log the epoch into ``run`` with its original timestamp."""
        run.log_epoch(self.metrics, step=self.step, timestamp_ms=self.timestamp_ms)


@dataclass
class TrialLedger:
    """Every epoch a trial reported, in order."""

    records: list[EpochRecord] = field(default_factory=list)

    @classmethod
    def from_results(cls, results: Iterable[Mapping[str, Any]]) -> "TrialLedger":
        """From Tune's record of a trial's results; rows without a report timestamp are skipped."""
        return cls([EpochRecord.from_result(row) for row in results if _reported(row)])

    def add(self, metrics: Mapping[str, float]) -> EpochRecord:
        record = EpochRecord.now(metrics)
        self.records.append(record)
        return record

    def missing_from(self, logged_steps: set[int]) -> list[EpochRecord]:
        """The records whose step the run has not logged."""
        return [record for record in self.records if record.step not in logged_steps]

    def complete_run(self, client: MlflowClient, run_id: str, status: str) -> int:
        """Log the epochs the run lacks, then end it with ``status`` (FAILED instead of KILLED when
        the trial ended early because its training diverged); returns how many were filled in."""
        run = RunLogger(client, run_id)
        if status == "KILLED" and DIVERGED_TAG in client.get_run(run_id).data.tags:
            status = "FAILED"
        missing = self.missing_from(run.logged_steps("val_loss"))
        for record in missing:
            record.send(run)
        run.finish(status)
        return len(missing)


def _reported(row: Mapping[str, Any]) -> bool:
    stamp = row.get(TIMESTAMP_KEY)
    return stamp is not None and not math.isnan(float(stamp))
