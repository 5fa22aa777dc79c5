"""Depth metrics under two evaluation protocols, which give different numbers for the same maps.

Predictions are brought to ground-truth resolution first (``to_frame``), then every metric is taken
over valid pixels, predictions clamped to the valid depth range.

- ``eigen`` (Eigen et al. 2014, Eigen & Fergus 2015, and most papers after them): inside the Eigen
  crop (rows 45:471, cols 41:601 of 480x640), ground truth in (1 mm, 10 m], each metric computed
  per image and then averaged over images.
- ``laina`` (the evaluation code Laina et al. 2016 released): the full frame, every pixel with
  ground truth, no depth cap, errors pooled over all pixels of all test images. For images with
  equal numbers of valid pixels the pooled RMSE is never below the mean of per-image RMSEs
  (Jensen's inequality), so comparing a per-image RMSE with Laina's flatters the per-image one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from depthtune.data.transforms import FRAME_SHAPE, eval_region
from depthtune.models.geometry import FULL_REGION, Region, region_theta
from depthtune.names import METRIC_NAMES, metric_mode


def relative_gain(metric: str, value: float, reference: float) -> float:
    """How much better ``value`` is than ``reference``, as a fraction of the reference (positive:
    better, whichever direction the metric improves in); NaN for a reference of 0 (a delta
    accuracy of a model that never got a pixel within the threshold), where no fraction exists."""
    change = (value - reference) if metric_mode(metric) == "max" else (reference - value)
    return change / abs(reference) if reference else math.nan


EIGEN_CROP = (slice(45, 471), slice(41, 601))
POOLINGS = ("images", "pixels")


@dataclass(frozen=True)
class EvalProtocol:
    """How an evaluation was done; two results are comparable only under equal protocols.
    ``pooling`` is "images" (each metric per image, then the mean over images) or "pixels" (each
    metric over the valid pixels of all images together)."""

    crop: str = "eigen"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    pooling: str = "images"

    def __post_init__(self) -> None:
        if self.crop not in ("eigen", "none"):
            raise ValueError(f"EvalProtocol.crop={self.crop!r}; expected 'eigen' or 'none'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"EvalProtocol.pooling={self.pooling!r}; expected one of {list(POOLINGS)}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(
                f"EvalProtocol depth range ({self.min_depth}, {self.max_depth}] is empty; expected 0 <= min < max"
            )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


EIGEN_PROTOCOL = EvalProtocol()
LAINA_PROTOCOL = EvalProtocol(crop="none", min_depth=1e-3, max_depth=math.inf, pooling="pixels")
PROTOCOLS = {"eigen": EIGEN_PROTOCOL, "laina": LAINA_PROTOCOL}


def to_frame(
    pred_depth: torch.Tensor, frame_shape: tuple[int, int] = FRAME_SHAPE, output_region: Region = FULL_REGION
) -> torch.Tensor:
    """Place (B,1,h,w) predictions on the full frame: bilinear resampling onto the part of the frame
    the output cells saw (``output_region`` of the evaluation input), edges replicated to the frame
    border. Returns (B,H,W)."""
    top, bottom, left, right = eval_region(frame_shape)
    height, width = frame_shape
    input_on_frame = (top / height, left / width, bottom / height, right / width)
    r = output_region
    span_h, span_w = input_on_frame[2] - input_on_frame[0], input_on_frame[3] - input_on_frame[1]
    output_on_frame = (
        input_on_frame[0] + r[0] * span_h,
        input_on_frame[1] + r[1] * span_w,
        input_on_frame[0] + r[2] * span_h,
        input_on_frame[1] + r[3] * span_w,
    )
    pred = pred_depth.float()
    theta = region_theta(FULL_REGION, output_on_frame).to(pred.device).expand(pred.shape[0], 2, 3)
    grid = F.affine_grid(theta, [pred.shape[0], 1, height, width], align_corners=False)
    return F.grid_sample(pred, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


def valid_mask(gt: torch.Tensor, protocol: EvalProtocol) -> torch.Tensor:
    """Pixels that count: finite ground truth in (min_depth, max_depth], inside the crop."""
    mask = torch.isfinite(gt) & (gt > protocol.min_depth) & (gt <= protocol.max_depth)
    if protocol.crop == "eigen":
        if tuple(gt.shape[-2:]) != FRAME_SHAPE:
            raise ValueError(f"the Eigen crop needs {FRAME_SHAPE} ground truth, got {tuple(gt.shape[-2:])}")
        crop = torch.zeros_like(mask)
        crop[..., EIGEN_CROP[0], EIGEN_CROP[1]] = True
        mask &= crop
    return mask


# Per-image sums over valid pixels from which every metric follows, under either pooling.
_SUM_KEYS = ("n", "abs_rel", "sq_rel", "sq", "log_sq", "log", "log10", "delta1", "delta2", "delta3")


def per_image_sums(pred: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol) -> dict[str, torch.Tensor]:
    """For (B,H,W) prediction and ground truth in metres: {quantity: (B,)} sums over each image's
    valid pixels (and their count ``n``), in float64."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}")
    mask = valid_mask(gt, protocol).flatten(1)
    gt64 = torch.where(mask, gt.flatten(1).double(), torch.ones_like(mask, dtype=torch.float64))
    pred64 = pred.flatten(1).double().clamp(protocol.min_depth, protocol.max_depth)
    pred64 = torch.where(mask, pred64, torch.ones_like(pred64))

    def total(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, torch.zeros_like(x)).sum(1)

    log_diff = torch.log(pred64) - torch.log(gt64)
    ratio = torch.maximum(pred64 / gt64, gt64 / pred64)
    return {
        "n": mask.sum(1).double(),
        "abs_rel": total((pred64 - gt64).abs() / gt64),
        "sq_rel": total((pred64 - gt64).pow(2) / gt64),
        "sq": total((pred64 - gt64).pow(2)),
        "log_sq": total(log_diff.pow(2)),
        "log": total(log_diff),
        "log10": total((torch.log10(pred64) - torch.log10(gt64)).abs()),
        "delta1": total((ratio < 1.25).double()),
        "delta2": total((ratio < 1.25**2).double()),
        "delta3": total((ratio < 1.25**3).double()),
    }


