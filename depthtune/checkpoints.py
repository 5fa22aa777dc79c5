"""Training checkpoints: one file per epoch holding everything needed to continue exactly, saved
as plain tensors and containers so they load with ``torch.load(weights_only=True)``. A Net3's holds
only its scale-3 weights and, under ``base_model``, the reference of the frozen Net12 it refines (a
registered version or a checkpoint path): loading one takes that Net12 as a module, resolved by the
caller (depthtune.tracking.lineage.load_checkpoint_model), since this floor knows no registry."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthtune.models import MODEL_NAMES, build

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "depthtune-checkpoint-1"
BASE_KEY = "base_model"
BASE_PREFIX = "net12."


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not the model that was expected."""


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def checkpoint_path(location: str | os.PathLike) -> Path:
    """Accept a checkpoint file or the directory holding one."""
    location = Path(location)
    return location / CHECKPOINT_FILE if location.is_dir() else location


def load_checkpoint(location: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects. Its tensors are mapped from the file
    (copy-on-write), so a caller that needs only the weights never reads the optimizer state, which
    for a paper-size model is most of the file."""
    path = checkpoint_path(location)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"checkpoint {path} could not be read as a depthtune checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a depthtune checkpoint (expected format {FORMAT!r})")
    return state


def without_base(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Net3's state dict without its frozen Net12's entries (``net12.``), which a reference stands for."""
    return {key: value for key, value in weights.items() if not key.startswith(BASE_PREFIX)}


def base_reference(location: str | os.PathLike) -> str | None:
    """The reference of the Net12 a Net3 checkpoint refines and leaves out; None for a self-contained checkpoint."""
    return load_checkpoint(location).get(BASE_KEY)


def build_on_base(
    model_name: str, model_config: dict[str, Any], reference: str | None, base: nn.Module | None, where: str
) -> nn.Module:
    """The architecture ``model_config`` records; with a base ``reference`` (a Net3 stored without its
    Net12), a Net3 on ``base``, the Net12 that reference names, which must have the recorded config."""
    if reference is None:
        return build(model_name, **model_config)
    if base is None:
        raise CheckpointError(
            f"{where} holds a Net3's scale-3 weights without the Net12 they refine, {reference!r}: pass that "
            "Net12 as base (depthtune.tracking.lineage.load_checkpoint_model resolves it)"
        )
    own = {key: value for key, value in model_config.items() if key != "net12_config"}
    recorded = model_config.get("net12_config")
    if getattr(base, "name", None) != "net12" or base.config != recorded:
        raise CheckpointError(
            f"{where} refines the Net12 {reference!r} with config {recorded}; the base given is a "
            f"{getattr(base, 'name', type(base).__name__)} with config {getattr(base, 'config', None)}"
        )
    return build(model_name, net12=base, **own)


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], reference: str | None) -> None:
    """Load stored weights into ``model``; with a base ``reference`` they lack the Net12's, which
    ``model`` already holds. Raises RuntimeError (torch's) or CheckpointError when they do not fit."""
    if reference is None:
        model.load_state_dict(weights)
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    misfits = sorted(unexpected) + sorted(key for key in missing if not key.startswith(BASE_PREFIX))
    if misfits:
        raise CheckpointError(f"weights {misfits[:5]} do not match the {model.name}'s own layers")


def model_from_checkpoint(
    location: str | os.PathLike, expected: str | None = None, base: nn.Module | None = None
) -> nn.Module:
    """Rebuild the architecture recorded in a checkpoint and load its weights. A Net3 checkpoint
    stored without its Net12 needs that Net12 as ``base`` (used as is, not copied); others ignore it."""
    state = load_checkpoint(location)
    path = checkpoint_path(location)
    name = state.get("model_name")
    if name not in MODEL_NAMES:
        raise CheckpointError(f"checkpoint {path} names unknown model {name!r}")
    if expected is not None and name != expected:
        raise CheckpointError(f"checkpoint {path} holds a {name!r} model; expected a {expected!r} checkpoint")
    reference = state.get(BASE_KEY)
    model = build_on_base(name, state["model_config"], reference, base, f"checkpoint {path}")
    try:
        load_weights(model, state["model"], reference)
    except (RuntimeError, CheckpointError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit {name} with config {state['model_config']}: {exc}"
        ) from exc
    return model
