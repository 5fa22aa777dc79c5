"""Which file a run reads: the user's NYU file when given, otherwise the synthetic twin, generated
once into a cache path and reused by every later run."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from depthtune.data.synth import generate_dataset

logger = logging.getLogger(__name__)


def resolve_data(
    data: str | None, *, synthetic_path: str, synthetic_frames: int, synthetic_seed: int = 0, workers: int = 1
) -> Path:
    """``data`` if given (it must exist), else ``synthetic_path``, generating it when missing."""
    if data:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(
                f"data file {path} does not exist; expected nyu_depth_v2_labeled.mat or a file in its layout"
            )
        return path
    path = Path(synthetic_path)
    if path.is_file():
        logger.info("no data given: using the synthetic dataset already at %s", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("no data given: generating %d synthetic frames (3 views of each room) into %s", synthetic_frames, path)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            logger.info("  synthetic frames %d/%d", done, total)

    generate_dataset(path, synthetic_frames, seed=synthetic_seed, workers=workers, progress=progress)
    logger.info("generated %s in %.0f s", path, time.perf_counter() - started)
    return path


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (the NYU file is 2.8 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
