"""The base model a sweep builds on (the Net12 under a Net3): resolved once by the driver to one
fixed registered version, so every trial refines the same weights even if the alias moves during
the sweep, and recorded as tags on the sweep's runs and on the version the sweep registers. Net3
checkpoints store that pinned reference instead of the Net12's weights; ``load_checkpoint_model``
resolves it again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from torch import nn

from depthtune.checkpoints import CheckpointError, base_reference, model_from_checkpoint
from depthtune.models import build
from depthtune.tracking.loading import check_exists, load_model, parse_reference


@dataclass(frozen=True)
class BaseModel:
    """A trained model pinned to one version, with its weights ready to ship to the trials."""

    reference: str
    pinned: str
    source_run_id: str
    model_name: str
    model_config: dict[str, Any]
    weights: dict[str, torch.Tensor]

    def module(self) -> nn.Module:
        """A fresh copy of the model (each trial gets its own)."""
        model = build(self.model_name, **self.model_config)
        model.load_state_dict(self.weights)
        return model

    def tags(self, prefix: str = "depthtune.") -> dict[str, str]:
        """Lineage tags: what was asked for, the version it resolved to, and the run that trained it."""
        return {
            f"{prefix}base_model": self.pinned,
            f"{prefix}base_model_requested": self.reference,
            f"{prefix}base_model_run_id": self.source_run_id,
        }


def is_registry_reference(reference: str) -> bool:
    """``models:/...``, or ``NAME@ALIAS`` / ``NAME/VERSION`` naming no local file: a registered model;
    anything else is a checkpoint path."""
    if reference.startswith("models:/"):
        return True
    if Path(reference).exists():
        return False
    try:
        parse_reference(reference)
    except ValueError:
        return False
    return True


def resolve_base_model(reference: str, tracking_uri: str | None, expected: str) -> BaseModel:
    """``models:/net12@champion``, ``net12/3`` or a local checkpoint path -> a pinned BaseModel
    (a registry reference read from ``tracking_uri``, or MLflow's current one when None)."""
    if not is_registry_reference(reference):
        try:
            module = model_from_checkpoint(reference, expected=expected)
        except CheckpointError as exc:
            raise ValueError(f"base model {reference!r}: {exc}") from exc
        pinned, source_run = str(Path(reference).resolve()), "none (local checkpoint)"
    else:
        uri = tracking_uri or mlflow.get_tracking_uri()
        name, alias, version = parse_reference(reference)
        client = MlflowClient(uri)
        check_exists(client, name, alias, version)
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        pinned, source_run = f"models:/{name}/{found.version}", found.run_id or "unknown"
        module = load_model(pinned, tracking_uri=uri).module
        if module.name != expected:
            raise ValueError(f"base model {reference!r} is a {module.name!r} model; expected a {expected!r}")
    return BaseModel(reference, pinned, source_run, module.name, dict(module.config), module.state_dict())


def load_checkpoint_model(
    location: str | os.PathLike,
    expected: str | None = None,
    tracking_uri: str | None = None,
    known: BaseModel | None = None,
) -> nn.Module:
    """Any checkpoint as a model: a Net3's Net12, stored as a reference, is ``known`` when that is the
    version it names (no second download), else resolved here (a registered version read from
    ``tracking_uri``, or a local checkpoint)."""
    reference = base_reference(location)
    base = None
    if reference is not None:
        if known is None or known.pinned != reference:
            known = resolve_base_model(reference, tracking_uri, expected="net12")
        base = known.module()
    return model_from_checkpoint(location, expected=expected, base=base)
