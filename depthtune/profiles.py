"""Model profiles and variants. A profile sets the size: ``paper`` (the papers' input and widths,
for GPUs and clusters) or ``cpu`` (half the input, a quarter of the channels, one bottleneck per
ResNet stage). A variant sets the layers and per-layer learning rates: ``paper`` is the papers'
networks and rates, ``project`` adds what this project measured to train better from scratch in
minutes (BatchNorm in Net12/Net3, Net3's residual start);
each profile has a default variant. docs/models.md has the layer tables and the measurements."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"net12": {}, "net3": {}, "fcrn": {}},
    "cpu": {
        "net12": {"input_size": (114, 152), "width": 0.25},
        "net3": {"width": 0.25},
        "fcrn": {"input_size": (114, 152), "width": 0.25, "blocks": (1, 1, 1, 1)},
    },
}
PROFILES: tuple[str, ...] = tuple(SIZES)

# Eigen & Fergus 2015, architecture table ("l. rate" column, VGG version): 0.001 for the ImageNet
# convolutions of scale 1 and the first and last convolution of scales 2 and 3, 0.01 for their
# hidden convolutions, 0.1 for the fully connected layers. As multiples of the base rate (the
# searched lr; the paper's is 0.01, that of the hidden convolutions).
EIGEN_NET12_RATES = {
    "scale1_convs": 0.1,
    "scale1_full": 10.0,
    "scale2_first": 0.1,
    "scale2_hidden": 1.0,
    "scale2_output": 0.1,
}
EIGEN_NET3_RATES = {"scale3_first": 0.1, "scale3_hidden": 1.0, "scale3_output": 0.1}


@dataclass(frozen=True)
class Variant:
    """Constructor settings that pick a model's layers, and the per-layer rate multipliers."""

    model_cfg: dict[str, Any] = field(default_factory=dict)
    lr_multipliers: dict[str, float] = field(default_factory=dict)


VARIANTS: dict[str, dict[str, Variant]] = {
    # Laina et al. 2016 train every layer at one rate; their head regresses depth itself.
    "paper": {
        "net12": Variant({"batch_norm": False}, EIGEN_NET12_RATES),
        "net3": Variant({"batch_norm": False, "residual": False}, EIGEN_NET3_RATES),
        "fcrn": Variant(),
    },
    "project": {
        "net12": Variant({"batch_norm": True}),
        "net3": Variant({"batch_norm": True, "residual": True}),
        "fcrn": Variant(),
    },
}
DEFAULT_VARIANT = {"paper": "paper", "cpu": "project"}


@dataclass(frozen=True)
class ModelSetup:
    """What a profile and variant give one model: its constructor config and per-layer rates."""

    profile: str
    variant: str
    model_cfg: dict[str, Any]
    lr_multipliers: dict[str, float]


def resolve_profile(profile: str, cluster: bool = False) -> str:
    """'auto' -> 'paper' when a GPU is visible or the sweep goes to a Ray ``cluster`` (whose GPU
    workers may not have started yet), else 'cpu'; other names are checked."""
    if profile == "auto":
        import torch  # only to guess the profile: reading a config stays torch-free

        chosen = "paper" if cluster or torch.cuda.is_available() else "cpu"
        reason = "Ray cluster" if cluster else "GPU visible" if chosen == "paper" else "no GPU: small models"
        logger.info("profile 'auto' -> %r (%s)", chosen, reason)
        return chosen
    if profile not in SIZES:
        raise ValueError(f"unknown profile {profile!r}; expected 'auto' or one of {sorted(SIZES)}")
    return profile


def resolve_variant(profile: str, variant: str | None) -> str:
    """The variant to build under a resolved ``profile``: ``variant`` when given, else the
    profile's default (``paper`` for the paper profile, ``project`` for cpu)."""
    if variant is None:
        return DEFAULT_VARIANT[profile]
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return variant


def model_setup(profile: str, model_name: str, variant: str | None = None) -> ModelSetup:
    """Size, layers and per-layer rates of ``model_name`` under a profile and variant."""
    profile = resolve_profile(profile)
    variant = resolve_variant(profile, variant)
    chosen = VARIANTS[variant][model_name]
    return ModelSetup(profile, variant, {**SIZES[profile][model_name], **chosen.model_cfg}, dict(chosen.lr_multipliers))


def model_config(profile: str, model_name: str, variant: str | None = None) -> dict[str, Any]:
    """Constructor config of ``model_name`` under a profile and variant (``model_setup``'s ``model_cfg``)."""
    return model_setup(profile, model_name, variant).model_cfg
