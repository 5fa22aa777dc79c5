"""Evaluating a depth model on one split: the split a training config defines, un-augmented batches
with full-resolution ground truth, and every depth metric under an evaluation protocol. The training
loop validates with it after each epoch; runs and sweeps test their best checkpoints with it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from depthtune.checkpoints import model_from_checkpoint
from depthtune.data import NYUArrays, NYUDepthV2, Splits, make_splits
from depthtune.losses import LossFn
from depthtune.metrics import EIGEN_PROTOCOL, EvalProtocol, MetricAccumulator, to_frame
from depthtune.models import to_depth
from depthtune.train_config import TrainConfig


def pick_device(name: str) -> torch.device:
    """'auto' -> first CUDA device when visible, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was requested but no CUDA device is visible")
    return device


def data_splits(config: TrainConfig, scenes: Sequence[str]) -> Splits:
    """The train/val/test split a config asks for, of frames whose scenes ``scenes`` names."""
    return make_splits(
        scenes,
        splits_file=config.splits_file,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.split_seed,
    )


def evaluation_loader(
    arrays: NYUArrays,
    splits: Splits,
    split: str,
    model_name: str,
    model_cfg: dict,
    batch_size: int,
    num_workers: int = 0,
) -> DataLoader:
    """Un-augmented batches of a split with full-resolution ground truth for the metrics."""
    dataset = NYUDepthV2(arrays, split, model_name, train=False, model_cfg=model_cfg, splits=splits, full_depth=True)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    loss_fn: LossFn | None = None,
    protocol: EvalProtocol = EIGEN_PROTOCOL,
    bf16: bool = True,
) -> dict[str, float]:
    """Loss (when given) and every depth metric of ``model`` over an evaluation loader's batches."""
    model.eval()
    accumulator = MetricAccumulator(protocol)
    loss_total, seen = 0.0, 0
    for image, target, mask, full_depth in loader:
        image, target, mask = image.to(device), target.to(device), mask.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            output = model(image)
        output = output.float()
        depth = to_depth(output, model.predicts)
        # finite log-depths can still overflow to infinite depths (which resampling turns into NaN)
        if not bool((torch.isfinite(output) & torch.isfinite(depth)).all()):
            raise FloatingPointError("the model's predictions on the evaluation set are not finite: it diverged")
        if loss_fn is not None:
            loss_total += float(loss_fn(output, target, mask)) * image.shape[0]
            seen += image.shape[0]
        accumulator.update(to_frame(depth, output_region=model.output_region).cpu(), full_depth)
    metrics = accumulator.compute()
    if loss_fn is not None:
        metrics["loss"] = loss_total / seen
    return metrics


def evaluate_model(
    model: nn.Module,
    config: TrainConfig,
    arrays: NYUArrays,
    split: str = "test",
    protocol: EvalProtocol = EIGEN_PROTOCOL,
) -> dict[str, float]:
    """Every depth metric of a model on one split of ``arrays`` (split as ``config`` defines it)."""
    device = pick_device(config.device)
    loader = evaluation_loader(
        arrays, data_splits(config, arrays.scenes), split, config.model, dict(model.config), config.eval_batch_size
    )
    return evaluate(model.to(device), loader, device, protocol=protocol, bf16=config.bf16)


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: TrainConfig,
    arrays: NYUArrays,
    split: str = "test",
    protocol: EvalProtocol = EIGEN_PROTOCOL,
    base: nn.Module | None = None,
) -> dict[str, float]:
    """Every depth metric of a checkpoint on one split of ``arrays`` under ``protocol``; ``base`` is the
    Net12 a Net3 checkpoint refines, which its caller resolved from ``config.net12_checkpoint``."""
    model = model_from_checkpoint(checkpoint, expected=config.model, base=base)
    return evaluate_model(model, config, arrays, split, protocol)
