"""Eigen-style preprocessing: a 480x640 frame is seen through a centre crop covering 95% of each
axis (240x320 -> 228x304 in the paper configuration), resampled to the model's input size; the
depth target is sampled on the same geometry at the model's output size with a valid mask.

Training augmentation (Eigen & Fergus 2015) is one affine warp per sample: scale s in [1, 1.5]
(depths divided by s), rotation, random crop position, horizontal flip, and a per-channel colour
gain. All randomness comes from the generator passed in, so a sample is a pure function of it.
"""

from __future__ import annotations

import math
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


def normalise_image(image: torch.Tensor) -> torch.Tensor:
    """uint8-range float (3,H,W) -> ImageNet-normalised input."""
    return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


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
        self._base_size = (round(input_size[0] / CROP_FRACTION), round(input_size[1] / CROP_FRACTION))

    def _warp_image(self, image: np.ndarray, theta: torch.Tensor) -> torch.Tensor:
        """uint8 HxWx3 frame -> float 3xhxw input (0..255) seen through ``theta``. The antialiased
        downscale runs on the uint8 frame in its HWC (channels_last) layout, PyTorch's vectorised uint8
        path, several times faster than on a float copy (benchmarks/README.md), at the cost of
        rounding to whole grey levels (at most 1 of 255)."""
        rgb = torch.tensor(image).permute(2, 0, 1)[None]  # a copy: shared arrays are read-only
        rgb = F.interpolate(rgb, size=self._base_size, mode="bilinear", antialias=True, align_corners=False).float()
        grid = F.affine_grid(theta, [1, 3, *self.input_size], align_corners=False)
        return F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]

    def eval_input(self, image: np.ndarray) -> torch.Tensor:
        """The evaluation view of any HxWx3 uint8 image as a normalised model input (inference)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB image as uint8 HxWx3, got {image.dtype} {image.shape}")
        return normalise_image(self._warp_image(image, _affine(1.0, 0.0, (0.0, 0.0), False, image.shape[:2])))

    def _theta(self, rng: np.random.Generator | None, frame: tuple[int, int]) -> tuple[torch.Tensor, float, np.ndarray]:
        aug = self.augmentation
        if aug is None:
            return _affine(1.0, 0.0, (0.0, 0.0), False, frame), 1.0, np.ones(3)
        if rng is None:
            raise ValueError("a training transform needs a random generator")
        scale = float(rng.uniform(*aug.scale))
        angle = math.radians(float(rng.uniform(-aug.rotation_deg, aug.rotation_deg)))
        margin = 1.0 - CROP_FRACTION / scale
        shift = (float(rng.uniform(-margin, margin)), float(rng.uniform(-margin, margin)))
        flip = bool(aug.flip and rng.random() < 0.5)
        gains = rng.uniform(*aug.colour, size=3)
        return _affine(scale, angle, shift, flip, frame), scale, gains

    def __call__(
        self, image: np.ndarray, depth: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frame = tuple(depth.shape)
        theta, scale, gains = self._theta(rng, frame)
        rgb = self._warp_image(image, theta)
        rgb = (rgb * torch.from_numpy(gains).float().view(3, 1, 1)).clamp(0.0, 255.0)

        depth_t = torch.tensor(depth, dtype=torch.float32)[None, None]
        depth_theta = compose(theta[0], self._output_to_input)[None]
        depth_grid = F.affine_grid(depth_theta, [1, 1, *self.output_size], align_corners=False)
        target = F.grid_sample(depth_t, depth_grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
        mask = torch.isfinite(target) & (target > 0)
        target = torch.where(mask, target / scale, torch.zeros_like(target))
        return normalise_image(rgb), target, mask
