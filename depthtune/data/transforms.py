"""Eigen-style preprocessing: a 480x640 frame is seen through a centre crop covering 95% of each
axis (240x320 -> 228x304 in the paper configuration), resampled to the model's input size; the
depth target is sampled on the same geometry at the model's output size with a valid mask.

Training augmentation (Eigen & Fergus 2015) is one affine warp per sample: scale s in [1, 1.5]
(depths divided by s), rotation, random crop position, horizontal flip, and a per-channel colour
gain. All randomness comes from the generator passed in, so a sample is a pure function of it.
The warps run batched on any device: one sample for the CPU loader, a batch on the GPU for
``depthtune.data.device_batches``, by the same code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from depthtune.models.geometry import FULL_REGION, Region, region_theta

FRAME_SHAPE: tuple[int, int] = (480, 640)
CROP_FRACTION = 0.95
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def eval_region(frame_shape: tuple[int, int] = FRAME_SHAPE) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the frame region an evaluation input covers."""
    height, width = frame_shape
    crop_h, crop_w = round(height * CROP_FRACTION), round(width * CROP_FRACTION)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return top, top + crop_h, left, left + crop_w


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random training warp; Eigen & Fergus 2015 values by default."""

    scale: tuple[float, float] = (1.0, 1.5)
    rotation_deg: float = 5.0
    colour: tuple[float, float] = (0.8, 1.2)
    flip: bool = True

    def __post_init__(self) -> None:
        if not 1.0 <= self.scale[0] <= self.scale[1]:
            raise ValueError(f"augmentation scale range {self.scale} must satisfy 1 <= low <= high")
        if not 0 < self.colour[0] <= self.colour[1]:
            raise ValueError(f"augmentation colour range {self.colour} must satisfy 0 < low <= high")
        if self.rotation_deg < 0:
            raise ValueError(f"augmentation rotation_deg={self.rotation_deg} must be >= 0")


@functools.cache
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return IMAGENET_MEAN.to(device), IMAGENET_STD.to(device)


def normalise_image(image: torch.Tensor) -> torch.Tensor:
    """uint8-range float (3,H,W) or (B,3,H,W), on any device -> ImageNet-normalised input."""
    mean, std = _imagenet_stats(image.device)
    return (image / 255.0 - mean) / std


def _affine(
    scale: float, angle_rad: float, shift: tuple[float, float], flip: bool, frame: tuple[int, int]
) -> torch.Tensor:
    """2x3 theta mapping output coords in [-1, 1] to frame coords, rotating in pixel space."""
    height, width = frame
    to_pixels = np.diag([width / 2.0, height / 2.0])
    cos, sin = math.cos(angle_rad), math.sin(angle_rad)
    rotation = np.array([[cos, -sin], [sin, cos]])
    zoom = np.diag([(-1.0 if flip else 1.0) * CROP_FRACTION / scale, CROP_FRACTION / scale])
    linear = np.linalg.inv(to_pixels) @ rotation @ to_pixels @ zoom
    theta = np.concatenate([linear, np.array(shift, dtype=np.float64)[:, None]], axis=1)
    return torch.from_numpy(theta).float()[None]


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The 2x3 affine applying ``inner`` first, then ``outer``."""
    return torch.cat([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]], dim=1)


