"""Depth networks by name: build one from its config and compute its output size without running it for real."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from depthtune.names import MODEL_NAMES

from .eigen import Net3, Net12, check_config_keys
from .fcrn import FCRN
from .geometry import Region
from .outputs import to_depth

_CONSTRUCTORS: dict[str, type[nn.Module]] = {"net12": Net12, "net3": Net3, "fcrn": FCRN}

__all__ = ["FCRN", "MODEL_NAMES", "Net3", "Net12", "Geometry", "build", "geometry", "output_size", "to_depth"]


def _constructor(name: str) -> type[nn.Module]:
    """Return the class registered as `name`, or raise ValueError listing the known names."""
    if name not in _CONSTRUCTORS:
        raise ValueError(f"unknown model name {name!r}; expected one of: {', '.join(MODEL_NAMES)}")
    return _CONSTRUCTORS[name]


def build(name: str, **cfg: Any) -> nn.Module:
    """Build model `name` ("net12", "net3", "fcrn") from size config `cfg`; the paper config by default."""
    cls = _constructor(name)
    check_config_keys(name, cfg, cls)
    return cls(**cfg)


@dataclass(frozen=True)
class Geometry:
    """Input size, output size, and the region of the input the output grid covers."""

    input_size: tuple[int, int]
    output_size: tuple[int, int]
    output_region: Region


def output_size(name: str, **cfg: Any) -> tuple[int, int]:
    """Return the (h, w) of model `name`'s output for config `cfg`."""
    return geometry(name, **cfg).output_size


def geometry(name: str, **cfg: Any) -> Geometry:
    """Geometry of model `name` for config `cfg`, by a forward pass on the meta device."""
    cls = _constructor(name)
    check_config_keys(name, cfg, cls)
    cfg = dict(cfg)
    if name == "net3" and cfg.get("net12") is not None:
        net12 = cfg.pop("net12")
        if not isinstance(net12, Net12):
            raise ValueError(f"net3: net12={type(net12).__name__} is not valid; expected a Net12")
        cfg["net12_config"] = net12.config
    cfg.pop("encoder_weights", None)
    with torch.device("meta"):
        model = cls(**cfg).eval()
        h, w = model.input_size
        with torch.no_grad():
            out = model(torch.empty(1, 3, h, w))
    return Geometry((int(h), int(w)), (int(out.shape[-2]), int(out.shape[-1])), model.output_region)
