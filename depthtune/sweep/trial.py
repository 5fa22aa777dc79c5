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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from mlflow import MlflowClient
from ray import tune
from torch import nn

from depthtune.checkpoint_pipeline import Publish
from depthtune.checkpoints import CHECKPOINT_FILE
from depthtune.data import NYUArrays
from depthtune.evaluation import pick_device
from depthtune.paper_settings import BASELINE_TAG, PAPER
from depthtune.predictor import DepthPredictor
from depthtune.sweep.console import quiet_process
from depthtune.sweep.ledger import EpochRecord, TrialLedger, epochs_done, finished_budget
from depthtune.sweep.plan import SweepPlan
from depthtune.sweep.process_exit import stop_at_process_exit
from depthtune.sweep.searcher import stopping_epochs
from depthtune.tracking.datasets import log_dataset
from depthtune.tracking.previews import log_grid, prediction_grid
from depthtune.tracking.runs import DIVERGED_TAG, RUN_ID_KEY, SWEEP_TAG, TIMESTAMP_KEY, TRIAL_TAG, RunLogger, find_run
from depthtune.tracking.system_metrics import monitor_system
from depthtune.tracking.writer import BackgroundWriter
from depthtune.train import TrainingStopped, train
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)

TRIAL_STATE_FILE = "trial_state.json"
WORKDIR_PREFIX = "depthtune-trial-"
FLUSH_TIMEOUT_S = 600.0
# ASHA may stop a trial at a rung's report or its last, ending its process with whatever is still queued, so
# before such a report a trial waits this long for its whole queue; before any other report, for
# the previous epoch's writes (sent while this epoch trained). Only an outage makes either wait.
REPORT_FLUSH_S = 5.0
# How long a trial's exiting process waits for its training thread to stop and clean up: a batch,
# then the trial's queued MLflow writes (already flushed at the reports where ASHA may stop it).
EXIT_WAIT_S = 30.0


@dataclass
class TrialState:
    """What a trial's checkpoint carries besides the weights: its MLflow run, every epoch it reported
    (with their timestamps) and the metrics of the checkpoint's own epoch."""

    run_id: str
    ledger: TrialLedger
    metrics: dict[str, float] = field(default_factory=dict)

    def write(self, checkpoint_dir: Path) -> None:
        values = {
            RUN_ID_KEY: self.run_id,
            "epochs": [record.as_dict() for record in self.ledger.records],
            "metrics": self.metrics,
        }
        (checkpoint_dir / TRIAL_STATE_FILE).write_text(json.dumps(values))

    @classmethod
    def read(cls, checkpoint_dir: str | os.PathLike) -> "TrialState | None":
        """The state saved in a checkpoint directory (None for a checkpoint without one)."""
        path = Path(checkpoint_dir) / TRIAL_STATE_FILE
        if not path.is_file():
            return None
        values = json.loads(path.read_text())
        ledger = TrialLedger([EpochRecord.from_dict(record) for record in values.get("epochs", [])])
        return cls(values[RUN_ID_KEY], ledger, dict(values.get("metrics", {})))


