"""Writer of files in the NYU Depth v2 labelled-file layout (MATLAB v7.3 = HDF5 with a 512-byte
MATLAB header, column-major arrays, cell arrays of object references), used by the synthetic twin
and by tests that need files with chosen contents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

FRAME_SHAPE = (480, 640)
CLASS_NAMES = ("floor", "wall", "ceiling", "cabinet", "table", "bed", "box", "picture", "ball", "column")
_USERBLOCK = 512


@dataclass(frozen=True)
class Rendered:
    """One rendered scene with everything the labelled file stores per frame."""

    image: np.ndarray  # (480, 640, 3) uint8
    depth: np.ndarray  # (480, 640) float32 metres, 0 = invalid
    raw_depth: np.ndarray  # (480, 640) float32 metres, more holes and Kinect-like noise
    labels: np.ndarray  # (480, 640) uint16 class ids, 1-based into CLASS_NAMES
    instances: np.ndarray  # (480, 640) uint16 instance number within the class


def _matlab_header() -> bytes:
    """512-byte userblock with the MATLAB v7.3 text header, as MATLAB writes it."""
    text = (
        f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {datetime.now():%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 ."
    ).encode("ascii")
    head = text.ljust(116, b" ") + b" " * 8 + b"\x00\x02" + b"IM"
    return head.ljust(_USERBLOCK, b"\x00")


def _char_dataset(group: h5py.Group, name: str, text: str) -> h5py.Dataset:
    """A MATLAB char array (uint16 code units, column-major) as the real file stores strings."""
    codes = np.frombuffer(text.encode("utf-16-le"), np.uint16).reshape(-1, 1)
    ds = group.create_dataset(name, data=codes)
    ds.attrs["MATLAB_class"] = np.bytes_("char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds


def _ref_name(k: int) -> str:
    """MATLAB-style short name for the k-th member of ``#refs#`` (a, b, ..., ba, bb, ...)."""
    letters = ""
    while True:
        letters = chr(ord("a") + k % 26) + letters
        k //= 26
        if k == 0:
            return letters


class NYUFileWriter:
    """Writes a labelled-file twin frame by frame to a temporary file, renamed when complete."""

    def __init__(self, path: Path, n: int, names: Sequence[str], scenes: Sequence[str]):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.h5 = h5py.File(self.tmp, "w", userblock_size=_USERBLOCK)
        h, w = FRAME_SHAPE
        plan = [
            ("images", (n, 3, w, h), np.uint8, "uint8"),
            ("depths", (n, w, h), np.float32, "single"),
            ("rawDepths", (n, w, h), np.float32, "single"),
            ("labels", (n, w, h), np.uint16, "uint16"),
            ("instances", (n, w, h), np.uint16, "uint16"),
        ]
        self.ds = {}
        for key, shape, dtype, mclass in plan:
            ds = self.h5.create_dataset(
                key,
                shape=shape,
                dtype=dtype,
                chunks=(1, *shape[1:]),
                compression="gzip",
                compression_opts=1,
                shuffle=True,
            )
            ds.attrs["MATLAB_class"] = np.bytes_(mclass)
            self.ds[key] = ds
        refs = self.h5.create_group("#refs#")
        counter = iter(range(len(names) + len(scenes)))
        for key, texts in (("names", names), ("scenes", scenes)):
            cell = self.h5.create_dataset(key, shape=(1, len(texts)), dtype=h5py.ref_dtype)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            for j, text in enumerate(texts):
                cell[0, j] = _char_dataset(refs, _ref_name(next(counter)), text).ref

    def put(self, i: int, scene: Rendered) -> None:
        """Store frame ``i`` in MATLAB's column-major layout."""
        self.ds["images"][i] = scene.image.transpose(2, 1, 0)
        self.ds["depths"][i] = scene.depth.T
        self.ds["rawDepths"][i] = scene.raw_depth.T
        self.ds["labels"][i] = scene.labels.T
        self.ds["instances"][i] = scene.instances.T

    def __enter__(self) -> NYUFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.h5.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "r+b") as fh:
            fh.write(_matlab_header())
        os.replace(self.tmp, self.path)


def write_nyu_file(
    path: str | os.PathLike,
    images: np.ndarray,
    depths: np.ndarray,
    *,
    raw_depths: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    instances: np.ndarray | None = None,
    names: Sequence[str] = CLASS_NAMES,
    scenes: Sequence[str] | None = None,
) -> Path:
    """Write (N, 480, 640, 3) images and (N, 480, 640) depths in the labelled file's layout."""
    path = Path(path)
    images, depths = np.asarray(images), np.asarray(depths, np.float32)
    n = images.shape[0]
    if images.shape[1:] != (*FRAME_SHAPE, 3) or images.dtype != np.uint8:
        raise ValueError(
            f"write_nyu_file({path}): images are {images.dtype} {images.shape}; "
            f"expected uint8 (N, {FRAME_SHAPE[0]}, {FRAME_SHAPE[1]}, 3)"
        )
    if depths.shape != (n, *FRAME_SHAPE):
        raise ValueError(
            f"write_nyu_file({path}): depths have shape {depths.shape}; expected "
            f"({n}, {FRAME_SHAPE[0]}, {FRAME_SHAPE[1]}) to match the images"
        )
    zeros = np.zeros(depths.shape, np.uint16)
    raw = depths if raw_depths is None else np.asarray(raw_depths, np.float32)
    lab = zeros if labels is None else np.asarray(labels, np.uint16)
    ins = zeros if instances is None else np.asarray(instances, np.uint16)
    scenes = [f"scene_{i:05d}" for i in range(n)] if scenes is None else scenes
    with NYUFileWriter(path, n, names, scenes) as writer:
        for i in range(n):
            writer.put(i, Rendered(images[i], depths[i], raw[i], lab[i], ins[i]))
    return path
