"""The base model a sweep builds on (the Net12 under a Net3): resolved once by the driver to one
fixed registered version, so every trial refines the same weights even if the alias moves during
the sweep, and recorded as tags on the sweep's runs and on the version the sweep registers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient
from torch import nn

from depthtune.checkpoints import load_checkpoint
from depthtune.loading import check_exists, load_model, parse_reference
from depthtune.models import build


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


def resolve_base_model(reference: str, tracking_uri: str, expected: str) -> BaseModel:
    """``models:/net12@champion``, ``net12/3`` or a local checkpoint path -> a pinned BaseModel."""
    if Path(reference).exists():
        state = load_checkpoint(reference)
        model_name, model_config = state.get("model_name"), state.get("model_config", {})
        pinned, source_run, weights = str(Path(reference).resolve()), "none (local checkpoint)", state["model"]
    else:
        name, alias, version = parse_reference(reference)
        client = MlflowClient(tracking_uri)
        check_exists(client, name, alias, version)
        found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
        pinned, source_run = f"models:/{name}/{found.version}", found.run_id or "unknown"
        module = load_model(pinned, tracking_uri=tracking_uri).module
        model_name, model_config, weights = module.name, dict(module.config), module.state_dict()
    if model_name != expected:
        raise ValueError(f"base model {reference!r} is a {model_name!r} model; expected a {expected!r}")
    return BaseModel(reference, pinned, source_run, model_name, model_config, weights)
