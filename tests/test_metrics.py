"""Depth metrics against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from depthtune.data.transforms import eval_region
from depthtune.metrics import (
    EIGEN_CROP,
    LAINA_PROTOCOL,
    EvalProtocol,
    MetricAccumulator,
    to_frame,
    valid_mask,
)

NO_CROP = EvalProtocol(crop="none")


def image_metrics(pred: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol) -> dict[str, float]:
    """Every metric of one (1,H,W) image, as evaluation computes it: through the accumulator."""
    assert pred.shape[0] == 1, "one image: per-image and pooled values are then the same"
    accumulator = MetricAccumulator(protocol)
    accumulator.update(pred, gt)
    return accumulator.compute()


def test_hand_computed_values():
    pred = torch.tensor([[1.0, 2.0, 4.0, 5.0]])
    gt = torch.tensor([[2.0, 2.0, 2.0, 0.0]])  # the last pixel is invalid
    m = image_metrics(pred, gt, NO_CROP)
    assert m["abs_rel"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert m["sq_rel"] == pytest.approx((1 / 2 + 0 + 4 / 2) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    ln2 = math.log(2)
    assert m["rmse_log"] == pytest.approx(math.sqrt((ln2**2 + 0 + ln2**2) / 3))
    assert m["log10"] == pytest.approx(2 * math.log10(2) / 3)
    # ratios max(p/g, g/p): 2, 1, 2 and 2 > 1.25^3 = 1.953
    assert m["delta1"] == m["delta2"] == m["delta3"] == pytest.approx(1 / 3)
    # log differences: -ln2, 0, ln2 -> mean 0, variance 2/3 ln2^2
    assert m["si_log"] == pytest.approx(math.sqrt(2 / 3) * ln2)


def test_delta_thresholds():
    gt = torch.full((1, 3), 2.0)
    pred = torch.tensor([[2.4, 3.0, 1.1]])  # ratios 1.2, 1.5, 1.82
    m = image_metrics(pred, gt, NO_CROP)
    assert [m[k] for k in ("delta1", "delta2", "delta3")] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_predictions_are_clamped_to_the_depth_cap():
    pred = torch.tensor([[30.0, 0.0]])
    gt = torch.tensor([[10.0, 1.0]])
    m = image_metrics(pred, gt, NO_CROP)
    # 30 -> 10 (exact), 0 -> 1e-3 -> abs rel 0.999
    assert m["abs_rel"] == pytest.approx((0 + 0.999) / 2)


def test_ground_truth_beyond_cap_or_nan_is_ignored():
    pred = torch.tensor([[2.0, 2.0, 2.0]])
    gt = torch.tensor([[2.0, 12.0, float("nan")]])
    assert image_metrics(pred, gt, NO_CROP)["abs_rel"] == 0.0


def test_eigen_crop_mask():
    gt = torch.ones(1, 480, 640)
    mask = valid_mask(gt, EvalProtocol())
    assert int(mask.sum()) == (471 - 45) * (601 - 41)
    assert bool(mask[0, 45, 41]) and not bool(mask[0, 44, 41]) and not bool(mask[0, 471, 100])
    errors = torch.full((1, 480, 640), 5.0)
    errors[0, EIGEN_CROP[0], EIGEN_CROP[1]] = 1.0
    assert image_metrics(errors, gt, EvalProtocol())["abs_rel"] == 0.0


def test_eigen_crop_requires_full_frame():
    with pytest.raises(ValueError, match="480, 640"):
        valid_mask(torch.ones(1, 10, 10), EvalProtocol())


def test_to_frame_places_prediction_on_the_input_region():
    top, bottom, left, right = eval_region()
    assert (top, bottom, left, right) == (12, 468, 16, 624)
    pred = torch.arange(4.0).view(1, 1, 2, 2) + 1.0
    frame = to_frame(pred)
    assert frame.shape == (1, 480, 640)
    assert float(frame[0, 0, 0]) == 1.0 and float(frame[0, -1, -1]) == 4.0
    assert float(frame[0, top + 10, left + 10]) == 1.0 and float(frame[0, bottom - 10, right - 10]) == 4.0


def test_accumulator_averages_per_image_and_skips_empty_images():
    acc = MetricAccumulator(NO_CROP)
    gt = torch.tensor([[2.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
    pred = torch.tensor([[1.0, 1.0], [1.0, 7.0], [3.0, 3.0]])
    acc.update(pred, gt)
    assert acc.count == 2
    assert acc.compute()["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="no image"):
        MetricAccumulator(NO_CROP).compute()


def test_perfect_prediction():
    rng = np.random.default_rng(0)
    gt = torch.tensor(rng.uniform(0.7, 10, size=(2, 480, 640)))
    for image in gt.split(1):
        m = image_metrics(image.clone(), image, EvalProtocol())
        assert all(m[k] == pytest.approx(0.0, abs=1e-12) for k in ("abs_rel", "rmse", "rmse_log", "si_log"))
        assert m["delta1"] == 1.0


def test_protocol_validation():
    with pytest.raises(ValueError, match="crop"):
        EvalProtocol(crop="garg")
    with pytest.raises(ValueError, match="empty"):
        EvalProtocol(min_depth=5, max_depth=1)


def test_to_frame_honours_the_output_region():
    pred = torch.tensor([[[[1.0, 2.0]]]])  # two cells side by side
    frame = to_frame(pred, output_region=(0.0, 0.25, 1.0, 0.75))
    # the input covers columns 16..624; the output its middle half, 168..472, one cell each side of 320
    assert float(frame[0, 240, 160]) == 1.0 and float(frame[0, 240, 480]) == 2.0
    assert float(frame[0, 240, 243]) == pytest.approx(1.0, abs=0.02)
    assert float(frame[0, 240, 319]) == pytest.approx(1.5, abs=0.01)
    assert float(frame[0, 240, 396]) == pytest.approx(2.0, abs=0.02)


def test_laina_protocol_pools_every_valid_pixel_of_the_full_frame_as_a_brute_force_loop_does():
    """Laina et al.'s released evaluation: no crop, no depth cap, errors over all pixels of all images."""
    rng = np.random.default_rng(4)
    gt = rng.uniform(0.5, 14.0, (3, 9, 11))
    gt[0, :4] = 0.0  # invalid rows: fewer pixels in the first image
    gt[2, 3, 5] = np.nan
    pred = gt * rng.uniform(0.7, 1.4, gt.shape)
    pred[np.isnan(pred)] = 1.0
    accumulator = MetricAccumulator(LAINA_PROTOCOL)
    accumulator.update(torch.from_numpy(pred[:2]), torch.from_numpy(gt[:2]))
    accumulator.update(torch.from_numpy(pred[2:]), torch.from_numpy(gt[2:]))
    got = accumulator.compute()
    p, g = [], []
    for image in range(3):
        for row in range(9):
            for col in range(11):
                if np.isfinite(gt[image, row, col]) and gt[image, row, col] > 1e-3:
                    p.append(max(pred[image, row, col], 1e-3))
                    g.append(gt[image, row, col])
    p, g = np.array(p), np.array(g)
    d = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    expected = {
        "abs_rel": np.mean(np.abs(p - g) / g),
        "sq_rel": np.mean((p - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)),
        "rmse_log": np.sqrt(np.mean(d**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "delta1": np.mean(ratio < 1.25),
        "delta2": np.mean(ratio < 1.25**2),
        "delta3": np.mean(ratio < 1.25**3),
        "si_log": np.sqrt(np.mean(d**2) - np.mean(d) ** 2),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    per_image = MetricAccumulator(EvalProtocol(crop="none", max_depth=math.inf))
    per_image.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert per_image.compute()["rmse"] < got["rmse"]  # the mean of per-image RMSEs is below the pooled one here
