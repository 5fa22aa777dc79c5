"""Reader of the official NYU Depth v2 labelled file (``nyu_depth_v2_labeled.mat``).

The file is MATLAB v7.3, i.e. HDF5 behind a 512-byte MATLAB header. MATLAB stores arrays
column-major, so h5py sees ``images`` as (N, 3, 640, 480) uint8 and ``depths`` as
(N, 640, 480) float metres. Those two datasets are read, and the ``scenes`` cell array (each
frame's scene name, e.g. ``kitchen_0004``, what splits keep on one side); ``rawDepths``,
``labels``, ``instances``, ``names``, ``#subsystem#`` and the rest are left untouched.

How it reads: the output arrays are allocated once in their final (N, 480, 640, ...) layout,
then each dataset is read in blocks of ``block_size`` frames into one reusable buffer and the
transposed block is copied into its slice of the output. Peak memory is the output plus one
block, never a second full-size transposed copy (the real file's images and depths take about
3.1 GB in memory).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

log = logging.getLogger(__name__)

FRAME_HW = (480, 640)
_H5_IMAGES_SHAPE = "(N, 3, 640, 480)"
_H5_DEPTHS_SHAPE = "(N, 640, 480)"


class NYUFormatError(ValueError):
    """The file is not a usable NYU v2 labelled file; the message names file, key and value."""


@dataclass(frozen=True)
class NYUArrays:
    """Images and depths of a labelled file, in row-major (N, 480, 640, ...) layout, and the
    scene each frame was taken in."""

    images: np.ndarray
    depths: np.ndarray
    source: str
    scenes: tuple[str, ...]

    def __len__(self) -> int:
        """Number of RGB-D frames."""
        return int(self.images.shape[0])


def read_nyu(path: str | os.PathLike, *, block_size: int = 32) -> NYUArrays:
    """Read ``images`` and ``depths`` of an NYU v2 labelled .mat file in one blockwise pass."""
    path = Path(path)
    if block_size < 1:
        raise ValueError(f"read_nyu: block_size={block_size}; expected a positive number of frames")
    start = time.perf_counter()
    with _open(path) as h5:
        images_ds = _dataset(h5, path, "images")
        depths_ds = _dataset(h5, path, "depths")
        _check_layout(path, images_ds, depths_ds)
        n = images_ds.shape[0]
        images = np.empty((n, *FRAME_HW, 3), dtype=np.uint8)
        depths = np.empty((n, *FRAME_HW), dtype=np.float32)
        _read_blocks(path, images_ds, images, (0, 3, 2, 1), block_size)
        _read_blocks(path, depths_ds, depths, (0, 2, 1), block_size)
        scenes = read_scenes(h5, path, n)
    elapsed = time.perf_counter() - start
    log.info(
        "read %d NYU frames of %d scenes from %s in %.1f s (images %s uint8, depths %s float32)",
        n,
        len(set(scenes)),
        path,
        elapsed,
        images.shape,
        depths.shape,
    )
    return NYUArrays(images=images, depths=depths, source=str(path), scenes=scenes)


def read_nyu_scenes(path: str | os.PathLike) -> tuple[str, ...]:
    """Only the scene name of every frame of a labelled file (no images or depths are read)."""
    path = Path(path)
    with _open(path) as h5:
        images_ds = _dataset(h5, path, "images")
        _check_layout(path, images_ds, _dataset(h5, path, "depths"))
        return read_scenes(h5, path, images_ds.shape[0])


def _open(path: Path) -> h5py.File:
    """The labelled file opened for reading, or an error saying why it cannot be."""
    _check_is_hdf5(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise NYUFormatError(
            f"{path}: HDF5 file could not be opened ({exc}); expected a readable MATLAB v7.3 labelled file"
        ) from exc


def read_scenes(h5: h5py.File, path: Path, n: int) -> tuple[str, ...]:
    """The ``scenes`` cell array: one MATLAB char array per frame, referenced from ``#refs#``. A file
    without it gets one scene per frame, with a warning: its splits cannot keep rooms apart."""
    if "scenes" not in h5:
        log.warning(
            "%s has no 'scenes' cell array: every frame is taken as its own scene, so validation "
            "and test frames may come from rooms the model trained on",
            path,
        )
        return tuple(f"frame_{i:05d}" for i in range(n))
    cell = h5["scenes"]
    if not isinstance(cell, h5py.Dataset) or cell.dtype != h5py.ref_dtype or cell.size != n:
        raise NYUFormatError(
            f"{path}: key 'scenes' is {getattr(cell, 'dtype', type(cell).__name__)} of shape "
            f"{getattr(cell, 'shape', None)}; expected a cell array of {n} scene names, one per frame"
        )
    try:
        return tuple("".join(map(chr, np.asarray(h5[ref]).ravel())) for ref in cell[()].ravel())
    except (OSError, ValueError, TypeError) as exc:
        raise NYUFormatError(f"{path}: key 'scenes' could not be read as scene names ({exc})") from exc


def _check_is_hdf5(path: Path) -> None:
    """Fail early, with the reason, when the path is missing, a folder, or not HDF5."""
    if not path.exists():
        raise FileNotFoundError(
            f"NYU file {path} does not exist; expected the labelled file nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5)"
        )
    if path.is_dir():
        raise NYUFormatError(
            f"{path} is a directory; expected the labelled file nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5)"
        )
    if h5py.is_hdf5(path):
        return
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB"):
        text = head[:116].split(b",")[0].decode("ascii", "replace").strip()
        raise NYUFormatError(
            f"{path} is an older MAT-file ({text!r}), not MATLAB v7.3 (HDF5); "
            "expected the official labelled file, or re-save it in MATLAB "
            "with save(..., '-v7.3')"
        )
    raise NYUFormatError(
        f"{path} is not an HDF5 file (first bytes {head[:16]!r}); expected the "
        "labelled file nyu_depth_v2_labeled.mat (MATLAB v7.3 / HDF5)"
    )


def _dataset(h5: h5py.File, path: Path, key: str) -> h5py.Dataset:
    """Return dataset ``key`` or fail naming the keys that are there."""
    if key not in h5:
        found = sorted(h5.keys())
        raise NYUFormatError(
            f"{path}: key {key!r} is missing (found keys {found[:12]}); expected {key!r} as in nyu_depth_v2_labeled.mat"
        )
    obj = h5[key]
    if not isinstance(obj, h5py.Dataset):
        raise NYUFormatError(f"{path}: key {key!r} is a {type(obj).__name__}, expected a dataset")
    return obj


def _check_layout(path: Path, images: h5py.Dataset, depths: h5py.Dataset) -> None:
    """Check shapes, dtypes and frame counts as h5py sees them in the real file."""
    want_frame = tuple(reversed(FRAME_HW))
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != want_frame:
        raise NYUFormatError(
            f"{path}: key 'images' has shape {images.shape}; expected "
            f"{_H5_IMAGES_SHAPE} as h5py sees NYU's 480x640 RGB frames"
        )
    if depths.ndim != 3 or depths.shape[1:] != want_frame:
        raise NYUFormatError(
            f"{path}: key 'depths' has shape {depths.shape}; expected "
            f"{_H5_DEPTHS_SHAPE} as h5py sees NYU's 480x640 depth maps"
        )
    if images.dtype != np.uint8:
        raise NYUFormatError(f"{path}: key 'images' has dtype {images.dtype}; expected uint8")
    if depths.dtype.kind != "f":
        raise NYUFormatError(f"{path}: key 'depths' has dtype {depths.dtype}; expected a float type (metres)")
    if images.shape[0] != depths.shape[0]:
        raise NYUFormatError(
            f"{path}: key 'images' holds {images.shape[0]} frames but 'depths' "
            f"holds {depths.shape[0]}; expected the same number"
        )
    if images.shape[0] == 0:
        raise NYUFormatError(f"{path}: keys 'images' and 'depths' hold 0 frames; expected at least 1")


def _read_blocks(path: Path, ds: h5py.Dataset, out: np.ndarray, axes: tuple[int, ...], block_size: int) -> None:
    """Fill ``out`` from ``ds`` block by block, transposing each block into place."""
    n = ds.shape[0]
    buf = np.empty((min(block_size, n), *ds.shape[1:]), dtype=ds.dtype)
    for lo in range(0, n, block_size):
        hi = min(lo + block_size, n)
        try:
            ds.read_direct(buf, source_sel=np.s_[lo:hi], dest_sel=np.s_[: hi - lo])
        except OSError as exc:
            raise NYUFormatError(
                f"{path}: key {ds.name.lstrip('/')!r} frames {lo}:{hi} could not "
                f"be read ({exc}); the file may be truncated or corrupt"
            ) from exc
        out[lo:hi] = buf[: hi - lo].transpose(axes)