@dataclass(frozen=True)
class Warps:
    """The random part of B samples, as float32 tensors on one device: input thetas Bx2x3 (output
    coords to frame coords), target thetas Bx2x3 (the same for the output region), depth divisors B
    and colour gains Bx3."""

    theta: torch.Tensor
    target_theta: torch.Tensor
    scale: torch.Tensor
    gains: torch.Tensor

    @classmethod
    def cat(cls, warps: Sequence[Warps]) -> Warps:
        """The warps of a batch, from its samples' in order."""
        return cls(*(torch.cat(parts) for parts in zip(*(w.tensors() for w in warps))))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(theta, target_theta, scale, gains)."""
        return self.theta, self.target_theta, self.scale, self.gains


class DepthTransform:
    """(frame image uint8 HxWx3, frame depth HxW) -> (input 3xhxw, target 1xh'xw', mask 1xh'xw').

    The target is sampled on ``output_region`` of the input (where the model's output cells look).
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        output_size: tuple[int, int],
        augmentation: Augmentation | None = None,
        output_region: Region = FULL_REGION,
    ) -> None:
        self.input_size = tuple(input_size)
        self.output_size = tuple(output_size)
        self.augmentation = augmentation
        self._output_to_input = region_theta(output_region, FULL_REGION)
        self.base_size = (round(input_size[0] / CROP_FRACTION), round(input_size[1] / CROP_FRACTION))

    def base_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 frame -> uint8 1x3xbhxbw, antialias-downscaled to the base size every warp samples
        from (it does not depend on the warp, so a device-resident copy can be made once). It runs on the
        uint8 frame in its HWC (channels_last) layout, PyTorch's vectorised uint8 path, several times faster
        than on a float copy (benchmarks/README.md), at the cost of rounding to whole grey levels (at most 1
        of 255)."""
        rgb = torch.tensor(image).permute(2, 0, 1)[None]  # a copy: shared arrays are read-only
        return F.interpolate(rgb, size=self.base_size, mode="bilinear", antialias=True, align_corners=False)

    def warp_images(self, base: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Base images Bx3xbhxbw (``base_image``'s) -> float Bx3xhxw inputs (0..255) seen through the
        Bx2x3 ``theta``."""
        grid = F.affine_grid(theta, [base.shape[0], 3, *self.input_size], align_corners=False)
        return F.grid_sample(base.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

    def eval_input(self, image: np.ndarray) -> torch.Tensor:
        """The evaluation view of any HxWx3 uint8 image as a normalised model input (inference)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB image as uint8 HxWx3, got {image.dtype} {image.shape}")
        theta = _affine(1.0, 0.0, (0.0, 0.0), False, image.shape[:2])
        return normalise_image(self.warp_images(self.base_image(image), theta)[0])

    def draw(self, rng: np.random.Generator | None, frame: tuple[int, int]) -> Warps:
        """One sample's warp (a batch of one), drawn from ``rng`` in a fixed order so that any path
        drawing from the same generator warps alike; the plain centre crop without augmentation."""
        aug = self.augmentation
        if aug is None:
            return self._warps(_affine(1.0, 0.0, (0.0, 0.0), False, frame), 1.0, np.ones(3))
        if rng is None:
            raise ValueError("a training transform needs a random generator")
        scale = float(rng.uniform(*aug.scale))
        angle = math.radians(float(rng.uniform(-aug.rotation_deg, aug.rotation_deg)))
        margin = 1.0 - CROP_FRACTION / scale
        shift = (float(rng.uniform(-margin, margin)), float(rng.uniform(-margin, margin)))
        flip = bool(aug.flip and rng.random() < 0.5)
        gains = rng.uniform(*aug.colour, size=3)
        return self._warps(_affine(scale, angle, shift, flip, frame), scale, gains)

    def _warps(self, theta: torch.Tensor, scale: float, gains: np.ndarray) -> Warps:
        target_theta = compose(theta[0], self._output_to_input)[None]
        return Warps(
            theta, target_theta, torch.tensor([scale], dtype=torch.float32), torch.from_numpy(gains).float()[None]
        )

    def apply(
        self, base: torch.Tensor, depth: torch.Tensor, warps: Warps
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Warp a batch, on the device its tensors are on: base images Bx3xbhxbw, frame depths Bx1xHxW
        float32 -> (normalised inputs Bx3xhxw, depth targets Bx1xh'xw', valid masks Bx1xh'xw')."""
        batch = base.shape[0]
        rgb = self.warp_images(base, warps.theta)
        rgb = (rgb * warps.gains.view(batch, 3, 1, 1)).clamp(0.0, 255.0)
        grid = F.affine_grid(warps.target_theta, [batch, 1, *self.output_size], align_corners=False)
        target = F.grid_sample(depth, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        mask = torch.isfinite(target) & (target > 0)
        target = torch.where(mask, target / warps.scale.view(batch, 1, 1, 1), torch.zeros_like(target))
        return normalise_image(rgb), target, mask

    def __call__(
        self, image: np.ndarray, depth: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        warps = self.draw(rng, tuple(depth.shape))
        depth_t = torch.tensor(depth, dtype=torch.float32)[None, None]
        image_t, target, mask = self.apply(self.base_image(image), depth_t, warps)
        return image_t[0], target[0], mask[0]
