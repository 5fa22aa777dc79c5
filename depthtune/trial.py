"""One Ray Tune trial: the shared training loop with a callback that logs each epoch to the
trial's own MLflow run and reports metrics and checkpoint to Tune. The run id travels in every
checkpoint (and the run carries the trial id), so a trial restored after a failure or a driver
restart continues the same run instead of opening a new one."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow import MlflowClient
from ray import tune

from depthtune.checkpoints import CHECKPOINT_FILE, model_from_checkpoint
from depthtune.data import NYUArrays
from depthtune.sweep_config import SweepConfig
from depthtune.tracking.lineage import BaseModel
from depthtune.tracking.previews import prediction_grid
from depthtune.tracking.runs import SWEEP_TAG, TRIAL_TAG, RunLogger, find_run
from depthtune.train import TrainConfig, data_splits, pick_device, train

logger = logging.getLogger(__name__)

RUN_ID_KEY = "mlflow_run_id"
TRIAL_STATE_FILE = "trial_state.json"


def _save_trial_state(checkpoint_dir: Path, run_id: str, metrics: dict[str, float]) -> None:
    """Record, inside the checkpoint, the run it belongs to and the epoch's metrics."""
    (checkpoint_dir / TRIAL_STATE_FILE).write_text(json.dumps({RUN_ID_KEY: run_id, "metrics": metrics}))


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, dict[str, Any]]:
    """Copy Tune's checkpoint of this trial (if restored) next to the trial; return it and its trial state."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as directory:
        local = workdir / "restored"
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(directory, local)
    state_file = local / TRIAL_STATE_FILE
    return local / CHECKPOINT_FILE, json.loads(state_file.read_text()) if state_file.is_file() else {}


def _process_tags(device: str) -> dict[str, str]:
    """Where this attempt of the trial runs (a restored trial may run elsewhere)."""
    return {
        "depthtune.host": socket.gethostname(),
        "depthtune.node_id": ray.get_runtime_context().get_node_id(),
        "depthtune.pid": str(os.getpid()),
        "depthtune.device": str(pick_device(device)),
    }


def _open_run(
    client: MlflowClient, run_id: str | None, tracking: dict[str, Any], params: dict[str, Any], config: TrainConfig
) -> tuple[RunLogger, bool]:
    """Continue the trial's run (known from its checkpoint, or found by its trial id) or start it;
    says whether it continued one."""
    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_id = run_id or find_run(client, tracking["experiment_id"], {TRIAL_TAG: trial_id, SWEEP_TAG: tracking["parent_run_id"]})
    if run_id:
        run = RunLogger.resume(client, run_id)
        run.set_tags(_process_tags(config.device))
        logger.info("trial %s continues MLflow run %s", trial_id, run_id)
        return run, True
    run = RunLogger.start(
        client,
        tracking["experiment_id"],
        name=context.get_trial_name(),
        parent_run_id=tracking["parent_run_id"],
        params={**params, **{k: v for k, v in config.as_dict().items() if k not in params}},
        tags={TRIAL_TAG: trial_id, SWEEP_TAG: tracking["parent_run_id"], **tracking["lineage"], **_process_tags(config.device)},
    )
    client.log_dict(run.run_id, config.as_dict(), "trial_config.json")
    return run, False


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    arrays: NYUArrays,
    tracking: dict[str, Any],
    train_extra: dict[str, Any],
    base_model: BaseModel | None = None,
) -> None:
    """Train one hyperparameter sample on ``arrays``, read zero-copy from the node's object store
    (as is ``base_model``, the Net12 a Net3 refines)."""
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    config = sweep.trial_config(params, **train_extra)
    workdir = Path(tempfile.mkdtemp(prefix=f"{tune.get_context().get_trial_id()}-"))
    try:
        _train_and_track(params, config, sweep, arrays, tracking, base_model, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _train_and_track(
    params: dict[str, Any],
    config: TrainConfig,
    sweep: SweepConfig,
    arrays: NYUArrays,
    tracking: dict[str, Any],
    base_model: BaseModel | None,
    workdir: Path,
) -> None:
    client = MlflowClient(tracking["uri"])
    resume_from, restored = _restored_checkpoint(workdir)
    run, continued = _open_run(client, restored.get(RUN_ID_KEY), tracking, params, config)
    if restored:
        done = int(restored["metrics"]["epoch"]) + 1
        run.set_tags({"depthtune.restored_after_epoch": done})
        if done >= config.epochs:  # it had finished when the driver died: hand Tune its last result again
            tune.report({**restored["metrics"], RUN_ID_KEY: run.run_id}, checkpoint=tune.Checkpoint.from_directory(resume_from.parent))
            return
    already_logged = run.logged_steps("val_loss") if continued else set()
    preview_frames = list(data_splits(config, len(arrays)).val[: sweep.preview_frames])

    def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
        epoch = int(metrics["epoch"])
        _save_trial_state(checkpoint_dir, run.run_id, metrics)
        if epoch not in already_logged:  # a retrained epoch repeats its values exactly (seeded training)
            run.log_epoch(metrics, step=epoch)
        if preview_frames and ((epoch + 1) % sweep.preview_every == 0 or epoch + 1 == config.epochs):
            model = model_from_checkpoint(checkpoint_dir)
            grid = prediction_grid(model, arrays, preview_frames, f"epoch {epoch + 1}", device=str(pick_device(config.device)))
            client.log_image(run.run_id, grid, artifact_file=f"predictions/epoch_{epoch + 1:03d}.png")
        tune.report({**metrics, RUN_ID_KEY: run.run_id}, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    net12 = base_model.module() if base_model is not None else None
    train(config, workdir / "checkpoints", arrays=arrays, on_epoch=report, resume_from=resume_from, net12=net12)
