"""One Ray Tune trial: the shared training loop with a callback that logs each epoch to the
trial's own MLflow run and reports metrics and checkpoint to Tune. The run id travels in every
checkpoint, so a trial restored after a failure continues the same run."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow import MlflowClient
from ray import tune

from depthtune.checkpoints import CHECKPOINT_FILE
from depthtune.data import NYUArrays
from depthtune.sweep_config import SweepConfig
from depthtune.tracking.runs import RunLogger, load_run_id, save_run_id
from depthtune.train import pick_device, train

logger = logging.getLogger(__name__)

RUN_ID_KEY = "mlflow_run_id"


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, str | None]:
    """Copy Tune's checkpoint of this trial (if restored) next to the trial; return it and its run id."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as directory:
        run_id = load_run_id(directory)
        local = workdir / "restored"
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(directory, local)
    return local / CHECKPOINT_FILE, run_id


def run_trial(
    params: dict[str, Any], *, sweep: SweepConfig, arrays: NYUArrays, tracking: dict[str, str], train_extra: dict[str, Any]
) -> None:
    """Train one hyperparameter sample on ``arrays``, read zero-copy from the node's object store."""
    context = tune.get_context()
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    train_config = sweep.trial_config(params, **train_extra)
    client = MlflowClient(tracking["uri"])
    workdir = Path(tempfile.mkdtemp(prefix=f"{context.get_trial_id()}-"))
    resume_from, run_id = _restored_checkpoint(workdir)
    if run_id:
        run = RunLogger.resume(client, run_id)
        logger.info("trial %s continues MLflow run %s", context.get_trial_id(), run_id)
    else:
        run = RunLogger.start(
            client,
            tracking["experiment_id"],
            name=context.get_trial_name(),
            parent_run_id=tracking["parent_run_id"],
            params={**params, **{k: v for k, v in train_config.as_dict().items() if k not in params}},
            tags={
                "depthtune.trial_id": context.get_trial_id(),
                "depthtune.sweep_run_id": tracking["parent_run_id"],
                "depthtune.host": socket.gethostname(),
                "depthtune.node_id": ray.get_runtime_context().get_node_id(),
                "depthtune.device": str(pick_device(train_config.device)),
            },
        )
        client.log_dict(run.run_id, train_config.as_dict(), "trial_config.json")

    def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
        save_run_id(checkpoint_dir, run.run_id)
        run.log_epoch(metrics, step=int(metrics["epoch"]))
        tune.report({**metrics, RUN_ID_KEY: run.run_id}, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    try:
        train(train_config, workdir / "checkpoints", arrays=arrays, on_epoch=report, resume_from=resume_from)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
