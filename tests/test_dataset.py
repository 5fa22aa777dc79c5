"""The NYUDepthV2 Dataset: resolutions per model, split handling, and reproducible augmentation."""

import pytest
import torch

from conftest import TINY
from depthtune.data import EpochSampler, NYUDepthV2, make_splits


@pytest.mark.parametrize(
    "model, cfg, input_size, output_size",
    [
        ("net12", {}, (228, 304), (55, 74)),
        ("net3", {}, (228, 304), (109, 147)),
        ("fcrn", {}, (228, 304), (128, 160)),
        ("net12", TINY["net12"], (64, 80), None),
    ],
)
def test_yields_the_resolution_the_model_needs(synthetic_file, model, cfg, input_size, output_size):
    dataset = NYUDepthV2(synthetic_file, "val", model, train=False, model_cfg=cfg)
    image, target, mask = dataset[0]
    assert image.shape == (3, *input_size) and image.dtype == torch.float32
    assert target.shape == mask.shape and mask.dtype == torch.bool
    if output_size is not None:
        assert target.shape == (1, *output_size)
    assert float(target[mask].min()) >= 0.7 / 1.5


def test_split_sizes_and_disjointness(synthetic_arrays):
    datasets = {
        s: NYUDepthV2(synthetic_arrays, s, "net12", False, model_cfg=TINY["net12"]) for s in ("train", "val", "test")
    }
    assert {s: len(d) for s, d in datasets.items()} == {"train": 14, "val": 3, "test": 3}  # whole rooms of 3 views
    rooms = {s: {synthetic_arrays.scenes[i] for i in d.indices} for s, d in datasets.items()}
    assert not rooms["train"] & rooms["val"] and not rooms["train"] & rooms["test"] and not rooms["val"] & rooms["test"]


def test_full_depth_for_metrics(synthetic_arrays):
    dataset = NYUDepthV2(synthetic_arrays, "test", "fcrn", False, model_cfg=TINY["fcrn"], full_depth=True)
    *_, full = dataset[1]
    frame = int(make_splits(synthetic_arrays.scenes).test[1])
    assert torch.equal(full, torch.from_numpy(synthetic_arrays.depths[frame]))


def test_training_samples_depend_on_seed_epoch_and_frame_only(synthetic_arrays):
    a = NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=TINY["net12"], seed=5)
    b = NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=TINY["net12"], seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a[3], b[(0, 3)]))
    assert not torch.equal(a[3][0], b[(1, 3)][0])


def test_epoch_sampler_keys_carry_the_epoch_to_the_augmentation(synthetic_arrays):
    dataset = NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=TINY["net12"], seed=5)
    sampler = EpochSampler(len(dataset), seed=5)
    sampler.set_epoch(2)
    keys = list(sampler)
    expected = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(5 * 1_000_003 + 2)).tolist()
    assert keys == [(2, i) for i in expected] and len(sampler) == len(dataset)
    epoch, i = keys[0]
    other_epoch = NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=TINY["net12"], seed=5)[(3, i)]
    assert not torch.equal(dataset[(epoch, i)][0], other_epoch[0])
    sampler.set_epoch(3)
    assert [key[0] for key in sampler] == [3] * len(dataset)


def test_unknown_split_and_model_are_named(synthetic_arrays):
    with pytest.raises(ValueError, match="'validation'"):
        NYUDepthV2(synthetic_arrays, "validation", "net12", False)
    with pytest.raises(ValueError, match="'unet'"):
        NYUDepthV2(synthetic_arrays, "train", "unet", False)


def test_split_larger_than_the_data_is_an_error(synthetic_arrays, tmp_path):
    from scipy.io import savemat

    splits_file = tmp_path / "splits.mat"
    savemat(splits_file, {"trainNdxs": [[1], [2], [3], [40]], "testNdxs": [[5], [6]]})
    with pytest.raises(ValueError, match="40"):
        make_splits(synthetic_arrays.scenes, splits_file=splits_file)
