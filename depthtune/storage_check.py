"""Before training starts: is there room to write what it will write? A read-only folder or a
nearly full disk is named up front, instead of surfacing after an epoch of training (or as Ray's
``EOFError: Ran out of input`` when a checkpoint was cut short)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import torch

from depthtune.models import build

MB = 1e6


def checkpoint_bytes(model: str, model_cfg: dict) -> int:
    """About what one training checkpoint of ``model`` takes: the trained weights in float32 and
    SGD's momentum buffers for them (a Net3's checkpoint stores its frozen Net12 as a reference, not
    weights). The model is built on the meta device: no memory, no time."""
    with torch.device("meta"):
        extra = {"net12": build("net12", width=model_cfg.get("width", 1.0))} if model == "net3" else {}
        parameters = list(build(model, **model_cfg, **extra).parameters())
    return 8 * sum(p.numel() for p in parameters if p.requires_grad)


def check_room(path: str | os.PathLike, need_bytes: int, what: str) -> None:
    """``path`` (or the nearest folder above it that exists) must be a writable folder with at least
    ``need_bytes`` free; otherwise a PermissionError or an OSError(ENOSPC) naming both."""
    path = Path(path).resolve()
    folder = path
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{what} {path}: {folder} is not writable")
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(
            errno.ENOSPC,
            f"{what} {path}: the disk is (nearly) full, {free / MB:.0f} MB free on {folder}, "
            f"about {need_bytes / MB:.0f} MB needed",
        )
