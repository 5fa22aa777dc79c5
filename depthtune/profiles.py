"""Model size profiles: the paper configuration for GPUs and clusters, small versions for CPUs."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, dict]] = {
    "paper": {"net12": {}, "net3": {}, "fcrn": {}},
    "cpu": {
        "net12": {"input_size": (114, 152), "width": 0.25},
        "net3": {"width": 0.25},
        "fcrn": {"input_size": (114, 152), "width": 0.25, "blocks": (1, 1, 1, 1)},
    },
}


def resolve_profile(profile: str, cluster: bool = False) -> str:
    """'auto' -> 'paper' when a GPU is visible or the sweep goes to a Ray ``cluster`` (whose GPU
    workers may not have started yet), else 'cpu'; other names are checked."""
    if profile == "auto":
        chosen = "paper" if cluster or torch.cuda.is_available() else "cpu"
        reason = "Ray cluster" if cluster else "GPU visible" if chosen == "paper" else "no GPU: small models"
        logger.info("profile 'auto' -> %r (%s)", chosen, reason)
        return chosen
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected 'auto' or one of {sorted(PROFILES)}")
    return profile


def model_config(profile: str, model_name: str) -> dict:
    """Size configuration of ``model_name`` under a resolved profile."""
    return dict(PROFILES[resolve_profile(profile)][model_name])
