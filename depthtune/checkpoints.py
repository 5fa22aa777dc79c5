"""Training checkpoints: one file per epoch holding everything needed to continue exactly, saved
as plain tensors and containers so they load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthtune.models import MODEL_NAMES, build

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "depthtune-checkpoint-1"


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


def model_from_checkpoint(location: str | os.PathLike, expected: str | None = None) -> nn.Module:
    """Rebuild the architecture recorded in a checkpoint and load its weights."""
    state = load_checkpoint(location)
    name = state.get("model_name")
    if name not in MODEL_NAMES:
        raise CheckpointError(f"checkpoint {checkpoint_path(location)} names unknown model {name!r}")
    if expected is not None and name != expected:
        raise CheckpointError(
            f"checkpoint {checkpoint_path(location)} holds a {name!r} model; expected a {expected!r} checkpoint"
        )
    model = build(name, **state["model_config"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {checkpoint_path(location)} does not fit {name} with config {state['model_config']}: {exc}"
        ) from exc
    return model
