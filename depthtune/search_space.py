"""The tuned hyperparameters and their ranges: parsed from a sweep config, validated with errors
that name the parameter, and turned into Optuna distributions for the searcher."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

TUNED: tuple[str, ...] = ("lr", "momentum", "step_size", "grad_weight")
KINDS = ("loguniform", "uniform", "int")


@dataclass(frozen=True)
class ParamRange:
    """One hyperparameter's range: ``loguniform`` and ``uniform`` floats, or ``int`` inclusive."""

    name: str
    kind: str
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high and (self.kind != "int" or value == int(value))

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.kind == "loguniform")


# What each tuned value may be, whatever range a config asks for.
_ALLOWED = {
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "step_size": (lambda v: v >= 1, ">= 1"),
    "grad_weight": (lambda v: v >= 0, ">= 0"),
}
_KIND_OF = {
    "lr": ("loguniform", "uniform"),
    "momentum": ("uniform",),
    "step_size": ("int",),
    "grad_weight": ("uniform",),
}


def parse_search_space(values: dict[str, Any], where: str = "search_space") -> dict[str, ParamRange]:
    """Validate ``{name: {type, low, high}}`` for some of the four tuned hyperparameters (the
    others are fixed in the training settings)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of some of {list(TUNED)} to ranges, got {type(values).__name__}")
    unknown = [n for n in values if n not in TUNED]
    if unknown or not values:
        raise ValueError(f"{where}: expected ranges for one or more of {list(TUNED)}; got {sorted(values)}")
    space = {}
    for name in (n for n in TUNED if n in values):
        spec = values[name]
        here = f"{where}.{name}"
        if not isinstance(spec, dict) or set(spec) != {"type", "low", "high"}:
            raise ValueError(f"{here}: expected {{type, low, high}}, got {spec!r}")
        kind, low, high = spec["type"], spec["low"], spec["high"]
        if kind not in _KIND_OF[name]:
            raise ValueError(f"{here}: type {kind!r} is not allowed; expected one of {list(_KIND_OF[name])}")
        numbers = (int,) if kind == "int" else (int, float)
        for bound, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, numbers) or not math.isfinite(value):
                raise ValueError(f"{here}.{bound}={value!r}: expected {'an integer' if kind == 'int' else 'a number'}")
            check, wanted = _ALLOWED[name]
            if not check(value):
                raise ValueError(f"{here}.{bound}={value!r}: {name} must be {wanted}")
        if not low < high:
            raise ValueError(f"{here}: low={low!r} must be below high={high!r}")
        space[name] = ParamRange(name, kind, float(low), float(high))
    return space


def optuna_space(space: dict[str, ParamRange]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The space as Optuna distributions (what OptunaSearch takes)."""
    return {name: r.distribution() for name, r in space.items()}
