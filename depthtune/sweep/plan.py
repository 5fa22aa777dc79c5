"""What a sweep decided before Tune starts, built once by the driver from the config, the command
line and the environment, and handed whole to every trial: no setting is worked out twice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthtune.data.splits import Splits
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.study import StudyTarget, WarmStart
from depthtune.tracking.lineage import BaseModel
from depthtune.train_config import TrainConfig


@dataclass(frozen=True)
class TrackingTarget:
    """Where a sweep's runs go: the tracking server, the experiment, the sweep's parent run, and
    the lineage tags (the pinned Net12 under a Net3) every run carries."""

    uri: str
    experiment_id: str
    parent_run_id: str
    lineage: dict[str, str]


@dataclass(frozen=True)
class SweepPlan:
    """One sweep, settled: ``config`` carries its variant's layers and per-layer rates in ``train``;
    ``data`` is the dataset file every trial reads (its one copy travels through Ray's object store);
    ``study`` the persistent Optuna study; ``extension`` which ``--extend`` of the sweep this run is
    (0: its first run); ``warm_start`` an earlier sweep's finished trials its searcher starts from;
    ``verbose`` keeps Ray's, MLflow's and Optuna's own console output (else depthtune.sweep.console)."""

    config: SweepConfig
    name: str
    storage: Path
    data: Path
    data_sha256: str
    splits: Splits
    tracking: TrackingTarget
    base_model: BaseModel | None
    study: StudyTarget
    extension: int = 0
    warm_start: WarmStart | None = None
    verbose: bool = False

    @property
    def experiment_dir(self) -> Path:
        """The sweep's folder: the state file, the first Tune run's results, and its extensions'."""
        return self.storage / self.name

    @property
    def tune_dirs(self) -> list[Path]:
        """Each Tune run of the sweep, oldest first: the first in its folder, extension k in ``extend-k``."""
        return [self.experiment_dir] + [self.experiment_dir / f"extend-{k}" for k in range(1, self.extension + 1)]

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The training config of the trial that sampled ``params``."""
        return self.config.trial_config(
            params,
            data=str(self.data),
            net12_checkpoint=self.base_model.pinned if self.base_model is not None else None,
        )
