"""Training batches from a split kept on the GPU and augmented there: the CPU loader's batches,
for training runs whose GPU a CPU loader cannot keep busy.

The frames are downscaled once, on the CPU, by the loader's own code (the downscale does not depend
on the random warp); each batch's warps are drawn on the CPU from the generators the loader's
samples use, then applied on the device by ``DepthTransform.apply`` in one pass per batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import torch

from depthtune.data.dataset import EpochSampler, NYUDepthV2
from depthtune.data.transforms import Warps

log = logging.getLogger(__name__)


def resident_bytes(dataset: NYUDepthV2) -> int:
    """Device bytes of a split's resident copy: uint8 base-size frames and float32 full-resolution depths."""
    height, width = dataset.arrays.depths.shape[1:]
    base_h, base_w = dataset.transform.base_size
    return len(dataset) * (3 * base_h * base_w + 4 * height * width)


def fits_on_device(dataset: NYUDepthV2, device: torch.device, share: float) -> bool:
    """Whether ``dataset``'s resident copy needs at most ``share`` of a CUDA ``device``'s memory
    (False off CUDA and for share 0: the CPU loader is used there)."""
    if device.type != "cuda" or share <= 0:
        return False
    return torch.cuda.get_device_properties(device).total_memory * share >= resident_bytes(dataset)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU through pinned memory, so the copy does not wait for the GPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class DeviceBatches:
    """``(image, target, mask)`` batches of an augmenting training split, resident and warped on
    ``device``: those of ``DataLoader(dataset, batch_size, sampler=EpochSampler(len(dataset), seed))``.

    The order comes from ``seed`` (the sampler's) and each sample's warp from the dataset's own seed,
    epoch and frame, as in ``NYUDepthV2.__getitem__``; images come in ``layout``.
    """

    def __init__(
        self,
        dataset: NYUDepthV2,
        batch_size: int,
        seed: int,
        device: torch.device,
        layout: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if dataset.transform.augmentation is None:
            raise ValueError(
                f"DeviceBatches needs an augmenting training dataset; split {dataset.split!r} has "
                f"train={dataset.train} (no augmentation): use the DataLoader"
            )
        if dataset.full_depth:
            raise ValueError(
                f"DeviceBatches yields no full-resolution depth; split {dataset.split!r} has full_depth=True"
            )
        if batch_size < 1:
            raise ValueError(f"DeviceBatches: batch_size={batch_size}; expected at least 1")
        started = time.perf_counter()
        self.batch_size, self.device, self.layout = batch_size, device, layout
        self._dataset, self._transform, self._frames = dataset, dataset.transform, dataset.indices
        self._sampler = EpochSampler(len(dataset), seed)
        depths = dataset.arrays.depths
        self._frame_shape = tuple(depths.shape[1:])
        self._bases = torch.empty((len(dataset), 3, *self._transform.base_size), dtype=torch.uint8, device=device)
        self._depths = torch.empty((len(dataset), 1, *self._frame_shape), dtype=torch.float32, device=device)
        for position, frame in enumerate(self._frames):
            self._bases[position] = self._transform.base_image(dataset.arrays.images[frame])[0]
            self._depths[position, 0] = torch.from_numpy(depths[frame])
        log.info(
            "%d training frames of split %r resident on %s (%.0f MiB) in %.1f s",
            len(dataset),
            dataset.split,
            device,
            resident_bytes(dataset) / 2**20,
            time.perf_counter() - started,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and warps the next iteration yields."""
        self._sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self._sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        keys = list(self._sampler)
        for start in range(0, len(keys), self.batch_size):
            yield self._batch(keys[start : start + self.batch_size])

    def _batch(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        warps = Warps.cat(
            [
                self._transform.draw(self._dataset.generator(epoch, int(self._frames[i])), self._frame_shape)
                for epoch, i in keys
            ]
        )
        warps = Warps(*(_to_device(t, self.device) for t in warps.tensors()))
        index = _to_device(torch.tensor([i for _, i in keys]), self.device)
        image, target, mask = self._transform.apply(self._bases[index], self._depths[index], warps)
        return image.contiguous(memory_format=self.layout), target, mask
