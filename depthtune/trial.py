"""One Ray Tune trial: the shared training loop with a callback that logs each epoch to the
trial's own MLflow run and reports metrics and checkpoint to Tune. The run id travels in every
checkpoint (and the run carries the trial id), so a trial restored after a failure or a driver
restart continues the same run instead of opening a new one."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow import MlflowClient
from ray import tune
from torch import nn

from depthtune.checkpoints import CHECKPOINT_FILE
from depthtune.data import NYUArrays
from depthtune.paper_settings import BASELINE_TAG, PAPER
from depthtune.predictor import DepthPredictor
from depthtune.searcher import stopping_epochs
from depthtune.sweep_config import SweepConfig
from depthtune.tracking.lineage import BaseModel
from depthtune.tracking.previews import log_grid, prediction_grid
from depthtune.tracking.runs import DIVERGED_TAG, RUN_ID_KEY, SWEEP_TAG, TIMESTAMP_KEY, TRIAL_TAG, RunLogger, find_run
from depthtune.tracking.writer import BackgroundWriter
from depthtune.train import TrainConfig, data_splits, pick_device, train

logger = logging.getLogger(__name__)

TRIAL_STATE_FILE = "trial_state.json"
WORKDIR_PREFIX = "depthtune-trial-"
FLUSH_TIMEOUT_S = 600.0
# ASHA may stop a trial at a rung's report or its last, ending its process with whatever is still queued, so
# before such a report a trial waits this long for its whole queue; before any other report, for
# the previous epoch's writes (sent while this epoch trained). Only an outage makes either wait.
REPORT_FLUSH_S = 5.0


def _save_trial_state(checkpoint_dir: Path, state: dict[str, Any]) -> None:
    """Record, inside the checkpoint, the run it belongs to and every epoch's metrics as logged (with
    their timestamps)."""
    (checkpoint_dir / TRIAL_STATE_FILE).write_text(json.dumps(state))


def read_trial_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """The trial state saved in a checkpoint directory (empty for a checkpoint without one)."""
    path = Path(checkpoint_dir) / TRIAL_STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _preview_predictor(predictor: DepthPredictor | None, model: nn.Module, device: str) -> DepthPredictor:
    """A predictor on the live model, so a grid copies no weights: made at the trial's first grid,
    put back in eval mode at the later ones (``train`` sets train mode at the start of every epoch)."""
    if predictor is None:
        return DepthPredictor(model, device)
    predictor.module.eval()
    return predictor


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def trial_workdir(trial_id: str, scratch: Path | None = None) -> Path:
    """A fresh scratch directory for this attempt of the trial, named after its process. Trial
    processes ended outright (a node's raylet or the driver SIGKILLed, or ASHA's stop ending the
    process before the training thread's cleanup ran) leave theirs behind: the ones whose process
    is gone are removed first, so a node keeps at most its live trials' directories."""
    scratch = Path(scratch or tempfile.gettempdir())
    for stale in scratch.glob(f"{WORKDIR_PREFIX}*"):
        match = re.fullmatch(rf"{re.escape(WORKDIR_PREFIX)}.+-pid(\d+)-[^-]+", stale.name)
        if match and not _process_alive(int(match.group(1))):
            logger.info("removing %s, left by a trial process that ended without cleaning up", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{trial_id}-pid{os.getpid()}-", dir=scratch))


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, dict[str, Any]]:
    """Copy Tune's checkpoint of this trial (if restored) next to the trial; return it and its trial state."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as directory:
        local = workdir / "restored"
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(directory, local)
    return local / CHECKPOINT_FILE, read_trial_state(local)


def _node_name(node_id: str) -> str:
    """The Ray node's name (``ray start --node-name``; its IP address unless set)."""
    return next((node.get("NodeName", "") for node in ray.nodes() if node.get("NodeID") == node_id), "")


def _process_tags(device: str) -> dict[str, str]:
    """Where this attempt of the trial runs (a restored trial may run elsewhere)."""
    node_id = ray.get_runtime_context().get_node_id()
    return {
        "depthtune.host": socket.gethostname(),
        "depthtune.node_id": node_id,
        "depthtune.node_name": _node_name(node_id),
        "depthtune.pid": str(os.getpid()),
        "depthtune.device": str(pick_device(device)),
    }


def _open_run(
    client: MlflowClient,
    run_id: str | None,
    tracking: dict[str, Any],
    params: dict[str, Any],
    config: TrainConfig,
    baseline: bool,
) -> tuple[RunLogger, bool]:
    """Continue the trial's run (known from its checkpoint, or found by its trial id) or start it,
    tagged as the paper-settings baseline when it is one; says whether it continued one."""
    context = tune.get_context()
    trial_id = context.get_trial_id()
    run_id = run_id or find_run(
        client, tracking["experiment_id"], {TRIAL_TAG: trial_id, SWEEP_TAG: tracking["parent_run_id"]}
    )
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
        tags={
            TRIAL_TAG: trial_id,
            SWEEP_TAG: tracking["parent_run_id"],
            **tracking["lineage"],
            **_process_tags(config.device),
            **({BASELINE_TAG: PAPER} if baseline else {}),
        },
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
    workdir = trial_workdir(tune.get_context().get_trial_id())
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
    run, continued = _open_run(client, restored.get(RUN_ID_KEY), tracking, params, config, sweep.is_baseline(params))
    state = {RUN_ID_KEY: run.run_id, "epochs": restored.get("epochs", [])}
    if restored:
        done = int(restored["metrics"]["epoch"]) + 1
        run.set_tags({"depthtune.restored_after_epoch": done})
    already_logged = run.logged_steps("val_loss") if continued else set()
    writer = BackgroundWriter(f"trial {tune.get_context().get_trial_id()}")
    try:
        for record in state["epochs"]:  # epochs the previous attempt could not send before it died
            if record["step"] not in already_logged:
                writer.submit(f"epoch {record['step'] + 1} metrics", _epoch_sender(run, record))
                already_logged.add(record["step"])
        if restored and done >= config.epochs:  # it had finished when the driver died: hand Tune its last result again
            tune.report(
                {**restored["metrics"], RUN_ID_KEY: run.run_id},
                checkpoint=tune.Checkpoint.from_directory(resume_from.parent),
            )
            return
        _train_reporting(
            config, sweep, arrays, base_model, workdir, run, client, writer, state, already_logged, resume_from
        )
    finally:
        writer.close(timeout=FLUSH_TIMEOUT_S)


def _epoch_sender(run: RunLogger, record: dict[str, Any]):
    return lambda: run.log_epoch(record["metrics"], step=record["step"], timestamp_ms=record["timestamp_ms"])


def _train_reporting(
    config: TrainConfig,
    sweep: SweepConfig,
    arrays: NYUArrays,
    base_model: BaseModel | None,
    workdir: Path,
    run: RunLogger,
    client: MlflowClient,
    writer: BackgroundWriter,
    state: dict[str, Any],
    already_logged: set[int],
    resume_from: Path | None,
) -> None:
    """Train, and after each epoch: queue its metrics (and every few epochs a prediction grid) for
    MLflow and report them to Tune, with the epoch's checkpoint when ``train`` wrote one."""
    preview_frames = list(data_splits(config, arrays.scenes).val[: sweep.preview_frames])
    may_stop_after = stopping_epochs(sweep)
    queued_before = writer.mark
    predictor: DepthPredictor | None = None

    def report(metrics: dict[str, float], checkpoint_dir: Path | None, model: nn.Module) -> None:
        nonlocal queued_before, predictor
        epoch = int(metrics["epoch"])
        record = {"step": epoch, "timestamp_ms": int(time.time() * 1000), "metrics": metrics}
        state["epochs"].append(record)
        checkpoint = None
        if checkpoint_dir is not None:
            _save_trial_state(checkpoint_dir, {**state, "metrics": metrics})
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
        if epoch not in already_logged:  # a retrained epoch repeats its values exactly (seeded training)
            writer.submit(f"epoch {epoch + 1} metrics", _epoch_sender(run, record))
        if preview_frames and ((epoch + 1) % sweep.preview_every == 0 or epoch + 1 == config.epochs):
            predictor = _preview_predictor(predictor, model, str(pick_device(config.device)))
            grid = prediction_grid(predictor, arrays, preview_frames, f"epoch {epoch + 1}")
            artifact = f"predictions/epoch_{epoch + 1:03d}.png"
            writer.submit(artifact, lambda: log_grid(client, run.run_id, grid, artifact))
        writer.wait_for(writer.mark if epoch + 1 in may_stop_after else queued_before, timeout=REPORT_FLUSH_S)
        queued_before = writer.mark
        tune.report({**metrics, RUN_ID_KEY: run.run_id, TIMESTAMP_KEY: record["timestamp_ms"]}, checkpoint=checkpoint)

    net12 = base_model.module() if base_model is not None else None
    try:
        train(config, workdir / "checkpoints", arrays=arrays, on_epoch=report, resume_from=resume_from, net12=net12)
    except FloatingPointError as exc:
        # Seeded training diverges again at the same epoch, so a Tune retry (max_failures) would only
        # repeat it: end the trial here with the epochs it reported, its run tagged with the reason.
        # Tune needs a result carrying the metric, so one diverged in its first epoch stays an error.
        run.set_tags({DIVERGED_TAG: str(exc)})
        if not state["epochs"]:
            raise
        logger.warning("trial %s diverged, ending it without a retry: %s", tune.get_context().get_trial_id(), exc)
