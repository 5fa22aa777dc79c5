"""An NYU-sized labelled file for benchmarks, made quickly: a few synthetic scenes rendered once and
their compressed chunks repeated to the wanted frame count (rendering 1449 scenes takes half an hour
on two cores; the loader's per-frame work is the same either way).

    python benchmarks/nyu_sized.py [--frames 1449] [--scenes 32] [--workers 2] [--dir data]   # prints the file's path
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import h5py

from depthtune.data import generate_dataset
from depthtune.data.nyu_writer import CLASS_NAMES, NYUFileWriter

log = logging.getLogger(__name__)


def nyu_sized_file(frames: int, scenes: int, workers: int = 2, directory: Path = Path("data")) -> Path:
    """The cached file ``directory/bench_nyu_sized_<frames>_from_<scenes>.mat`` (made on first use)."""
    path = (directory / f"bench_nyu_sized_{frames}_from_{scenes}.mat").resolve()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("making %s once: %d synthetic scenes tiled to %d frames", path, scenes, frames)
    with tempfile.TemporaryDirectory() as tmp:
        tiles = generate_dataset(Path(tmp) / "tiles.mat", scenes, seed=2, workers=workers)
        names = [f"synth_s2_{i % scenes:05d}_copy{i // scenes}" for i in range(frames)]
        with h5py.File(tiles, "r") as source, NYUFileWriter(path, frames, CLASS_NAMES, names) as writer:
            for key, target in writer.ds.items():
                copy_chunks(source[key], target, scenes)
    log.info("made %s (%.2f GB on disk) in %.0f s", path, path.stat().st_size / 1e9, time.perf_counter() - started)
    return path


def copy_chunks(source: h5py.Dataset, target: h5py.Dataset, scenes: int) -> None:
    """Fill every frame of ``target`` with the compressed chunk of frame ``i % scenes`` of ``source``
    (both written by NYUFileWriter: one chunk per frame, same filters), without recompressing."""
    if source.chunks != target.chunks or source.compression != target.compression:
        raise ValueError(
            f"{source.name}: tile chunks {source.chunks} ({source.compression}) differ from the "
            f"target's {target.chunks} ({target.compression})"
        )
    rest = (0,) * (target.ndim - 1)
    tiles = [source.id.read_direct_chunk((j, *rest)) for j in range(scenes)]
    for i in range(target.shape[0]):
        mask, chunk = tiles[i % scenes]
        target.id.write_direct_chunk((i, *rest), chunk, mask)


def main() -> None:
    """Make (or find) the file and print its path, for shell scripts that train on it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1449, help="frames of the file (NYU's labelled file has 1449)")
    parser.add_argument("--scenes", type=int, default=32, help="synthetic scenes rendered and tiled to --frames")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the scenes")
    parser.add_argument("--dir", type=Path, default=Path("data"), help="where the file is kept")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    print(nyu_sized_file(args.frames, args.scenes, workers=args.workers, directory=args.dir))


if __name__ == "__main__":
    main()
