"""FCRN of Laina et al. (2016): ResNet-50 encoder + up-projection decoder, image -> depth."""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .eigen import DEFAULT_INIT_DEPTH, DEFAULT_INPUT_SIZE, check_input_size, check_positive, scaled
from .geometry import FULL_REGION
from .pretrained import load_resnet50_encoder

RESNET50_BLOCKS: tuple[int, int, int, int] = (3, 4, 6, 3)
FCRN_MIN_SIDE = 32  # the encoder downsamples by 32


def check_blocks(model: str, blocks: Sequence[int]) -> tuple[int, int, int, int]:
    """Return `blocks` as a 4-tuple of ints >= 1 (bottleneck blocks per ResNet stage)."""
    try:
        if isinstance(blocks, (str, bytes)) or len(blocks) != 4:
            raise TypeError
        values = tuple(operator.index(v) for v in blocks)
    except TypeError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise ValueError(f"{model}: blocks={blocks!r} is not valid; expected four ints >= 1, e.g. [3, 4, 6, 3]")
    return values  # type: ignore[return-value]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), named as in torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual bottleneck: relu(x' + bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))))."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetEncoder(nn.Module):
    """ResNet-50 without its classifier; module names match torchvision's so its weights load."""

    def __init__(self, width: float = 1.0, blocks: Sequence[int] = RESNET50_BLOCKS) -> None:
        super().__init__()
        self.inplanes = scaled(64, width)
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(scaled(64, width), blocks[0], stride=1)
        self.layer2 = self._stage(scaled(128, width), blocks[1], stride=2)
        self.layer3 = self._stage(scaled(256, width), blocks[2], stride=2)
        self.layer4 = self._stage(scaled(512, width), blocks[3], stride=2)
        self.out_channels = self.inplanes

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        """Build one stage of `count` bottlenecks; the first changes stride/channels via `downsample`."""
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, 3, H, W) to (B, 2048*width, ~H/32, ~W/32) features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def unpool2x(x: torch.Tensor) -> torch.Tensor:
    """Laina's 2x unpooling: each value goes to the top-left of a 2x2 cell, the rest are zeros."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, 2 * h, 2 * w)
    out[:, :, ::2, ::2] = x
    return out


def unpool_conv5(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv2d(unpool2x(x), weight, padding=2)`` for a 5x5 ``weight``, without the zeros: Laina's
    fast up-projection. An output pixel of row parity a and column parity b sees the input only
    through the kernel taps ``weight[..., a::2, b::2]`` (3 or 2 per axis), so each of the four
    parities is one small convolution of ``x`` itself, interleaved into the output: a quarter of the
    multiply-adds, the same function and the same parameters."""
    b, _, h, w = x.shape
    out = x.new_empty(b, weight.shape[0], 2 * h, 2 * w)
    for row in (0, 1):
        for col in (0, 1):
            # parity 0 takes input rows i-1, i, i+1 (3 taps); parity 1 rows i, i+1 (2 taps)
            padded = nn.functional.pad(x, (1 - col, 1, 1 - row, 1))
            out[:, :, row::2, col::2] = nn.functional.conv2d(padded, weight[:, :, row::2, col::2])
    return out


class UpProjection(nn.Module):
    """Laina's up-projection: unpool x2, then relu(bn(conv3(relu(bn(conv5(u))))) + bn(conv5(u))),
    with each unpool + 5x5 convolution computed in the fast form (``unpool_conv5``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 5, padding=2, bias=False)
        self.bn_proj = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the resolution of `x` and map its channels to `cout`."""
        branch = self.bn2(self.conv2(self.relu(self.bn1(unpool_conv5(x, self.conv1.weight)))))
        return self.relu(branch + self.bn_proj(unpool_conv5(x, self.proj.weight)))


class FCRN(nn.Module):
    """Laina et al. (2016) FCRN: ResNet-50 + 4 fast up-projections, depth at 1x128x160 for 3x228x304.

    As Laina built it, the head regresses depth in metres, trained with berHu on it (a log-depth
    head did worse on the CPU benchmark, docs/models.md). `encoder_weights` is the path of a local
    torchvision ResNet-50 state_dict (`.pth`) loaded into `encoder` (its `fc.*` keys ignored);
    nothing is ever downloaded. It is not part of `config`: once loaded, the weights live in this
    model's state_dict.
    """

    name = "fcrn"
    predicts = "depth"
    layer_groups: dict[str, tuple[str, ...]] = {
        "encoder": ("encoder.",),
        "decoder": ("bottleneck.", "decoder.", "head."),
    }

    def __init__(
        self,
        input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
        width: float = 1.0,
        blocks: Sequence[int] = RESNET50_BLOCKS,
        init_depth: float = DEFAULT_INIT_DEPTH,
        encoder_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check_input_size(self.name, input_size, FCRN_MIN_SIDE)
        self.output_region = FULL_REGION  # padded convolutions: the output spans the whole input
        self.width = check_positive(self.name, "width", width)
        self.blocks = check_blocks(self.name, blocks)
        self.init_depth = check_positive(self.name, "init_depth", init_depth)
        self.encoder = ResNetEncoder(width, self.blocks)
        channels = [scaled(c, width) for c in (1024, 512, 256, 128, 64)]
        self.bottleneck = nn.Sequential(
            nn.Conv2d(self.encoder.out_channels, channels[0], 1, bias=False),
            nn.BatchNorm2d(channels[0]),
        )
        self.decoder = nn.Sequential(*(UpProjection(cin, cout) for cin, cout in zip(channels, channels[1:])))
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(channels[-1], 1, 3, padding=1))
        self._init_weights()
        if encoder_weights is not None:
            load_resnet50_encoder(self.encoder, encoder_weights)

    def _init_weights(self) -> None:
        """Init hidden convs as torchvision does, residual branches at zero, the head at init_depth.

        Zero last-BN gammas make every bottleneck start as the identity (torchvision's
        `zero_init_residual`), which keeps an untrained encoder's activations bounded in eval mode too.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.encoder.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
        head = self.head[-1]
        head.reset_parameters()
        nn.init.constant_(head.bias, self.init_depth)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this architecture."""
        return {
            "input_size": list(self.input_size),
            "width": self.width,
            "blocks": list(self.blocks),
            "init_depth": self.init_depth,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised RGB (B, 3, H, W) to depth in metres (B, 1, h, w)."""
        x = self.bottleneck(self.encoder(x))
        return self.head(self.decoder(x))
