"""depthtune: sweeps of monocular depth networks on Ray Tune, tracked and registered in MLflow."""

from __future__ import annotations

from typing import Any

__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    """``depthtune.load_model`` without importing MLflow for everything else in the package."""
    if name == "load_model":
        from depthtune.tracking.loading import load_model

        return load_model
    raise AttributeError(f"module 'depthtune' has no attribute {name!r}")