def metrics_from_sums(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every metric from pixel sums (per image, or pooled over images): NaN where ``n`` is 0."""
    n = sums["n"]
    safe = n.clamp_min(1)
    mean = {key: sums[key] / safe for key in _SUM_KEYS if key != "n"}
    result = {
        "abs_rel": mean["abs_rel"],
        "sq_rel": mean["sq_rel"],
        "rmse": mean["sq"].sqrt(),
        "rmse_log": mean["log_sq"].sqrt(),
        "log10": mean["log10"],
        "delta1": mean["delta1"],
        "delta2": mean["delta2"],
        "delta3": mean["delta3"],
        "si_log": (mean["log_sq"] - mean["log"].pow(2)).clamp_min(0).sqrt(),
    }
    return {name: torch.where(n == 0, torch.full_like(v, float("nan")), v) for name, v in result.items()}


class MetricAccumulator:
    """Every metric over an evaluation set, pooled as the protocol says: the mean of per-image
    values, or over all valid pixels together."""

    def __init__(self, protocol: EvalProtocol) -> None:
        self.protocol = protocol
        self._sums = {name: 0.0 for name in METRIC_NAMES}
        self._pixels = {key: 0.0 for key in _SUM_KEYS}
        self.count = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch of (B,H,W) full-resolution predictions and ground truth."""
        sums = per_image_sums(pred, gt, self.protocol)
        counted = sums["n"] > 0
        for key, v in sums.items():
            self._pixels[key] += float(v.sum())
        for name, v in metrics_from_sums(sums).items():
            self._sums[name] += float(v[counted].sum())
        self.count += int(counted.sum())

    def compute(self) -> dict[str, float]:
        """The metrics over the images seen so far; an empty set is an error rather than silent NaNs."""
        if self.count == 0:
            raise ValueError("no image with a valid ground-truth pixel was evaluated")
        if self.protocol.pooling == "pixels":
            pooled = metrics_from_sums({key: torch.tensor([v], dtype=torch.float64) for key, v in self._pixels.items()})
            return {name: float(v[0]) for name, v in pooled.items()}
        return {name: total / self.count for name, total in self._sums.items()}