@dataclass
class _TrialRun:
    """One attempt of a trial: its MLflow run, the writer that sends to it in the background, its
    ledger and the epochs the run already holds (a retrained epoch repeats its values exactly)."""

    client: MlflowClient
    run: RunLogger
    writer: BackgroundWriter
    ledger: TrialLedger
    logged: set[int]

    def send(self, record: EpochRecord) -> None:
        """Queue an epoch for the run unless it already holds it."""
        if record.step not in self.logged:
            self.writer.submit(f"epoch {record.step + 1} metrics", lambda: record.send(self.run))
            self.logged.add(record.step)


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
    processes ended outright (a node's raylet or the driver SIGKILLed, or a process whose training
    thread did not stop within EXIT_WAIT_S of its exit) leave theirs behind: the ones whose process
    is gone are removed first, so a node keeps at most its live trials' directories."""
    scratch = Path(scratch or tempfile.gettempdir())
    for stale in scratch.glob(f"{WORKDIR_PREFIX}*"):
        match = re.fullmatch(rf"{re.escape(WORKDIR_PREFIX)}.+-pid(\d+)-[^-]+", stale.name)
        if match and not _process_alive(int(match.group(1))):
            logger.info("removing %s, left by a trial process that ended without cleaning up", stale)
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{trial_id}-pid{os.getpid()}-", dir=scratch))


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, TrialState | None]:
    """Copy Tune's checkpoint of this trial (if restored) next to the trial; return it and its trial state."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None
    with checkpoint.as_directory() as directory:
        local = workdir / "restored"
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(directory, local)
    return local / CHECKPOINT_FILE, TrialState.read(local)


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
    client: MlflowClient, run_id: str | None, plan: SweepPlan, params: dict[str, Any], config: TrainConfig
) -> tuple[RunLogger, bool]:
    """Continue the trial's run (known from its checkpoint, or found by its trial id) or start it,
    tagged as the paper-settings baseline when it is one; says whether it continued one."""
    context = tune.get_context()
    trial_id, tracking = context.get_trial_id(), plan.tracking
    run_id = run_id or find_run(
        client, tracking.experiment_id, {TRIAL_TAG: trial_id, SWEEP_TAG: tracking.parent_run_id}
    )
    if run_id:
        run = RunLogger.resume(client, run_id)
        run.set_tags(_process_tags(config.device))
        logger.info("trial %s continues MLflow run %s", trial_id, run_id)
        return run, True
    run = RunLogger.start(
        client,
        tracking.experiment_id,
        name=context.get_trial_name(),
        parent_run_id=tracking.parent_run_id,
        params={**params, **{k: v for k, v in config.as_dict().items() if k not in params}},
        tags={
            TRIAL_TAG: trial_id,
            SWEEP_TAG: tracking.parent_run_id,
            **tracking.lineage,
            **_process_tags(config.device),
            **({BASELINE_TAG: PAPER} if plan.config.is_baseline(params) else {}),
        },
    )
    client.log_dict(run.run_id, config.as_dict(), "trial_config.json")
    log_dataset(client, run.run_id, plan.data, plan.data_sha256, plan.splits)
    return run, False


def run_trial(params: dict[str, Any], *, plan: SweepPlan, arrays: NYUArrays) -> None:
    """Train one hyperparameter sample on ``arrays``, read zero-copy from the node's object store
    (as is the plan, with the Net12 a Net3 refines)."""
    torch.set_num_threads(max(1, int(plan.config.cpus_per_trial)))
    if not plan.verbose:
        quiet_process()
    config = plan.trial_config(params)
    trial_id = tune.get_context().get_trial_id()
    workdir = trial_workdir(trial_id)
    with stop_at_process_exit(EXIT_WAIT_S) as stop:
        try:
            _train_and_track(params, config, plan, arrays, workdir, stop)
        except TrainingStopped:
            logger.debug("trial %s stopped training: its process is exiting", trial_id)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _train_and_track(
    params: dict[str, Any],
    config: TrainConfig,
    plan: SweepPlan,
    arrays: NYUArrays,
    workdir: Path,
    stop: threading.Event,
) -> None:
    client = MlflowClient(plan.tracking.uri)
    resume_from, restored = _restored_checkpoint(workdir)
    run, continued = _open_run(client, restored.run_id if restored else None, plan, params, config)
    ledger = restored.ledger if restored else TrialLedger()
    logged = run.logged_steps("val_loss") if continued else set()
    trial = _TrialRun(client, run, BackgroundWriter(f"trial {tune.get_context().get_trial_id()}"), ledger, logged)
    gpus = [int(gpu) for gpu in ray.get_gpu_ids()]
    monitor = monitor_system(
        run.run_id, plan.tracking.uri, plan.config.system_metrics_every, resume=continued, gpu_ids=gpus
    )
    try:
        for record in ledger.missing_from(logged):  # epochs the previous attempt could not send before it died
            trial.send(record)
        if restored is not None:
            run.set_tags({"depthtune.restored_after_epoch": epochs_done(restored.metrics)})
            if finished_budget(restored.metrics, config.epochs):  # finished when the driver died: report it again
                tune.report(
                    {**restored.metrics, RUN_ID_KEY: run.run_id},
                    checkpoint=tune.Checkpoint.from_directory(resume_from.parent),
                )
                return
        _train_reporting(config, plan, arrays, workdir, trial, resume_from, stop)
    finally:
        trial.writer.close(timeout=FLUSH_TIMEOUT_S)
        if monitor is not None:
            monitor.finish()


def _train_reporting(
    config: TrainConfig,
    plan: SweepPlan,
    arrays: NYUArrays,
    workdir: Path,
    trial: _TrialRun,
    resume_from: Path | None,
    stop: threading.Event,
) -> None:
    """Train, and after each epoch: make the epoch's prediction grid (every few epochs, on the live
    model), then, once ``train`` has written the epoch's checkpoint (if one is due), queue the metrics
    and grid for MLflow and report them to Tune with it, in the background while the next epoch trains."""
    sweep, writer = plan.config, trial.writer
    preview_frames = list(plan.splits.val[: sweep.preview_frames])
    may_stop_after = stopping_epochs(sweep)
    queued_before = writer.mark
    predictor: DepthPredictor | None = None

    def report(metrics: dict[str, float], model: nn.Module) -> Publish:
        nonlocal predictor
        epoch = int(metrics["epoch"])
        grid = None
        if preview_frames and ((epoch + 1) % sweep.preview_every == 0 or epoch + 1 == config.epochs):
            predictor = _preview_predictor(predictor, model, str(pick_device(config.device)))
            grid = prediction_grid(predictor, arrays, preview_frames, f"epoch {epoch + 1}")

        def publish(checkpoint_dir: Path | None) -> None:
            """In the background once the epoch's checkpoint is written: queue the epoch for MLflow and
            report it to Tune (which copies the checkpoint into the sweep's storage)."""
            nonlocal queued_before
            record = trial.ledger.add(metrics)
            checkpoint = None
            if checkpoint_dir is not None:
                TrialState(trial.run.run_id, trial.ledger, metrics).write(checkpoint_dir)
                checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
            trial.send(record)
            if grid is not None:
                writer.submit(
                    f"epoch {epoch + 1} prediction grid", lambda: log_grid(trial.client, trial.run.run_id, grid, epoch)
                )
            writer.wait_for(writer.mark if epoch + 1 in may_stop_after else queued_before, timeout=REPORT_FLUSH_S)
            queued_before = writer.mark
            tune.report(
                {**metrics, RUN_ID_KEY: trial.run.run_id, TIMESTAMP_KEY: record.timestamp_ms}, checkpoint=checkpoint
            )

        return publish

    net12 = plan.base_model.module() if plan.base_model is not None else None
    try:
        train(
            config,
            workdir / "checkpoints",
            arrays=arrays,
            on_epoch=report,
            resume_from=resume_from,
            net12=net12,
            stop=stop,
        )
    except FloatingPointError as exc:
        # Seeded training diverges again at the same epoch, so a Tune retry (max_failures) would only
        # repeat it: end the trial here with the epochs it reported, its run tagged with the reason.
        # Tune needs a result carrying the metric, so one diverged in its first epoch stays an error.
        trial.run.set_tags({DIVERGED_TAG: str(exc)})
        if not trial.ledger.records:
            raise
        logger.warning("trial %s diverged, ending it without a retry: %s", tune.get_context().get_trial_id(), exc)
