"""Train/val/test splits: NYU's official ``splits.mat`` or a seeded random split.

With ``splits.mat`` the test set is NYU's 654 ``testNdxs`` (the set papers report on) and the
validation set is a seeded ``val_fraction`` of the 795 ``trainNdxs``, so tuning never sees test
frames; ``test_fraction`` is then unused. Without it, a seeded permutation is cut into test, val
and train. Counts are rounded half up; a fraction of 0 gives an empty split and a positive
fraction at least one frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

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


def make_splits(n: int, *, splits_file: str | os.PathLike | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Split ``n`` frames: NYU's official split if ``splits_file`` is given, else seeded random."""
    _check_fractions(val_fraction, test_fraction)
    if splits_file is not None:
        return _official_splits(n, Path(splits_file), val_fraction, seed)
    return _random_splits(n, val_fraction, test_fraction, seed)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Reject fractions outside [0, 1) or leaving nothing for training."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value}; expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction={val_fraction} + test_fraction={test_fraction} = "
                         f"{val_fraction + test_fraction}; expected a sum below 1 to leave "
                         "frames for training")


def _count(fraction: float, n: int) -> int:
    """Frames for ``fraction`` of ``n``, rounded half up, at least one when the fraction is > 0."""
    if fraction == 0.0:
        return 0
    return max(1, math.floor(fraction * n + 0.5))


def _random_splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded random permutation cut into test, val and train."""
    n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
    if n - n_test - n_val < 1:
        raise ValueError(f"n={n} frames are too few for val_fraction={val_fraction} and "
                         f"test_fraction={test_fraction}; expected enough for at least one "
                         f"training frame (val {n_val}, test {n_test})")
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return Splits(train=np.sort(perm[n_test + n_val:]), val=np.sort(perm[n_test:n_test + n_val]),
                  test=np.sort(perm[:n_test]),
                  source=f"random(seed={seed}, val={val_fraction}, test={test_fraction})")


def _official_splits(n: int, path: Path, val_fraction: float, seed: int) -> Splits:
    """NYU's ``splits.mat``: test = testNdxs, val = seeded part of trainNdxs, train = the rest."""
    mat = _load_mat(path)
    train_all = _indices(mat, path, "trainNdxs", n)
    test = _indices(mat, path, "testNdxs", n)
    overlap = np.intersect1d(train_all, test)
    if overlap.size:
        raise ValueError(f"{path}: 'trainNdxs' and 'testNdxs' share {overlap.size} frames "
                         f"(1-based, first {(overlap[:5] + 1).tolist()}); expected disjoint splits")
    n_val = _count(val_fraction, train_all.size)
    if train_all.size - n_val < 1:
        raise ValueError(f"{path}: 'trainNdxs' holds {train_all.size} frames, too few for "
                         f"val_fraction={val_fraction}; expected at least one left for training")
    perm = np.random.default_rng(seed).permutation(train_all.size)
    return Splits(train=np.sort(train_all[perm[n_val:]]), val=np.sort(train_all[perm[:n_val]]),
                  test=test, source=f"splits.mat:{path} (val={val_fraction}, seed={seed})")


def _load_mat(path: Path) -> dict:
    """Load a MAT v5 file, turning scipy's failures into a message about ``path``."""
    if not path.exists():
        raise FileNotFoundError(f"splits file {path} does not exist; expected NYU's splits.mat "
                                "with 'trainNdxs' and 'testNdxs'")
    try:
        return scipy.io.loadmat(path)
    except NotImplementedError as exc:
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; expected NYU's splits.mat "
                         "(MAT v5)") from exc
    except Exception as exc:  # scipy fails on foreign bytes with many exception types
        raise ValueError(f"{path} is not a readable MAT file ({exc}); expected NYU's splits.mat "
                         "with 'trainNdxs' and 'testNdxs'") from exc


def _indices(mat: dict, path: Path, key: str, n: int) -> np.ndarray:
    """Sorted 0-based indices from 1-based column vector ``key``, checked against ``n``."""
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: key {key!r} is missing (found {found}); expected NYU's "
                         "1-based 'trainNdxs' and 'testNdxs'")
    raw = np.asarray(mat[key])
    values = raw.ravel()
    if values.size == 0 or values.dtype.kind not in "iuf" or not np.all(values == np.round(values)):
        raise ValueError(f"{path}: key {key!r} holds {raw.dtype} values of shape {raw.shape}; "
                         "expected a non-empty vector of whole 1-based frame numbers")
    idx = values.astype(np.int64)
    if idx.min() < 1:
        raise ValueError(f"{path}: key {key!r} has index {idx.min()}; expected 1-based frame "
                         "numbers >= 1")
    if idx.max() > n:
        raise ValueError(f"{path}: key {key!r} has index {idx.max()} but the data holds n={n} "
                         "frames: split larger than the data")
    unique = np.unique(idx)
    if unique.size != idx.size:
        raise ValueError(f"{path}: key {key!r} lists {idx.size - unique.size} frames more than "
                         "once; expected each frame at most once")
    return unique - 1
