"""Preprocessing geometry: orientation, crop, augmentation effects and validity masks."""

import numpy as np
import pytest
import torch

from depthtune.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augmentation, DepthTransform

FRAME = (480, 640)


def _frame_with_bright_top_left():
    image = np.zeros((*FRAME, 3), dtype=np.uint8)
    image[:240, :320] = 255
    depth = np.full(FRAME, 2.0, dtype=np.float32)
    depth[:240, :320] = 8.0
    return image, depth


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return (x * IMAGENET_STD + IMAGENET_MEAN) * 255


def test_eval_transform_shapes_and_orientation():
    image, depth = _frame_with_bright_top_left()
    x, target, mask = DepthTransform((228, 304), (55, 74))(image, depth)
    assert x.shape == (3, 228, 304) and target.shape == (1, 55, 74) and mask.shape == (1, 55, 74)
    rgb = _unnormalise(x)
    assert float(rgb[:, 10, 10].min()) > 250 and float(rgb[:, -10, -10].max()) < 5
    assert float(target[0, 5, 5]) == 8.0 and float(target[0, -5, -5]) == 2.0
    assert bool(mask.all())


def test_eval_transform_is_a_centre_crop():
    depth = np.tile(np.arange(640, dtype=np.float32) + 1.0, (480, 1))
    _, target, _ = DepthTransform((228, 304), (228, 304))(np.zeros((*FRAME, 3), np.uint8), depth)
    # 95% of the width centred: columns 16..623 of the frame are seen.
    assert float(target[0, 0, 0]) == pytest.approx(17.0, abs=1.5)
    assert float(target[0, 0, -1]) == pytest.approx(624.0, abs=1.5)


def test_invalid_depth_is_masked():
    image, depth = _frame_with_bright_top_left()
    depth[200:280, 280:360] = 0.0
    depth[0:10] = np.nan
    _, target, mask = DepthTransform((114, 152), (26, 36))(image, depth)
    assert not bool(mask[0, 13, 18])
    assert bool(mask[0, 2, 2])
    assert torch.isfinite(target).all()
    assert float(target[~mask].abs().max()) == 0.0


def test_augmentation_scales_depth_and_is_reproducible():
    image = np.full((*FRAME, 3), 128, dtype=np.uint8)
    depth = np.full(FRAME, 4.0, dtype=np.float32)
    transform = DepthTransform((114, 152), (26, 36), Augmentation(rotation_deg=0.0))
    a = transform(image, depth, np.random.default_rng(7))
    b = transform(image, depth, np.random.default_rng(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    _, target, mask = a
    values = target[mask].unique()
    assert len(values) == 1 and 4.0 / 1.5 <= float(values[0]) <= 4.0


def test_augmentation_flips_sometimes():
    image, depth = _frame_with_bright_top_left()
    transform = DepthTransform(
        (114, 152), (26, 36), Augmentation(scale=(1.0, 1.0), rotation_deg=0.0, colour=(1.0, 1.0))
    )
    left_bright = [
        float(_unnormalise(transform(image, depth, np.random.default_rng(s))[0])[0, 5, 5]) > 200 for s in range(20)
    ]
    assert 0 < sum(left_bright) < 20


def test_training_transform_needs_a_generator():
    image, depth = _frame_with_bright_top_left()
    with pytest.raises(ValueError, match="generator"):
        DepthTransform((114, 152), (26, 36), Augmentation())(image, depth)


@pytest.mark.parametrize("bad", [dict(scale=(0.5, 1.0)), dict(colour=(0.0, 1.0)), dict(rotation_deg=-1.0)])
def test_bad_augmentation_ranges(bad):
    with pytest.raises(ValueError):
        Augmentation(**bad)


def test_target_is_sampled_on_the_output_region():
    depth = np.tile(np.arange(640, dtype=np.float32) + 1.0, (480, 1))
    image = np.zeros((*FRAME, 3), np.uint8)
    full = DepthTransform((228, 304), (10, 10))(image, depth)[1]
    inner = DepthTransform((228, 304), (10, 8), output_region=(0.0, 0.1, 1.0, 0.9))(image, depth)[1]
    # The input sees frame columns 16..624 (608 px); 80% of it in 8 cells of 60.8 px from column 76.8.
    assert float(inner[0, 0, 0]) == pytest.approx(16 + 0.1 * 608 + 30.4, abs=1.0)
    assert float(inner[0, 0, -1]) == pytest.approx(16 + 0.9 * 608 - 30.4, abs=1.0)
    assert float(full[0, 0, 0]) == pytest.approx(16 + 30.4, abs=1.0)
