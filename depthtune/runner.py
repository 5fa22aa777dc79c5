"""A bare (non-Tune) training run on disk: config, per-epoch metrics, checkpoints, and the best
checkpoint's test-split evaluation, all under one run directory. A Net3's Net12 (a checkpoint path or a
registered model) is resolved and pinned here, so the training loop only ever sees modules."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from torch import nn

from depthtune.checkpoint_pipeline import Publish
from depthtune.data import NYUArrays, read_nyu
from depthtune.evaluation import evaluate_checkpoint
from depthtune.storage_check import check_room, checkpoint_bytes
from depthtune.tracking.lineage import resolve_base_model
from depthtune.train import TrainResult, train
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """Where a run's results are and what its best checkpoint scored on the test split."""

    run_dir: Path
    result: TrainResult
    test_metrics: dict[str, float]


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

    def record(metrics: dict[str, float], _model: nn.Module) -> Publish:
        def write(checkpoint_dir: Path | None) -> None:
            config_file = run_dir / "config.yaml"
            if not config_file.exists():
                config_file.write_text(yaml.safe_dump(config.as_dict(), sort_keys=False))
            with metrics_file.open("a") as out:
                out.write(json.dumps({**metrics, "checkpoint": str(checkpoint_dir) if checkpoint_dir else None}) + "\n")

        return write

    base = None
    if config.model == "net3":  # pinned: its checkpoints name this version, and a resume must refine the same
        base = resolve_base_model(config.net12_checkpoint, None, expected="net12")
        config = replace(config, net12_checkpoint=base.pinned)
    net12 = base.module() if base else None
    result = train(
        config, run_dir / "checkpoints", arrays=arrays, on_epoch=record, resume_from=resume_from, net12=net12
    )
    test_metrics = evaluate_checkpoint(result.best_checkpoint, config, arrays, base=base.module() if base else None)
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
