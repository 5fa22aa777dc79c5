"""What the shipped sweep configs say, for benchmarks that run sweeps like a user's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthtune.config import read_yaml

CONFIGS = Path(__file__).resolve().parent.parent / "experiments" / "configs"


def paper_settings(model: str) -> dict[str, Any]:
    """The ``paper_settings`` block of experiments/configs/<model>.yaml: every sweep's first trial."""
    return read_yaml(CONFIGS / f"{model}.yaml")["paper_settings"]
