"""Depth metrics of the Eigen evaluation protocol, computed per image and averaged over images.

Predictions are brought to ground-truth resolution first (``to_frame``), then every metric is
taken over valid pixels: inside the Eigen crop (rows 45:471, cols 41:601 of 480x640), ground truth
in (min_depth, max_depth], predictions clamped to the same range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from depthtune.data.transforms import FRAME_SHAPE, eval_region
from depthtune.models.geometry import FULL_REGION, Region, region_theta

METRIC_NAMES: tuple[str, ...] = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "delta1",
    "delta2",
    "delta3",
    "si_log",
)
LOWER_IS_BETTER: frozenset[str] = frozenset(METRIC_NAMES) - {"delta1", "delta2", "delta3"}


def higher_is_better(metric: str) -> bool:
    """The delta accuracies go up; errors and losses go down. ``metric`` may carry the ``val_``
    or ``test_`` prefix of an epoch's or a registered version's metrics."""
    return metric.removeprefix("val_").removeprefix("test_") not in LOWER_IS_BETTER | {"loss"}


def relative_gain(metric: str, value: float, reference: float) -> float:
    """How much better ``value`` is than ``reference``, as a fraction of the reference (positive:
    better, whichever direction the metric improves in); NaN for a reference of 0 (a delta
    accuracy of a model that never got a pixel within the threshold), where no fraction exists."""
    change = (value - reference) if higher_is_better(metric) else (reference - value)
    return change / abs(reference) if reference else math.nan

EIGEN_CROP = (slice(45, 471), slice(41, 601))


@dataclass(frozen=True)
class EvalProtocol:
    """How an evaluation was done; two results are comparable only under equal protocols."""

    crop: str = "eigen"
    min_depth: float = 1e-3
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        if self.crop not in ("eigen", "none"):
            raise ValueError(f"EvalProtocol.crop={self.crop!r}; expected 'eigen' or 'none'")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(
                f"EvalProtocol depth range ({self.min_depth}, {self.max_depth}] is empty; expected 0 <= min < max"
            )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


EIGEN_PROTOCOL = EvalProtocol()


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


def per_image_metrics(pred: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol) -> dict[str, torch.Tensor]:
    """Every metric for each image of (B,H,W) prediction and ground truth in metres -> {name: (B,)}.

    Images without any valid pixel get NaN so that callers can skip them explicitly.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(gt.shape)}")
    mask = valid_mask(gt, protocol).flatten(1)
    n = mask.sum(1).to(torch.float64)
    gt64 = torch.where(mask, gt.flatten(1).double(), torch.ones_like(n)[:, None])
    pred64 = pred.flatten(1).double().clamp(protocol.min_depth, protocol.max_depth)
    pred64 = torch.where(mask, pred64, torch.ones_like(pred64))

    def mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, x, torch.zeros_like(x)).sum(1) / n

    log_diff = torch.log(pred64) - torch.log(gt64)
    ratio = torch.maximum(pred64 / gt64, gt64 / pred64)
    result = {
        "abs_rel": mean((pred64 - gt64).abs() / gt64),
        "sq_rel": mean((pred64 - gt64).pow(2) / gt64),
        "rmse": mean((pred64 - gt64).pow(2)).sqrt(),
        "rmse_log": mean(log_diff.pow(2)).sqrt(),
        "log10": mean((torch.log10(pred64) - torch.log10(gt64)).abs()),
        "delta1": mean((ratio < 1.25).double()),
        "delta2": mean((ratio < 1.25**2).double()),
        "delta3": mean((ratio < 1.25**3).double()),
        "si_log": (mean(log_diff.pow(2)) - mean(log_diff).pow(2)).clamp_min(0).sqrt(),
    }
    empty = n == 0
    return {name: torch.where(empty, torch.full_like(v, float("nan")), v) for name, v in result.items()}


class MetricAccumulator:
    """Running per-image averages of every metric over an evaluation set."""

    def __init__(self, protocol: EvalProtocol) -> None:
        self.protocol = protocol
        self._sums = {name: 0.0 for name in METRIC_NAMES}
        self.count = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch of (B,H,W) full-resolution predictions and ground truth."""
        values = per_image_metrics(pred, gt, self.protocol)
        counted = ~torch.isnan(values["abs_rel"])
        for name, v in values.items():
            self._sums[name] += float(v[counted].sum())
        self.count += int(counted.sum())

    def compute(self) -> dict[str, float]:
        """Means over the images seen so far; an empty set is an error rather than silent NaNs."""
        if self.count == 0:
            raise ValueError("no image with a valid ground-truth pixel was evaluated")
        return {name: total / self.count for name, total in self._sums.items()}
