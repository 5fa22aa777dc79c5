"""Train/val/test splits by scene: NYU's official ``splits.mat`` or a seeded random split.

Frames of one scene (one room, often consecutive views of it) are never on two sides of a split:
validation frames from the rooms a model trained on would score settings that memorise rooms,
while the benchmark's test set is other rooms. With ``splits.mat`` the test set is NYU's 654
``testNdxs`` (the set papers report on) and the validation set is seeded whole scenes of the 795
``trainNdxs``, so tuning never sees test frames; ``test_fraction`` is then unused. Without it,
seeded whole scenes are drawn for test, then validation, until each holds its fraction of the
frames (rounded half up, at least one frame for a positive fraction), and the rest train.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Sorted 0-based int64 frame indices of each split, and where they came from."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str

    def get(self, name: str) -> np.ndarray:
        """Indices of split ``name`` ("train", "val" or "test")."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)

    def describe(self, scenes: Sequence[str]) -> dict:
        """Per split: frame and scene counts, frame indices and scene names (``scenes`` names
        each frame's scene); what ``depthtune data split --json`` prints and a sweep logs."""
        described: dict = {"source": self.source}
        for name in SPLIT_NAMES:
            indices = self.get(name)
            names = sorted({scenes[i] for i in indices})
            described[name] = {
                "frames": int(indices.size),
                "scenes": len(names),
                "indices": indices.tolist(),
                "scene_names": names,
            }
        return described


def make_splits(
    scenes: Sequence[str],
    *,
    splits_file: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Split the frames whose scenes ``scenes`` names (one name per frame) by scene: NYU's
    official split if ``splits_file`` is given, else seeded random."""
    _check_fractions(val_fraction, test_fraction)
    frame_scenes = np.asarray(list(scenes), dtype=object)
    if frame_scenes.size == 0:
        raise ValueError("make_splits: no frames to split")
    if splits_file is not None:
        return _official_splits(frame_scenes, Path(splits_file), val_fraction, seed)
    return _random_splits(frame_scenes, val_fraction, test_fraction, seed)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Reject fractions outside [0, 1) or leaving nothing for training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value}; expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction={val_fraction} + test_fraction={test_fraction} = "
            f"{val_fraction + test_fraction}; expected a sum below 1 to leave "
            "frames for training"
        )


def _count(fraction: float, n: int) -> int:
    """Frames for ``fraction`` of ``n``, rounded half up, at least one when the fraction is > 0."""
    if fraction == 0.0:
        return 0
    return max(1, math.floor(fraction * n + 0.5))


def _draw_scenes(frames: np.ndarray, frame_scenes: np.ndarray, wanted: list[int], seed: int) -> list[np.ndarray]:
    """Seeded whole scenes of ``frames`` into consecutive groups, each filled until it holds its
    ``wanted`` number of frames; the frames left over come last. Sorted indices per group."""
    names = list(dict.fromkeys(frame_scenes[frames]))  # scenes in order of first frame: seed-stable
    order = np.random.default_rng(seed).permutation(len(names))
    by_scene = {name: [] for name in names}
    for frame in frames:
        by_scene[frame_scenes[frame]].append(int(frame))
    groups: list[list[int]] = [[] for _ in range(len(wanted) + 1)]
    group = 0
    for k in order:
        while group < len(wanted) and len(groups[group]) >= wanted[group]:
            group += 1
        groups[group].extend(by_scene[names[k]])
    return [np.sort(np.asarray(g, dtype=np.int64)) for g in groups]


def _random_splits(frame_scenes: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded whole scenes to test, then validation, then the rest to training."""
    n = frame_scenes.size
    n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
    test, val, train = _draw_scenes(np.arange(n), frame_scenes, [n_test, n_val], seed)
    if train.size < 1:
        raise ValueError(
            f"n={n} frames in {len(set(frame_scenes))} scenes are too few for val_fraction={val_fraction} "
            f"and test_fraction={test_fraction} drawn by whole scenes; expected enough for at least one "
            f"training frame (val {val.size}, test {test.size})"
        )
    return Splits(
        train=train,
        val=val,
        test=test,
        source=f"random by scene(seed={seed}, val={val_fraction}, test={test_fraction})",
    )


def _official_splits(frame_scenes: np.ndarray, path: Path, val_fraction: float, seed: int) -> Splits:
    """NYU's ``splits.mat``: test = testNdxs, val = seeded whole scenes of trainNdxs, train = the rest."""
    n = frame_scenes.size
    mat = _load_mat(path)
    train_all = _indices(mat, path, "trainNdxs", n)
    test = _indices(mat, path, "testNdxs", n)
    overlap = np.intersect1d(train_all, test)
    if overlap.size:
        raise ValueError(
            f"{path}: 'trainNdxs' and 'testNdxs' share {overlap.size} frames "
            f"(1-based, first {(overlap[:5] + 1).tolist()}); expected disjoint splits"
        )
    shared = sorted(set(frame_scenes[train_all]) & set(frame_scenes[test]))
    if shared:
        logger.warning(
            "%s: %d scenes have frames in both trainNdxs and testNdxs (first %s): the official split is "
            "not scene-disjoint for this file",
            path,
            len(shared),
            shared[:3],
        )
    n_val = _count(val_fraction, train_all.size)
    val, train = _draw_scenes(train_all, frame_scenes, [n_val], seed)
    if train.size < 1:
        raise ValueError(
            f"{path}: 'trainNdxs' holds {train_all.size} frames in {len(set(frame_scenes[train_all]))} scenes, "
            f"too few for val_fraction={val_fraction} drawn by whole scenes; expected at least one left for training"
        )
    return Splits(
        train=train, val=val, test=test, source=f"splits.mat:{path} (val by scene={val_fraction}, seed={seed})"
    )


def _load_mat(path: Path) -> dict:
    """Load a MAT v5 file, turning scipy's failures into a message about ``path``."""
    if not path.exists():
        raise FileNotFoundError(
            f"splits file {path} does not exist; expected NYU's splits.mat with 'trainNdxs' and 'testNdxs'"
        )
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError as exc:
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; expected NYU's splits.mat (MAT v5)") from exc
    except Exception as exc:  # scipy fails on foreign bytes with many exception types
        raise ValueError(
            f"{path} is not a readable MAT file ({exc}); expected NYU's splits.mat with 'trainNdxs' and 'testNdxs'"
        ) from exc


def _indices(mat: dict, path: Path, key: str, n: int) -> np.ndarray:
    """Sorted 0-based indices from 1-based column vector ``key``, checked against ``n``."""
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(
            f"{path}: key {key!r} is missing (found {found}); expected NYU's 1-based 'trainNdxs' and 'testNdxs'"
        )
    raw = np.asarray(mat[key])
    values = raw.ravel()
    if values.size == 0 or values.dtype.kind not in "iuf" or not np.all(values == np.round(values)):
        raise ValueError(
            f"{path}: key {key!r} holds {raw.dtype} values of shape {raw.shape}; "
            "expected a non-empty vector of whole 1-based frame numbers"
        )
    idx = values.astype(np.int64)
    if idx.min() < 1:
        raise ValueError(f"{path}: key {key!r} has index {idx.min()}; expected 1-based frame numbers >= 1")
    if idx.max() > n:
        raise ValueError(
            f"{path}: key {key!r} has index {idx.max()} but the data holds n={n} frames: split larger than the data"
        )
    unique = np.unique(idx)
    if unique.size != idx.size:
        raise ValueError(
            f"{path}: key {key!r} lists {idx.size - unique.size} frames more than "
            "once; expected each frame at most once"
        )
    return unique - 1
