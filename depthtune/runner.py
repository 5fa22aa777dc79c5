"""A bare (non-Tune) training run on disk: config, per-epoch metrics, checkpoints, and the best
checkpoint's test-split evaluation, all under one run directory."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from depthtune.checkpoints import model_from_checkpoint
from depthtune.data import NYUArrays, read_nyu
from depthtune.metrics import EIGEN_PROTOCOL, EvalProtocol
from depthtune.storage_check import check_room, checkpoint_bytes
from depthtune.train import TrainConfig, TrainResult, data_splits, evaluate, evaluation_loader, pick_device, train

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """Where a run's results are and what its best checkpoint scored on the test split."""

    run_dir: Path
    result: TrainResult
    test_metrics: dict[str, float]


def evaluate_checkpoint(
    checkpoint: str | Path,
    config: TrainConfig,
    arrays: NYUArrays,
    split: str = "test",
    protocol: EvalProtocol = EIGEN_PROTOCOL,
) -> dict[str, float]:
    """Every depth metric of a checkpoint on one split of ``arrays`` under ``protocol``."""
    return evaluate_model(model_from_checkpoint(checkpoint, expected=config.model), config, arrays, split, protocol)


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


def run_training(
    config: TrainConfig, run_dir: str | Path, *, arrays: NYUArrays | None = None, resume_from: str | Path | None = None
) -> RunOutcome:
    """Train, logging each epoch to ``run_dir/metrics.jsonl``, then test the best checkpoint.

    The run directory appears with the first finished epoch, so bad input leaves nothing behind;
    a folder that cannot hold the checkpoints is an error before training starts.
    """
    config.validate()
    if arrays is None:
        arrays = read_nyu(config.data)
    run_dir = Path(run_dir)
    check_room(
        run_dir, checkpoint_bytes(config.model, config.model_cfg) * (config.keep_checkpoints + 2), "run directory"
    )
    metrics_file = run_dir / "metrics.jsonl"

    def record(metrics: dict[str, float], checkpoint_dir: Path | None, _model: nn.Module) -> None:
        config_file = run_dir / "config.yaml"
        if not config_file.exists():
            config_file.write_text(yaml.safe_dump(config.as_dict(), sort_keys=False))
        with metrics_file.open("a") as out:
            out.write(json.dumps({**metrics, "checkpoint": str(checkpoint_dir) if checkpoint_dir else None}) + "\n")

    result = train(config, run_dir / "checkpoints", arrays=arrays, on_epoch=record, resume_from=resume_from)
    test_metrics = evaluate_checkpoint(result.best_checkpoint, config, arrays)
    (run_dir / "test_metrics.json").write_text(
        json.dumps({"checkpoint": str(result.best_checkpoint), "epoch": result.best_epoch, **test_metrics}, indent=2)
    )
    logger.info(
        "%s: best epoch %d, test abs_rel %.4f -> %s",
        config.model,
        result.best_epoch + 1,
        test_metrics["abs_rel"],
        run_dir,
    )
    return RunOutcome(run_dir=run_dir, result=result, test_metrics=test_metrics)
