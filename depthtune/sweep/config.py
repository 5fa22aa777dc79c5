"""A sweep's settings, from a YAML file (the shipped depthtune/configs/<model>.yaml) and CLI overrides, with
per-profile overrides (e.g. a small CPU sweep) merged in before validation."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any

from depthtune.config import from_dict
from depthtune.names import MODEL_NAMES, SELECTABLE_METRICS, metric_mode
from depthtune.paper_settings import PaperSettings, baseline_problems
from depthtune.profiles import VARIANTS
from depthtune.search_space import TUNED, ParamRange, parse_search_space
from depthtune.train_config import TrainConfig

SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha", "fifo")
# Metrics that a tuned setting changes by itself, for the same predictions: a sweep may not select on
# them while it searches that setting (a smaller grad_weight lowers val_loss without better depth).
WEIGHTED_BY = {"val_loss": ("grad_weight",)}


def _merged(values: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``layer`` on top, nested dicts merged key by key."""
    for key, value in layer.items():
        values[key] = (
            {**values[key], **value} if isinstance(value, dict) and isinstance(values.get(key), dict) else value
        )
    return values


def _fit_to_budget(values: dict[str, Any], configured: int, budget: int, overrides: dict[str, Any]) -> None:
    """For an epoch budget set on the command line (``--epochs 1`` for a smoke test): ASHA's grace
    period shrinks to at most the budget, and a searched StepLR step-size range, written in epochs
    of the configured budget, scales with it as the paper's step size does (so it still holds it;
    a range shrunk to one value becomes a fixed setting). What the overrides set is left alone."""
    if "grace_period" not in overrides and isinstance(values.get("grace_period"), int):
        values["grace_period"] = min(values["grace_period"], budget)
    step = (values.get("search_space") or {}).get("step_size")
    if "search_space" not in overrides and isinstance(step, dict) and step.get("type") == "int":
        low, high = (max(1, round(step[bound] * budget / configured)) for bound in ("low", "high"))
        space = {name: spec for name, spec in values["search_space"].items() if name != "step_size"}
        if low < high:
            space["step_size"] = {**step, "low": low, "high": high}
        else:  # one value left to try: fixed, as an unsearched hyperparameter is
            values["train"] = {**(values.get("train") or {}), "step_size": low}
        values["search_space"] = space


