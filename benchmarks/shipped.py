"""What the shipped sweep configs say, for benchmarks that run sweeps like a user's."""

from __future__ import annotations

from typing import Any

from depthtune.config import read_yaml
from depthtune.configs import shipped_config


def paper_settings(model: str) -> dict[str, Any]:
    """The ``paper_settings`` block of the shipped <model>.yaml: every sweep's first trial."""
    return read_yaml(shipped_config(model))["paper_settings"]
