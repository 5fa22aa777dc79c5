"""Checkpoint I/O per epoch at a model's real size: the full checkpoint the bare training loop writes
(weights, SGD momentum, scheduler, history) next to what a tracked trial's report adds, Tune copying
the reported checkpoint directory into the sweep's storage (the prediction grids use the live model
and copy no weights). Both run in the training process between two epochs, so on a GPU the device
waits for them, and an NYU epoch there is about a second of compute (795 training images at the
700-900 images/s of section 5).

    python benchmarks/checkpoint_io.py [--models net12 net3 fcrn] [--profile paper] [--reps 3] [--dir DIR]

Each rep times one checkpointed epoch's steps with the real functions (``save_checkpoint`` as
``train`` calls it, ``pyarrow.fs.copy_files`` with the arguments Ray's ``persist_current_checkpoint``
passes for local storage); the medians are printed. ``train`` checkpoints at each new best, the last
epoch and every ``checkpoint_every``-th (``depthtune.train.checkpoint_due``); the other epochs write
nothing, bare or tracked. ``--dir`` should be on the disk the sweep's storage_path uses.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs
import torch

from depthtune.checkpoints import CHECKPOINT_FILE, save_checkpoint
from depthtune.models import MODEL_NAMES, build
from depthtune.profiles import model_config

RAY_COPY_CHUNK = 64 * 1024 * 1024  # ray.train._internal.storage._pyarrow_fs_copy_files' chunk size
SAVE, PERSIST = "bare: save the epoch's checkpoint", "tracked: Tune persists the directory"


def epoch_state(model_name: str, profile: str) -> dict:
    """A checkpoint's content as ``train`` saves it, with SGD momentum buffers filled."""
    cfg = model_config(profile, model_name)
    model = build(model_name, **cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5)
    return {
        "model_name": model_name,
        "model_config": cfg,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": 0,
        "rng": {"torch": torch.get_rng_state(), "cuda": None},
        "history": [],
        "best_epoch": 0,
    }


def timed(step: Callable[[], object]) -> float:
    """Wall seconds ``step`` takes."""
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def one_rep(state: dict, root: Path, rep: int) -> tuple[dict[str, float], int]:
    """Seconds of each per-epoch step, in the order a tracked epoch runs them, and the checkpoint's bytes."""
    epoch_dir, storage = root / f"epoch_{rep:03d}", root / "storage" / f"checkpoint_{rep:06d}"
    local = pyarrow.fs.LocalFileSystem()
    seconds = {SAVE: timed(lambda: save_checkpoint(epoch_dir, state))}
    storage.mkdir(parents=True)
    seconds[PERSIST] = timed(
        lambda: pyarrow.fs.copy_files(
            str(epoch_dir),
            str(storage),
            source_filesystem=local,
            destination_filesystem=local,
            chunk_size=RAY_COPY_CHUNK,
        )
    )
    size = (epoch_dir / CHECKPOINT_FILE).stat().st_size
    for path in (epoch_dir, storage):
        shutil.rmtree(path)
    return seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--profile", default="paper", choices=("paper", "cpu"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to write (default: the system's temp directory)")
    args = parser.parse_args()
    for model_name in args.models:
        state = epoch_state(model_name, args.profile)
        with tempfile.TemporaryDirectory(prefix="depthtune-ckpt-io-", dir=args.dir) as tmp:
            reps, sizes = zip(*(one_rep(state, Path(tmp), rep) for rep in range(args.reps)))
        size = sizes[0]
        medians = {step: statistics.median(rep[step] for rep in reps) for step in reps[0]}
        bare = medians[SAVE]
        params = sum(t.numel() for t in state["model"].values()) / 1e6
        print(
            f"\n{model_name} ({args.profile}): {params:.1f}M weights, checkpoint {size / 1e6:.0f} MB; "
            f"median seconds of {args.reps} reps"
        )
        for step, value in medians.items():
            print(f"  {step:58s} {value:7.3f} s")
        print(f"  a checkpointed epoch: tracked adds {medians[PERSIST] / bare:.2f}x the bare loop's own save")


if __name__ == "__main__":
    main()