@dataclass
class SweepConfig:
    """Everything one sweep needs; ``train`` holds the fixed training settings (a tuned
    hyperparameter left out of ``search_space`` is fixed there), ``paper_settings`` the papers'
    hyperparameters that every sweep runs as its first trial (the baseline), ``metric`` the
    validation metric that ASHA, the searcher, the winner and the registry's champion gate compare,
    ``variant`` the layers and per-layer rates (``paper`` or ``project``; None: the profile's
    default, depthtune.profiles), ``net12_model`` the registered Net12 a Net3 sweep refines, ``preview_every`` /
    ``preview_frames`` how often and on how many validation frames trials log prediction grids,
    ``ray_address`` the cluster to run on (None: ``RAY_ADDRESS`` or a local Ray) and
    ``resources_per_trial`` custom Ray resources each trial needs besides CPUs and GPUs;
    ``optuna_storage`` the RDB URL of the sweep's Optuna study (None: SQLite ``optuna.db`` in the
    sweep's folder; on a cluster e.g. the tracking PostgreSQL);
    ``system_metrics_every`` how many seconds apart each trial's run samples CPU, RAM, disk,
    network and its GPUs (MLflow's system metrics; 0: off);
    ``searcher`` (``tpe`` or ``random``) and ``scheduler`` (``asha`` or ``fifo``: every trial
    runs all its epochs) pick the search; random + FIFO is the brute-force baseline;
    ``startup_trials`` is how many seeded random trials TPE draws before it models the results
    (fewer than Optuna's 10: with tens of trials, 10 random ones are a third of the budget); Tune
    keeps each trial's ``keep_checkpoints`` best checkpoints by ``metric`` plus its newest."""

    model: str
    search_space: dict[str, Any]
    paper_settings: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    name: str | None = None
    data: str | None = None
    splits_file: str | None = None
    synthetic_frames: int = 300
    synthetic_path: str = "data/synthetic_nyu_300f_3v.mat"
    synthetic_workers: int = max(1, min(4, os.cpu_count() or 1))
    profile: str = "auto"
    variant: str | None = None
    metric: str = "val_abs_rel"
    num_samples: int = 8
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    resources_per_trial: dict[str, float] = field(default_factory=dict)
    searcher: str = "tpe"
    scheduler: str = "asha"
    startup_trials: int = 4
    grace_period: int = 1
    reduction_factor: int = 2
    max_failures: int = 2
    keep_checkpoints: int = 2
    seed: int = 0
    preview_every: int = 2
    preview_frames: int = 4
    system_metrics_every: float = 5.0
    storage_path: str = "ray_results"
    optuna_storage: str | None = None
    tracking_uri: str | None = None
    ray_address: str | None = None
    net12_model: str = "models:/net12@champion"
    register_as: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], profile: str, where: str = "sweep config", overrides: dict[str, Any] | None = None
    ) -> "SweepConfig":
        """Build from ``values``, then ``profiles[profile]``, then ``overrides`` (e.g. command-line
        flags) merged on top, nested dicts key by key. A budget set in ``overrides`` (``--epochs``)
        rescales what is counted in epochs of the configured budget (``_fit_to_budget``)."""
        merged = _merged(copy.deepcopy(values), (values.get("profiles") or {}).get(profile, {}))
        configured = (merged.get("train") or {}).get("epochs")
        merged = _merged(merged, overrides or {})
        budget = ((overrides or {}).get("train") or {}).get("epochs")
        if isinstance(budget, int) and isinstance(configured, int) and budget >= 1 and budget != configured:
            _fit_to_budget(merged, configured, budget, overrides or {})
        config = from_dict(cls, merged, where=where)
        config.profile = profile
        config.validate(where)
        return config

    @property
    def mode(self) -> str:
        """Optimisation direction of ``metric``: accuracies up, losses and errors down."""
        return metric_mode(self.metric)

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.model

    @property
    def registered_name(self) -> str:
        return self.register_as or self.model

    @cached_property
    def space(self) -> dict[str, ParamRange]:
        """The parsed search space (parsed once per config)."""
        return parse_search_space(self.search_space)

    def validate(self, where: str = "sweep config") -> None:
        """Every bad value is named: model, metric, counts, resources, the space and the train block."""
        problems = []
        if self.model not in MODEL_NAMES:
            problems.append(f"model={self.model!r}: expected one of {list(MODEL_NAMES)}")
        if self.variant is not None and self.variant not in VARIANTS:
            problems.append(f"variant={self.variant!r}: expected one of {sorted(VARIANTS)} or null (the profile's)")
        if self.metric not in SELECTABLE_METRICS:
            problems.append(f"metric={self.metric!r}: expected one of {list(SELECTABLE_METRICS)}")
        for key, choices in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
            if getattr(self, key) not in choices:
                problems.append(f"{key}={getattr(self, key)!r}: expected one of {list(choices)}")
        for key in (
            "num_samples",
            "max_concurrent",
            "startup_trials",
            "grace_period",
            "keep_checkpoints",
            "synthetic_frames",
            "synthetic_workers",
            "preview_every",
        ):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                problems.append(f"{key}={value!r}: expected an integer >= 1")
        if not (isinstance(self.reduction_factor, int) and self.reduction_factor >= 2):
            problems.append(f"reduction_factor={self.reduction_factor!r}: expected an integer >= 2")
        if not (isinstance(self.preview_frames, int) and self.preview_frames >= 0):
            problems.append(
                f"preview_frames={self.preview_frames!r}: expected an integer >= 0 (0 = no prediction grids)"
            )
        if not (isinstance(self.system_metrics_every, (int, float)) and self.system_metrics_every >= 0):
            problems.append(
                f"system_metrics_every={self.system_metrics_every!r}: expected seconds >= 0 (0 = no system metrics)"
            )
        if self.max_failures < 0:
            problems.append(f"max_failures={self.max_failures!r}: expected >= 0")
        if self.cpus_per_trial <= 0:
            problems.append(f"cpus_per_trial={self.cpus_per_trial!r}: expected > 0")
        if self.gpus_per_trial < 0 or (self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial)):
            problems.append(f"gpus_per_trial={self.gpus_per_trial!r}: expected a fraction in [0, 1] or a whole number")
        for resource, amount in self.resources_per_trial.items():
            if resource.lower() in ("cpu", "gpu") or not isinstance(amount, (int, float)) or amount <= 0:
                problems.append(
                    f"resources_per_trial[{resource!r}]={amount!r}: expected a custom resource name with an amount > 0 "
                    "(CPUs and GPUs have cpus_per_trial / gpus_per_trial)"
                )
        if "://" in self.storage_path:
            problems.append(
                f"storage_path={self.storage_path!r}: "
                "depthtune keeps each sweep's state next to Tune's results through "
                "file paths; use a filesystem every node mounts (NFS/EFS, e.g. /mnt/efs/depthtune/ray_results)"
            )
        if self.optuna_storage is not None and "://" not in self.optuna_storage:
            problems.append(
                f"optuna_storage={self.optuna_storage!r}: expected an RDB URL "
                "(sqlite:///path/optuna.db, postgresql://user@host/db) or null (SQLite in the sweep's folder)"
            )
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        try:
            space = self.space
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        searched_twice = sorted(set(self.train) & set(space))
        if searched_twice:
            problems.append(f"train: {searched_twice} are searched; set them in search_space or in train, not both")
        unset = [name for name in TUNED if name not in space and name not in self.train]
        if unset:
            problems.append(
                f"{unset} are neither searched (search_space) nor fixed (train): give each a range or a value"
            )
        for weight in WEIGHTED_BY.get(self.metric, ()):
            if weight in space:
                problems.append(
                    f"metric={self.metric!r} includes {weight} times a term >= 0, and {weight} is searched: "
                    "the search would "
                    f"lower {weight} to lower the metric, not to predict depth better. "
                    "Select on a depth metric (val_abs_rel, "
                    f"val_si_log) or fix {weight} in train"
                )
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        paper = PaperSettings.from_dict(self.paper_settings, where=f"{where}: paper_settings")
        self.trial_config(
            paper.params(self.epochs) | self.train, net12_checkpoint=self.net12_model if self.model == "net3" else None
        )
        if self.grace_period > self.epochs:
            raise ValueError(f"{where}: grace_period={self.grace_period} exceeds train.epochs={self.epochs}")
        problems = baseline_problems(paper.params(self.epochs), space, self.train)
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", next(f.default for f in fields(TrainConfig) if f.name == "epochs")))

    @property
    def paper(self) -> PaperSettings:
        return PaperSettings.from_dict(self.paper_settings)

    @property
    def baseline_params(self) -> dict[str, Any]:
        """The searched hyperparameters at the paper's values: the sweep's first trial."""
        paper = self.paper.params(self.epochs)
        return {name: paper[name] for name in self.space}

    def is_baseline(self, params: dict[str, Any]) -> bool:
        """Whether a trial's sampled hyperparameters are the paper's (the searcher hands the
        baseline's values over unchanged)."""
        return {name: params.get(name) for name in self.space} == self.baseline_params

    def trial_config(
        self, params: dict[str, Any], *, data: str | None = None, net12_checkpoint: str | None = None
    ) -> TrainConfig:
        """The training config of one trial: fixed settings + the sampled hyperparameters, on ``data``
        and, for a Net3, refining the Net12 ``net12_checkpoint`` names."""
        values = {
            **self.train,
            "data": data,
            "splits_file": self.splits_file,
            "net12_checkpoint": net12_checkpoint,
            "model": self.model,
            "select_metric": self.metric,
            **params,
        }
        values["step_size"] = int(values["step_size"])
        return TrainConfig.from_dict(values, where="sweep config: train")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
