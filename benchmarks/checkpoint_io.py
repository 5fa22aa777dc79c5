"""The checkpoint wait on the training thread, at a model's real size, before and after checkpoints
moved off it. Before: ``train`` saved the full checkpoint (weights, SGD momentum, scheduler, history)
and a tracked trial's report then had Tune copy the directory into the sweep's storage, both on the
training thread, so on a GPU the device waited for both (an NYU epoch there is about a second of
compute: 795 training images at the 700-900 images/s of section 5). After: ``train`` hands the
checkpoint to ``depthtune.checkpoint_pipeline.CheckpointPipeline``, which copies the state into host
buffers on the training thread and writes it, and runs the report that makes Tune's copy, in the
background.

    python benchmarks/checkpoint_io.py [--models net12 net3 fcrn] [--profile paper] [--reps 3] [--gap 1] [--dir DIR]

Each rep times one checkpointed epoch with the real functions (``save_checkpoint``; ``pyarrow.fs.copy_files``
with the arguments Ray's ``persist_current_checkpoint`` passes for local storage); the medians are
printed. Both ways get one checkpoint every ``--gap`` seconds (an epoch of training, in which the
pipeline's background works; a checkpoint still being written when the next is due makes the
training thread wait for it) and keep Tune's copies to the end, so both load the disk alike; the
pipeline's first checkpoint allocates the host buffers and is printed apart. ``train``
checkpoints at each new best, the last epoch and every ``checkpoint_every``-th
(``depthtune.train.checkpoint_due``); the other epochs write nothing. ``--dir`` should be on the disk
the sweep's storage_path uses."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.fs
import torch

from depthtune.checkpoint_pipeline import CheckpointPipeline, prune_checkpoints
from depthtune.checkpoints import BASE_KEY, CHECKPOINT_FILE, save_checkpoint, without_base
from depthtune.models import MODEL_NAMES, build
from depthtune.profiles import model_config

RAY_COPY_CHUNK = 64 * 1024 * 1024  # ray.train._internal.storage._pyarrow_fs_copy_files' chunk size
BEFORE = "before: training thread saves, then Tune copies into storage"
AFTER_FIRST = "after: training thread's wait, first checkpoint (allocates buffers)"
AFTER = "after: training thread's wait, later checkpoints"
BACKGROUND = "after: until written and copied, in the background"


def epoch_state(model_name: str, profile: str) -> dict:
    """A checkpoint's content as ``train`` saved it before Net3 checkpoints left out their Net12, with
    SGD momentum buffers filled."""
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


def slim(state: dict) -> dict:
    """The checkpoint ``train`` saves now: a Net3's without its frozen Net12, named by a reference instead."""
    if state["model_name"] != "net3":
        return state
    return {**state, "model": without_base(state["model"]), BASE_KEY: "models:/net12/1"}


def persist(directory: Path, storage: Path) -> None:
    """Tune's copy of a reported checkpoint directory into local storage, as ``persist_current_checkpoint`` makes it."""
    storage.mkdir(parents=True)
    local = pyarrow.fs.LocalFileSystem()
    pyarrow.fs.copy_files(
        str(directory), str(storage), source_filesystem=local, destination_filesystem=local, chunk_size=RAY_COPY_CHUNK
    )


def on_the_training_thread(state: dict, root: Path, reps: int, gap: float) -> tuple[list[float], int]:
    """Before: the save and Tune's copy both on the training thread, one checkpoint every ``gap``
    seconds, the older epoch directory pruned as ``train`` did and Tune's copies kept, as after; the
    training thread's wait at each and the checkpoint's bytes."""
    waits = []
    for rep in range(reps):
        directory = root / f"epoch_{rep:03d}"
        started = time.perf_counter()
        save_checkpoint(directory, state)
        persist(directory, root / "storage" / f"c_{rep:06d}")
        waits.append(time.perf_counter() - started)
        prune_checkpoints(root, keep=1, best_epoch=rep)
        time.sleep(gap)
    return waits, (directory / CHECKPOINT_FILE).stat().st_size


def in_the_background(state: dict, root: Path, reps: int, gap: float) -> tuple[list[float], list[float]]:
    """After: ``train``'s CheckpointPipeline with a publish step that makes Tune's copy, one checkpoint
    every ``gap`` seconds (an epoch's compute); the training thread's wait at each (the host copy, and
    the previous write if it is still running) and the seconds until each was written and copied."""
    pipeline, waits, started, finished = CheckpointPipeline(root, keep=1), [], [], {}
    for rep in range(reps):
        started.append(time.perf_counter())
        directory = pipeline.save(rep, state)
        pipeline.publish(
            directory,
            lambda d, rep=rep: (
                persist(d, root / "storage" / f"c_{rep:06d}"),
                finished.update({rep: time.perf_counter()}),
            ),
            best_epoch=rep,
        )
        waits.append(time.perf_counter() - started[-1])
        time.sleep(gap)
    pipeline.close()
    return waits, [finished[rep] - started[rep] for rep in range(reps)]


def measure(state: dict, reps: int, gap: float, where: Path | None) -> dict[str, list[float]]:
    """Seconds per checkpointed epoch of each way and the checkpoint's bytes (the old full state before,
    the slim one after); the pipeline's first save allocates its buffers."""
    with tempfile.TemporaryDirectory(prefix="depthtune-ckpt-io-", dir=where) as tmp:
        before, size = on_the_training_thread(state, Path(tmp), reps, gap)
    with tempfile.TemporaryDirectory(prefix="depthtune-ckpt-io-", dir=where) as tmp:
        waits, background = in_the_background(slim(state), Path(tmp), reps + 1, gap)
        size_after = sum(path.stat().st_size for path in Path(tmp).glob(f"epoch_*/{CHECKPOINT_FILE}"))
    return {
        "size": [size],
        "size_after": [size_after],
        "before": before,
        "after_first": waits[:1],
        "after": waits[1:],
        "background": background,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--profile", default="paper", choices=("paper", "cpu"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to write (default: the system's temp directory)")
    parser.add_argument(
        "--gap", type=float, default=1.0, help="seconds between checkpoints (default: an H100 NYU epoch)"
    )
    args = parser.parse_args()
    for model_name in args.models:
        state = epoch_state(model_name, args.profile)
        figures = measure(state, args.reps, args.gap, args.dir)
        median = {key: statistics.median(values) for key, values in figures.items()}
        print(
            f"\n{model_name} ({args.profile}): checkpoint {median['size'] / 1e6:.1f} MB before, "
            f"{median['size_after'] / 1e6:.1f} MB after; median seconds of {args.reps} reps, "
            f"a checkpoint every {args.gap:g} s"
        )
        print(f"  {BEFORE:66s} {median['before']:7.3f} s")
        print(f"  {AFTER_FIRST:66s} {median['after_first']:7.3f} s")
        print(f"  {AFTER:66s} {median['after']:7.3f} s")
        print(f"  {BACKGROUND:66s} {median['background']:7.3f} s")
        print(f"  the training thread waits {median['after'] / median['before']:.3f}x as long as before")


if __name__ == "__main__":
    main()
