"""The training loop on a GPU: images/s of ``depthtune.train.train`` itself (an NYU-sized synthetic file,
augmentation in ``num_workers`` DataLoader processes, bf16 autocast on CUDA, evaluation and a
checkpoint every epoch, as a trial runs it) next to the images/s of the training step alone on a batch
already on the device (gpu_throughput's bf16 eager setting in the same layout: channels_last, the CUDA
default, or contiguous with ``--contiguous``), for Net12 and FCRN in the paper configuration. loop/step
near 1 means the input pipeline keeps up with the GPU; well below 1 means the GPU waits for data.

Each worker count runs once per ``--device-data-share``: 0 is the CPU DataLoader always; a share > 0
lets the loop keep the training split on the GPU and augment it there when the split needs at most that
share of the GPU's memory (``TrainConfig.device_data_share``; on CPU the loader is used whatever the
share). The table gives the split's raw size against the GPU's memory and each loop's peak GPU memory,
which shows whether the split went to the GPU.

    python benchmarks/gpu_loop.py [--frames 800] [--scenes 48] [--workers 3 8] [--device-data-share 0 0.25]
                                  [--models net12 fcrn] [--contiguous] [--data-dir DIR] [--json PATH]
    python benchmarks/gpu_loop.py --device cpu --profile cpu --frames 64 --scenes 4 --workers 0 --epochs 2  # code path

Without CUDA it measures nothing and exits 0 (``--device cpu`` runs the same code path).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch
from gpu_throughput import Counts, Setting, count_flops, device_name, run_guarded
from nyu_sized import nyu_sized_file

from depthtune.data import NYUArrays, read_nyu
from depthtune.evaluation import data_splits
from depthtune.profiles import model_config
from depthtune.train import train
from depthtune.train_config import TrainConfig

logger = logging.getLogger("gpu_loop")


def loop_rates(
    model: str,
    profile: str,
    data: Path,
    arrays: NYUArrays,
    workers: int,
    share: float,
    epochs: int,
    batch: int,
    lr: float,
    contiguous: bool,
    device: str,
    workdir: Path,
) -> list[float]:
    """Training images/s of each epoch of ``train()`` (the loader's waits included, evaluation not)."""
    values = {
        "model": model,
        "model_cfg": model_config(profile, model),
        "data": str(data),
        "epochs": epochs,
        "batch_size": batch,
        "eval_batch_size": batch,
        "lr": lr,
        "num_workers": workers,
        "device_data_share": share,
        "device": device,
        "select_metric": "val_loss",
        "keep_checkpoints": 1,
    }
    if contiguous and "channels_last" in {f.name for f in fields(TrainConfig)}:  # older versions: always contiguous
        values["channels_last"] = False
    config = TrainConfig.from_dict(values)
    result = train(config, workdir / f"{model}_nw{workers}_share{share:g}", arrays=arrays)
    return [epoch["images_per_second"] for epoch in result.history]


def step_rate(model: str, profile: str, device: torch.device, batch: int, contiguous: bool) -> float | None:
    """Images/s of the training step alone (bf16 eager, the loop's layout), as gpu_throughput measures it."""
    cfg = model_config(profile, model)
    counts = Counts(batch=batch, warmup=5, windows=5, iters=10)
    setting = Setting(bf16=True, channels_last=not contiguous and device.type == "cuda", compiled=False)
    result = run_guarded(model, cfg, setting, device, counts, count_flops(model, cfg, batch), "inductor")
    if result.error:
        logger.warning("%s step alone: %s", model, result.error)
    return result.train_images_per_s


def split_gib(arrays: NYUArrays) -> float:
    """GiB of the training split's raw frames (uint8 RGB and float32 depth) under TrainConfig's default split."""
    train_frames = len(data_splits(TrainConfig(), arrays.scenes).train)
    per_frame = arrays.images[0].nbytes + arrays.depths[0].nbytes
    return train_frames * per_frame / 2**30


def peak_gib(device: torch.device) -> float | None:
    """The device's peak allocated memory since its last reset, in GiB (None on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def fmt(value: float | None, spec: str) -> str:
    """Format a figure, or '-' when absent."""
    return "-" if value is None else format(value, spec)


def main() -> int:
    """Measure the step alone and the loop at each worker count and data share, print the table,
    optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", nargs="+", choices=("net12", "fcrn"), default=["net12", "fcrn"])
    parser.add_argument("--frames", type=int, default=800, help="frames of the synthetic file (80%% train)")
    parser.add_argument("--scenes", type=int, default=48, help="rendered scenes, tiled to --frames")
    parser.add_argument("--workers", type=int, nargs="+", default=[3, 8], help="DataLoader num_workers to run")
    parser.add_argument(
        "--device-data-share",
        type=float,
        nargs="+",
        default=[0.0, 0.25],
        help="TrainConfig.device_data_share values to run at each worker count (0: always the CPU loader)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop run; the first is not counted")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--lr",
        type=float,
        default=0.001,
        help="learning rate (speed does not depend on it; FCRN at 0.01 can diverge in epoch 1)",
    )
    parser.add_argument("--profile", choices=("paper", "cpu"), default="paper", help="model sizes (cpu: a quick check)")
    parser.add_argument("--contiguous", action="store_true", help="train in contiguous layout (channels_last: False)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the synthetic file here for later runs (default: a temp dir)"
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_loop: no CUDA device was found, so nothing was measured")
        return 0
    if args.epochs < 2:
        parser.error(f"--epochs {args.epochs}: expected >= 2 (the first epoch is warm-up)")
    device = torch.device(args.device)
    dev = device_name(device)
    cores = len(os.sched_getaffinity(0))
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="depthtune-gpu-loop-") as tmp:
        data = nyu_sized_file(args.frames, args.scenes, workers=min(cores, 16), directory=args.data_dir or Path(tmp))
        arrays = read_nyu(data)
        split = split_gib(arrays)
        rows = []
        for model in args.models:
            step = step_rate(model, args.profile, device, args.batch, args.contiguous)
            for workers in args.workers:
                for share in args.device_data_share:
                    started = time.perf_counter()
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    rates = loop_rates(
                        model,
                        args.profile,
                        data,
                        arrays,
                        workers,
                        share,
                        args.epochs,
                        args.batch,
                        args.lr,
                        args.contiguous,
                        args.device,
                        Path(tmp),
                    )
                    loop = statistics.median(rates[1:])
                    rows.append(
                        {
                            "model": model,
                            "num_workers": workers,
                            "device_data_share": share,
                            "step_images_per_s": step,
                            "loop_images_per_s": loop,
                            "epoch_images_per_s": rates,
                            "loop_over_step": loop / step if step else None,
                            "loop_peak_gpu_gib": peak_gib(device),
                        }
                    )
                    logger.info(
                        "%s num_workers %d, device_data_share %g: loop %.0f img/s, step alone %s img/s (%.0f s)",
                        model,
                        workers,
                        share,
                        loop,
                        fmt(step, ".0f"),
                        time.perf_counter() - started,
                    )
    print(
        f"\ngpu_loop [{dev}, {cores} CPU cores] {args.profile} config, batch {args.batch}, {args.frames} frames, "
        f"{'contiguous' if args.contiguous else 'channels_last on CUDA'} "
        f"({args.scenes} scenes tiled), median of epochs 2..{args.epochs}; training split {split:.2f} GiB raw"
        + (f" = {split / gpu_gib:.1%} of the GPU's {gpu_gib:.0f} GiB\n" if gpu_gib else " (CPU: always the loader)\n")
    )
    print(
        "| model | num_workers | device_data_share | step alone img/s | loop img/s | loop / step | loop peak GPU GiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['num_workers']} | {row['device_data_share']:g} | "
            f"{fmt(row['step_images_per_s'], '.0f')} | {row['loop_images_per_s']:.0f} | "
            f"{fmt(row['loop_over_step'], '.2f')} | {fmt(row['loop_peak_gpu_gib'], '.1f')} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "device": dev,
                    "cpu_cores": cores,
                    "torch": torch.__version__,
                    "frames": args.frames,
                    "batch": args.batch,
                    "train_split_gib": split,
                    "gpu_memory_gib": gpu_gib,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"\ngpu_loop [{dev}] figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
