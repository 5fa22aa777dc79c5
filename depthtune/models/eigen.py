"""Eigen & Fergus (2015) multi-scale depth networks, VGG version: Net12 (scales 1+2) and Net3 (scale 3)."""

from __future__ import annotations

import inspect
import math
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import chain_region, region_theta
from .pretrained import load_vgg16_features

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
SCALE2_LAYERS = ((9, 2, 1), (3, 2, 0))  # conv_s2_1 9x9 stride 2 pad 1, pool_s2_1 3x3 stride 2: Net12's grid
SCALE3_LAYERS = ((9, 2, 1), (3, 1, 0))  # conv_s3_1 9x9 stride 2 pad 1, pool_s3_1 3x3 stride 1: Net3's grid
# Parameter groups by the paper's layer names (for per-layer learning rates): name -> module prefixes.
NET12_LAYER_GROUPS: dict[str, tuple[str, ...]] = {
    "scale1_convs": ("features.",),
    "scale1_full": ("coarse.",),
    "scale2_first": ("scale2.",),
    "scale2_hidden": ("fuse.",),
    "scale2_output": ("output.",),
}
NET3_LAYER_GROUPS: dict[str, tuple[str, ...]] = {
    "scale3_first": ("scale3.",),
    "scale3_hidden": ("refine.",),
    "scale3_output": ("output.",),
}


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
            f"{model}: input_size={[h, w]} is too small for the architecture; expected both sides >= {min_side}"
        )
    return h, w


def check_positive(model: str, key: str, value: float) -> float:
    """Return `value` as a float after checking it is a finite number > 0 (width, init_depth)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{model}: {key}={value!r} is not valid; expected a finite number > 0")
    return float(value)


def conv_block(
    cin: int, cout: int, kernel: int, batch_norm: bool, stride: int = 1, padding: int = 0, bias: bool | None = None
) -> list[nn.Module]:
    """Return conv (+ BatchNorm) + ReLU layers; by default the conv has no bias when BatchNorm follows it."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=not batch_norm if bias is None else bias)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def vgg16_features(width: float, batch_norm: bool) -> nn.Sequential:
    """Return the 13-conv, 5-pool VGG-16 feature stack with channels scaled by `width`, laid out as
    torchvision's ``vgg16().features`` (``vgg16_bn`` with `batch_norm`), so that ImageNet weights load."""
    layers: list[nn.Module] = []
    cin = 3
    for stage in VGG16_STAGES:
        for channels in stage:
            cout = scaled(channels, width)
            layers += conv_block(cin, cout, 3, batch_norm, padding=1, bias=True)
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def check_image_batch(model: str, x: torch.Tensor, input_size: tuple[int, int]) -> None:
    """Raise ValueError unless `x` is a (B, 3, H, W) batch at the size the model was built for."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != input_size:
        raise ValueError(
            f"{model}: input of shape {tuple(x.shape)} does not fit; expected (B, 3, {input_size[0]}, {input_size[1]})"
        )


class Net12(nn.Module):
    """Scales 1+2 of Eigen & Fergus (2015), VGG version, layer for layer (docs/models.md has the
    table): image -> log-depth at 1x55x74 for 3x228x304.

    Scale 1 is VGG-16's 13 convolutions (``features``, ImageNet weights from `encoder_weights`, a
    local torchvision ``vgg16`` state dict), then full1 (4096, ReLU, dropout 0.5) and full2
    (64 maps of 1/16 of the input, ReLU), upsampled to scale 2's grid. Scale 2 is conv_s2_1 (96,
    9x9, stride 2) + pool_s2_1 (3x3, stride 2), concatenated with scale 1's 64 maps, three 5x5
    convs of 64 (``fuse``) and a 5x5 conv to log-depth (``output``). The output grid is that of
    conv_s2_1 and pool_s2_1, which do not pad to the input's size: ``output_region`` says which
    part of the input it covers.
    `batch_norm=True` is the project's variant (BatchNorm after every hidden conv, which the paper
    does not have): trained from scratch for minutes on a CPU, the plain stack barely moves from
    its initial constant, where the paper starts scale 1 from ImageNet.
    """

    name = "net12"
    predicts = "log_depth"
    layer_groups = NET12_LAYER_GROUPS

    def __init__(
        self,
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        width: float = 1.0,
        init_depth: float = DEFAULT_INIT_DEPTH,
        batch_norm: bool = False,
        encoder_weights: str | os.PathLike[str] | None = None,
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
            nn.ReLU(inplace=True),
        )
        scale2_channels = scaled(96, width)
        hidden = scaled(64, width)
        self.scale2 = nn.Sequential(
            *conv_block(3, scale2_channels, 9, self.batch_norm, stride=2, padding=1), nn.MaxPool2d(3, stride=2)
        )
        self.output_region = chain_region(SCALE2_LAYERS, self.input_size)
        self.fuse = nn.Sequential(
            *conv_block(scale2_channels + coarse_channels, hidden, 5, self.batch_norm, padding=2),
            *conv_block(hidden, hidden, 5, self.batch_norm, padding=2),
            *conv_block(hidden, hidden, 5, self.batch_norm, padding=2),
        )
        self.output = nn.Conv2d(hidden, 1, 5, padding=2)
        nn.init.constant_(self.output.bias, math.log(self.init_depth))
        if encoder_weights is not None:
            load_vgg16_features(self.features, encoder_weights, self.batch_norm)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture; loaded ImageNet
        weights are not part of it: they live in the state dict."""
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
        return self.output(self.fuse(torch.cat([fine, coarse], dim=1)))


