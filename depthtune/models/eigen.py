"""Eigen & Fergus (2015) multi-scale depth networks, VGG version: Net12 (scales 1+2) and Net3 (scale 3)."""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import chain_region, region_theta

DEFAULT_INPUT_SIZE: tuple[int, int] = (228, 304)
DEFAULT_INIT_DEPTH: float = 2.5
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
NET12_MIN_SIDE = 32  # the VGG stack halves the input five times
SCALE2_LAYERS = ((9, 2, 0), (2, 2, 0))  # conv 9x9 stride 2, max-pool 2x2: the grid of Net12's output
SCALE3_LAYERS = ((9, 2, 0), (2, 1, 0))  # conv 9x9 stride 2, max-pool 2x2 stride 1: Net3's grid


def scaled(n: int, width: float) -> int:
    """Return channel/unit count `n` times `width`, at least 1, so small nets keep the paper's layout."""
    return max(1, int(round(n * width)))


def check_config_keys(model: str, cfg: Mapping[str, Any], cls: type) -> None:
    """Raise ValueError naming the first key of `cfg` that `cls`'s constructor does not accept."""
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in cfg if k not in accepted]
    if unknown:
        key = unknown[0]
        raise ValueError(
            f"{model}: unknown config key {key!r} (value {cfg[key]!r}); accepted keys: {', '.join(accepted)}"
        )


def check_input_size(model: str, input_size: Sequence[int], min_side: int) -> tuple[int, int]:
    """Return `input_size` as an (H, W) tuple after checking it is two ints, each >= `min_side`."""
    try:
        if isinstance(input_size, (str, bytes)) or len(input_size) != 2:
            raise TypeError
        h, w = (operator.index(v) for v in input_size)
    except TypeError:
        raise ValueError(
            f"{model}: input_size={input_size!r} is not valid; expected two ints (H, W), e.g. [228, 304]"
        ) from None
    if min(h, w) < min_side:
        raise ValueError(
            f"{model}: input_size={[h, w]} is too small for the architecture; "
            f"expected both sides >= {min_side}"
        )
    return h, w


def check_positive(model: str, key: str, value: float) -> float:
    """Return `value` as a float after checking it is a finite number > 0 (width, init_depth)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{model}: {key}={value!r} is not valid; expected a finite number > 0")
    return float(value)


def conv_block(
    cin: int, cout: int, kernel: int, batch_norm: bool, stride: int = 1, padding: int = 0
) -> list[nn.Module]:
    """Return conv (+ BatchNorm) + ReLU layers; the conv has no bias when BatchNorm follows it."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def vgg16_features(width: float, batch_norm: bool) -> nn.Sequential:
    """Return the 13-conv, 5-pool VGG-16 feature stack with channels scaled by `width`."""
    layers: list[nn.Module] = []
    cin = 3
    for stage in VGG16_STAGES:
        for channels in stage:
            cout = scaled(channels, width)
            layers += conv_block(cin, cout, 3, batch_norm, padding=1)
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def check_image_batch(model: str, x: torch.Tensor, input_size: tuple[int, int]) -> None:
    """Raise ValueError unless `x` is a (B, 3, H, W) batch at the size the model was built for."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != input_size:
        raise ValueError(
            f"{model}: input of shape {tuple(x.shape)} does not fit; "
            f"expected (B, 3, {input_size[0]}, {input_size[1]})"
        )


class Net12(nn.Module):
    """Scales 1+2 of Eigen & Fergus (2015): VGG-16 coarse net + scale-2 conv net, image -> log-depth.

    Output is log-depth (metres = exp(output)) at about 1/4 of the input (1x55x74 for 3x228x304),
    on the grid of the unpadded scale-2 convolution: ``output_region`` says which part of the input
    it covers, so targets are sampled and predictions placed where each cell looks.
    `batch_norm=True` (the default) adds BatchNorm after every hidden conv, which the paper did not
    have: deep plain conv stacks trained from scratch with SGD learn slowly without it (plain SGD
    underfit in a few minutes of CPU training, while the paper starts its VGG layers from ImageNet).
    """

    name = "net12"

    def __init__(
        self,
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        width: float = 1.0,
        init_depth: float = DEFAULT_INIT_DEPTH,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.input_size = check_input_size(self.name, input_size, NET12_MIN_SIDE)
        self.width = check_positive(self.name, "width", width)
        self.init_depth = check_positive(self.name, "init_depth", init_depth)
        self.batch_norm = bool(batch_norm)
        h, w = self.input_size
        self.coarse_grid = (h // 16, w // 16)
        coarse_channels = scaled(64, width)
        self.features = vgg16_features(width, self.batch_norm)
        self.coarse = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(scaled(512, width) * (h // 32) * (w // 32), scaled(4096, width)),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(scaled(4096, width), coarse_channels * self.coarse_grid[0] * self.coarse_grid[1]),
        )
        scale2_channels = scaled(96, width)
        hidden = scaled(64, width)
        self.scale2 = nn.Sequential(*conv_block(3, scale2_channels, 9, self.batch_norm, stride=2), nn.MaxPool2d(2))
        self.output_region = chain_region(SCALE2_LAYERS, self.input_size)
        self.fuse = nn.Sequential(
            *conv_block(scale2_channels + coarse_channels, hidden, 5, self.batch_norm, padding=2),
            *conv_block(hidden, hidden, 5, self.batch_norm, padding=2),
            nn.Conv2d(hidden, 1, 5, padding=2),
        )
        nn.init.constant_(self.fuse[-1].bias, math.log(self.init_depth))

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {
            "input_size": list(self.input_size),
            "width": self.width,
            "init_depth": self.init_depth,
            "batch_norm": self.batch_norm,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised RGB (B, 3, H, W) to log-depth (B, 1, h, w)."""
        check_image_batch(self.name, x, self.input_size)
        coarse = self.coarse(self.features(x)).view(x.shape[0], -1, *self.coarse_grid)
        fine = self.scale2(x)
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([fine, coarse], dim=1))


