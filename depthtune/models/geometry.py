"""Where an output grid lies on its input: valid (unpadded) convolutions shrink and shift the area
their output cells look at, so targets must be sampled there and predictions placed back there.

Regions are (top, left, bottom, right) as fractions of the input; pixel k spans [k, k+1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Region = tuple[float, float, float, float]
FULL_REGION: Region = (0.0, 0.0, 1.0, 1.0)
ConvLayer = tuple[int, int, int]  # kernel, stride, padding


def chain_span(layers: Sequence[ConvLayer], size_in: int) -> tuple[float, float]:
    """[start, end) fractions of an input axis covered by the output cells of a conv/pool chain."""
    offset, step, size = 0.0, 1.0, size_in
    for kernel, stride, padding in layers:
        offset += step * ((kernel - 1) / 2 - padding)
        step *= stride
        size = (size + 2 * padding - kernel) // stride + 1
    first = offset + 0.5 - step / 2
    last = offset + step * (size - 1) + 0.5 + step / 2
    return first / size_in, last / size_in


def chain_region(layers: Sequence[ConvLayer], input_size: tuple[int, int]) -> Region:
    """Region of an (H, W) input covered by the output of a conv/pool chain applied to both axes."""
    top, bottom = chain_span(layers, input_size[0])
    left, right = chain_span(layers, input_size[1])
    return top, left, bottom, right


def _axis_map(src: tuple[float, float], dst: tuple[float, float]) -> tuple[float, float]:
    """(a, c) with v = a * u + c, u the normalised coordinate on span ``src``, v on span ``dst``."""
    length = dst[1] - dst[0]
    return (src[1] - src[0]) / length, (src[0] + src[1] - dst[0] - dst[1]) / length


def region_theta(src: Region, dst: Region) -> torch.Tensor:
    """2x3 ``affine_grid`` theta taking normalised coordinates on region ``src`` to those on ``dst``."""
    ax, cx = _axis_map((src[1], src[3]), (dst[1], dst[3]))
    ay, cy = _axis_map((src[0], src[2]), (dst[0], dst[2]))
    return torch.tensor([[ax, 0.0, cx], [0.0, ay, cy]], dtype=torch.float32)
