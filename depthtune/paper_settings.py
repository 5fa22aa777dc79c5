"""The papers' own hyperparameters, which every sweep runs as its first trial (the baseline a tuned
champion must beat on the same data and budget). A sweep config states them with their source;
the StepLR step is given as the fraction of the training budget after which the paper lowers its
learning rate, so the baseline keeps the paper's schedule at any ``train.epochs``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from depthtune.config import from_dict
from depthtune.search_space import TUNED, ParamRange

BASELINE_TAG = "depthtune.baseline"
PAPER = "paper"


@dataclass(frozen=True)
class PaperSettings:
    """``lr``, ``momentum`` and ``grad_weight`` as published; ``step_fraction`` places the first
    learning-rate step (StepLR, gamma from the training settings) at that share of the epochs;
    ``source`` cites where each value comes from and what was chosen where the paper is silent."""

    lr: float
    momentum: float
    step_fraction: float
    grad_weight: float
    source: str

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "paper_settings") -> "PaperSettings":
        settings = from_dict(cls, values, where=where)
        problems = []
        for key in ("lr", "momentum", "step_fraction", "grad_weight"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{key}={value!r}: expected a number")
        if not problems and not (0 < settings.step_fraction <= 1):
            problems.append(f"step_fraction={settings.step_fraction!r}: expected a share of the epochs in (0, 1]")
        if not isinstance(settings.source, str) or not settings.source.strip():
            problems.append("source: cite the paper (and say what was chosen where it is silent)")
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))
        return settings

    def params(self, epochs: int) -> dict[str, float | int]:
        """The four tuned hyperparameters as the paper sets them, for a run of ``epochs`` epochs."""
        return {
            "lr": float(self.lr),
            "momentum": float(self.momentum),
            "step_size": max(1, int(round(self.step_fraction * epochs))),
            "grad_weight": float(self.grad_weight),
        }


def baseline_problems(paper: dict[str, float | int], space: dict[str, ParamRange], fixed: dict[str, Any]) -> list[str]:
    """Why a sweep could not run the paper's settings as its baseline trial: a searched range that
    does not contain the paper's value (TPE could never reach it, nor model it), or a fixed
    training setting that differs from it (the trial would not be the paper's)."""
    problems = []
    for name in TUNED:
        value = paper[name]
        if name in space and not space[name].contains(value):
            problems.append(
                f"paper_settings give {name}={value:g}, "
                f"outside search_space.{name} [{space[name].low:g}, {space[name].high:g}]: "
                "widen the range so that the search contains the published settings"
            )
        elif name not in space and name in fixed and fixed[name] != value:
            problems.append(
                f"train.{name}={fixed[name]!r} differs from the paper's {value:g}: "
                "the baseline trial would not be the paper's settings"
            )
    return problems
