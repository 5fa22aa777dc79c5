"""The names configs are checked against (models, depth metrics, the metrics an epoch reports) and
each metric's direction. Torch-free, so that reading a sweep or training config imports no torch."""

from __future__ import annotations

from typing import Literal

MODEL_NAMES: tuple[str, ...] = ("net12", "net3", "fcrn")
METRIC_NAMES: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
    "si_log",
)
ACCURACIES: frozenset[str] = frozenset({"delta1", "delta2", "delta3"})
SELECTABLE_METRICS: tuple[str, ...] = ("val_loss",) + tuple(f"val_{name}" for name in METRIC_NAMES)
EPOCH_METRICS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    *SELECTABLE_METRICS,
    "lr",
    "epoch_seconds",
    "images_per_second",
)
Mode = Literal["min", "max"]


def metric_mode(metric: str) -> Mode:
    """'max' for the delta accuracies, 'min' for errors and losses. ``metric`` may carry the
    ``val_`` or ``test_`` prefix of an epoch's or a registered version's metrics."""
    return "max" if metric.removeprefix("val_").removeprefix("test_") in ACCURACIES else "min"


def improves(metric: str, value: float, reference: float) -> bool:
    """Whether ``value`` is strictly better than ``reference`` in ``metric``'s direction."""
    return value > reference if metric_mode(metric) == "max" else value < reference
