"""What a network's output means (its ``predicts``): log-depth (Eigen's networks) or depth in
metres (FCRN, as Laina built it). The one place that turns an output into metres."""

from __future__ import annotations

import torch

MIN_DEPTH = 1e-3  # metres: the smallest depth a linear output is read as (it can go negative)


def to_depth(output: torch.Tensor, predicts: str) -> torch.Tensor:
    """Depth in metres from a network output: exp of log-depth, or a linear output floored at
    MIN_DEPTH (an untrained or diverging net can predict zero or less, which no metric can read)."""
    return torch.exp(output) if predicts == "log_depth" else output.clamp_min(MIN_DEPTH)
