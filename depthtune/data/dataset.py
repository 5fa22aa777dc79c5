"""The torch Dataset every training and evaluation run reads: one split of an NYU-layout file,
transformed to the input and output resolution of the named model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from depthtune.data.nyu import NYUArrays, read_nyu
from depthtune.data.splits import Splits, make_splits
from depthtune.data.transforms import Augmentation, DepthTransform
from depthtune.models import geometry


class NYUDepthV2(Dataset):
    """Yields (image 3xhxw, depth target 1xh'xw', valid mask 1xh'xw') for one split.

    ``data`` is a path to the labelled .mat file or arrays already read (shared between runs).
    Training samples are augmented with a generator seeded by (seed, epoch, frame index), so a
    sample does not depend on worker count, order, or whether the run was resumed.
    With ``full_depth=True`` a fourth item, the frame's full-resolution depth, is added for metrics.
    """

    def __init__(
        self,
        data: str | os.PathLike | NYUArrays,
        split: str,
        model_name: str,
        train: bool,
        *,
        model_cfg: dict | None = None,
        splits: Splits | None = None,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        full_depth: bool = False,
    ) -> None:
        self.arrays = data if isinstance(data, NYUArrays) else read_nyu(data)
        self.splits = splits if splits is not None else make_splits(self.arrays.scenes, seed=seed)
        self.split = split
        self.indices = self.splits.get(split)
        if len(self.indices) and int(self.indices.max()) >= len(self.arrays):
            raise ValueError(
                f"split {split!r} ({self.splits.source}) refers to frame {int(self.indices.max())} "
                f"but {self.arrays.source} holds {len(self.arrays)} frames"
            )
        shape = geometry(model_name, **(model_cfg or {}))
        self.train = train
        self.transform = DepthTransform(
            shape.input_size,
            shape.output_size,
            (augmentation or Augmentation()) if train else None,
            output_region=shape.output_region,
        )
        self.seed = seed
        self.full_depth = full_depth

    def __len__(self) -> int:
        return len(self.indices)

    def generator(self, epoch: int, frame: int) -> np.random.Generator:
        """The generator of ``frame``'s augmentation in ``epoch``: every path that augments draws from it."""
        return np.random.default_rng([self.seed, epoch, frame])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """Sample ``(epoch, position)`` of the split (what EpochSampler yields; the epoch picks the
        augmentation, and travels with the index so persistent loader workers need no state), or
        ``position`` alone for epoch 0."""
        epoch, i = key if isinstance(key, tuple) else (0, key)
        frame = int(self.indices[i])
        rng = self.generator(epoch, frame) if self.train else None
        image, target, mask = self.transform(self.arrays.images[frame], self.arrays.depths[frame], rng)
        if self.full_depth:
            return image, target, mask, torch.tensor(self.arrays.depths[frame])
        return image, target, mask


class EpochSampler(Sampler[tuple[int, int]]):
    """A seeded permutation of ``n`` positions per epoch, yielding ``(epoch, position)`` keys: one
    DataLoader with persistent workers serves every epoch (no worker start-up per epoch) while each
    sample's order and augmentation still follow its epoch, as with a loader built per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        epoch = self.epoch
        return ((epoch, i) for i in torch.randperm(self.n, generator=generator).tolist())
