"""What a sweep decided before Tune starts, built once by the driver from the config, the command
line and the environment, and handed whole to every trial: no setting is worked out twice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthtune.data.splits import Splits
from depthtune.sweep.config import SweepConfig
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
    ``data`` is the dataset file every trial reads (its one copy travels through Ray's object store)."""

    config: SweepConfig
    name: str
    storage: Path
    data: Path
    data_sha256: str
    splits: Splits
    tracking: TrackingTarget
    base_model: BaseModel | None

    @property
    def experiment_dir(self) -> Path:
        """The sweep's folder: Tune's results and the sweep's state file."""
        return self.storage / self.name

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The training config of the trial that sampled ``params``."""
        return self.config.trial_config(
            params,
            data=str(self.data),
            net12_checkpoint=self.base_model.pinned if self.base_model is not None else None,
        )