class Net3(nn.Module):
    """Scale 3 of Eigen & Fergus (2015): refines a frozen Net12's log-depth to about 1/2 input resolution.

    Output = Net12 log-depth resampled onto Net3's grid (1x109x147 for 3x228x304) + a learned residual
    whose last conv starts at zero, so an untrained Net3 reproduces its Net12 exactly and training
    can only refine it: a refinement net trained from scratch at low resolution on the CPU did not
    beat the coarse net it refined within minutes of training. The Net12 is frozen (`requires_grad_(False)` on the instance given),
    always runs in eval mode without autograd, and its weights stay in `state_dict()` under
    `net12.`. `init_depth` sets the depth of a Net12 built here when `net12_config` names none.
    """

    name = "net3"

    def __init__(
        self,
        net12: Net12 | None = None,
        width: float = 1.0,
        init_depth: float = DEFAULT_INIT_DEPTH,
        net12_config: Mapping[str, Any] | None = None,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.width = check_positive(self.name, "width", width)
        self.init_depth = check_positive(self.name, "init_depth", init_depth)
        self.batch_norm = bool(batch_norm)
        if net12 is not None and net12_config is not None:
            raise ValueError(f"{self.name}: give either net12 (a Net12) or net12_config (a dict), not both")
        if net12 is None:
            net12_config = dict(net12_config or {})
            check_config_keys(f"{self.name}: net12_config", net12_config, Net12)
            net12 = Net12(**{"init_depth": self.init_depth, **net12_config})
        elif not isinstance(net12, Net12):
            raise ValueError(f"{self.name}: net12={type(net12).__name__} is not valid; expected a Net12")
        self.net12 = net12.requires_grad_(False).eval()
        hidden = scaled(64, width)
        self.scale3 = nn.Sequential(*conv_block(3, hidden, 9, self.batch_norm, stride=2), nn.MaxPool2d(2, stride=1))
        self.output_region = chain_region(SCALE3_LAYERS, self.input_size)
        self.refine = nn.Sequential(
            *conv_block(hidden + 1, hidden, 5, self.batch_norm, padding=2),
            *conv_block(hidden, hidden, 5, self.batch_norm, padding=2),
            nn.Conv2d(hidden, 1, 5, padding=2),
        )
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    @property
    def input_size(self) -> tuple[int, int]:
        """Input (H, W) this model expects: its Net12's."""
        return self.net12.input_size

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture, Net12 included."""
        return {
            "width": self.width,
            "init_depth": self.init_depth,
            "batch_norm": self.batch_norm,
            "net12_config": self.net12.config,
        }

    def train(self, mode: bool = True) -> Net3:
        """Set train/eval mode for the scale-3 layers while the frozen Net12 stays in eval mode."""
        super().train(mode)
        self.net12.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised RGB (B, 3, H, W) to refined log-depth (B, 1, h, w)."""
        with torch.no_grad():
            coarse = self.net12(x)
        feats = self.scale3(x)
        theta = region_theta(self.output_region, self.net12.output_region).to(x.device).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 1, *feats.shape[-2:]], align_corners=False)
        coarse = F.grid_sample(coarse, grid.to(coarse.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        return coarse + self.refine(torch.cat([feats, coarse], dim=1))