class Net3(nn.Module):
    """Scale 3 of Eigen & Fergus (2015), layer for layer: refines a frozen Net12's log-depth to about
    1/2 of the input resolution (1x109x147 for 3x228x304).

    conv_s3_1 (64, 9x9, stride 2) + pool_s3_1 (3x3, stride 1), concatenated with the Net12
    log-depth resampled onto this grid, two 5x5 convs of 64 (``refine``) and a 5x5 conv to
    log-depth (``output``), as the paper does. `residual=True` is the project's variant: the output
    is the resampled Net12 log-depth plus ``output``'s, which starts at zero, so an untrained Net3
    reproduces its Net12 and training can only refine it (a scale 3 trained from scratch at CPU
    size did not beat the Net12 it refines within minutes). `batch_norm=True` adds BatchNorm after
    the hidden convs, as in Net12's variant. The Net12 is frozen (`requires_grad_(False)` on the
    instance given), always runs in eval mode without autograd, and its weights stay in
    `state_dict()` under `net12.`. `init_depth` sets the depth of a Net12 built here when
    `net12_config` names none.
    """

    name = "net3"
    predicts = "log_depth"
    layer_groups = NET3_LAYER_GROUPS

    def __init__(
        self,
        net12: Net12 | None = None,
        width: float = 1.0,
        init_depth: float = DEFAULT_INIT_DEPTH,
        net12_config: Mapping[str, Any] | None = None,
        batch_norm: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.width = check_positive(self.name, "width", width)
        self.init_depth = check_positive(self.name, "init_depth", init_depth)
        self.batch_norm = bool(batch_norm)
        self.residual = bool(residual)
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
        self.scale3 = nn.Sequential(
            *conv_block(3, hidden, 9, self.batch_norm, stride=2, padding=1), nn.MaxPool2d(3, stride=1)
        )
        self.output_region = chain_region(SCALE3_LAYERS, self.input_size)
        self.refine = nn.Sequential(
            *conv_block(hidden + 1, hidden, 5, self.batch_norm, padding=2),
            *conv_block(hidden, hidden, 5, self.batch_norm, padding=2),
        )
        self.output = nn.Conv2d(hidden, 1, 5, padding=2)
        if self.residual:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        else:
            nn.init.constant_(self.output.bias, math.log(self.init_depth))

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
            "residual": self.residual,
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
        coarse = F.grid_sample(
            coarse, grid.to(coarse.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )
        refined = self.output(self.refine(torch.cat([feats, coarse], dim=1)))
        return coarse + refined if self.residual else refined
