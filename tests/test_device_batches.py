"""The device-resident training batches: the same batches as the CPU loader, on the same seed."""

import pytest
import torch
from torch.utils.data import DataLoader

from depthtune.data import EpochSampler, NYUDepthV2
from depthtune.data.device_batches import DeviceBatches, fits_on_device, resident_bytes
from depthtune.profiles import model_config

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
CUDA_IMAGE_ATOL = 1e-3
TIE_MARGIN_PX = 1e-3


@pytest.fixture(scope="module")
def train_set(synthetic_arrays) -> NYUDepthV2:
    """The 14 training frames of the synthetic file at the cpu profile's Net12 resolution."""
    return NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=model_config("cpu", "net12"), seed=5)


def _near_ties(target_theta: torch.Tensor, out_hw: tuple[int, int], frame_hw: tuple[int, int]) -> torch.Tensor:
    """Bx1xhxw: target cells whose sampling point lies within TIE_MARGIN_PX of the midpoint between
    two depth pixels (in float64), where nearest sampling may go either way at float32 rounding."""
    (h, w), (height, width) = out_hw, frame_hw
    ys = (2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)
    coords = torch.einsum("hwk,bik->bhwi", base, target_theta.double())
    pixels = ((coords + 1) * torch.tensor([width, height], dtype=torch.float64) - 1) / 2
    return ((pixels - pixels.floor() - 0.5).abs() < TIE_MARGIN_PX).any(dim=-1)[:, None]


@pytest.mark.parametrize("device", DEVICES)
def test_device_batches_equal_the_cpu_loader(train_set, device):
    """The GPU-path augmentation equals the CPU path's on the same seed, batch by batch over 3 epochs.

    On CPU tensors everything is bit-identical: the same draws, the same downscaled frames, and the
    batched affine_grid/grid_sample compute each sample as the per-sample calls do. On CUDA the grids
    and bilinear weights round differently (cuBLAS, fused multiply-adds) by about 1e-5 px, so images
    agree to CUDA_IMAGE_ATOL (normalised units, 0.06 of a grey level, about 20x the expected error),
    and a target cell (with its mask) may take the other of two depth pixels only where its sampling
    point lies within TIE_MARGIN_PX of their midpoint: every other cell is compared exactly.
    """
    device = torch.device(device)
    batch_size, seed = 4, 11
    batches = DeviceBatches(train_set, batch_size, seed, device, torch.channels_last)
    sampler = EpochSampler(len(train_set), seed)
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler)
    transform, frame_hw = train_set.transform, train_set.arrays.depths.shape[1:]
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches.set_epoch(epoch)
        keys = list(sampler)
        got_batches, want_batches = list(batches), list(loader)
        assert len(got_batches) == len(want_batches) == len(batches)
        for start, got, want in zip(range(0, len(keys), batch_size), got_batches, want_batches):
            image, target, mask = got
            assert image.device.type == device.type and image.is_contiguous(memory_format=torch.channels_last)
            image, target, mask = image.cpu(), target.cpu(), mask.cpu()
            assert [t.shape for t in (image, target, mask)] == [t.shape for t in want]
            if device.type == "cpu":
                assert torch.equal(image, want[0]) and torch.equal(target, want[1]) and torch.equal(mask, want[2])
                continue
            torch.testing.assert_close(image, want[0], rtol=0, atol=CUDA_IMAGE_ATOL)
            batch_keys = keys[start : start + len(target)]
            rngs = [train_set.generator(e, int(train_set.indices[i])) for e, i in batch_keys]
            thetas = torch.cat([transform.draw(rng, frame_hw).target_theta for rng in rngs])
            exact = ~_near_ties(thetas, transform.output_size, frame_hw)
            assert float(exact.float().mean()) > 0.98
            assert torch.equal(target[exact], want[1][exact]) and torch.equal(mask[exact], want[2][exact])


def test_order_and_batch_sizes(train_set):
    """Batches follow EpochSampler's permutation of the epoch; the last partial batch is kept."""
    cpu = torch.device("cpu")
    assert [len(b[0]) for b in DeviceBatches(train_set, 5, 0, cpu)] == [5, 5, 4]
    assert len(DeviceBatches(train_set, 5, 0, cpu)) == 3
    assert [len(b[0]) for b in DeviceBatches(train_set, 20, 0, cpu)] == [14]
    batches, sampler = DeviceBatches(train_set, 14, 0, cpu), EpochSampler(len(train_set), 0)
    batches.set_epoch(2)
    sampler.set_epoch(2)
    (_, target, _), *_ = batches
    assert torch.equal(target, torch.stack([train_set[key][1] for key in sampler]))


def test_fits_on_device_only_on_cuda_with_a_share(train_set):
    assert resident_bytes(train_set) == 14 * (3 * 120 * 160 + 4 * 480 * 640)
    assert not fits_on_device(train_set, torch.device("cpu"), 1.0)
    assert not fits_on_device(train_set, torch.device("cuda"), 0.0)
    if torch.cuda.is_available():
        assert fits_on_device(train_set, torch.device("cuda"), 1.0)


def test_bad_dataset_or_batch_size_is_named(synthetic_arrays, train_set):
    cfg = model_config("cpu", "net12")
    plain = NYUDepthV2(synthetic_arrays, "train", "net12", False, model_cfg=cfg)
    with pytest.raises(ValueError, match="train=False"):
        DeviceBatches(plain, 4, 0, torch.device("cpu"))
    with_depth = NYUDepthV2(synthetic_arrays, "train", "net12", True, model_cfg=cfg, full_depth=True)
    with pytest.raises(ValueError, match="full_depth=True"):
        DeviceBatches(with_depth, 4, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size=0"):
        DeviceBatches(train_set, 0, 0, torch.device("cpu"))
