"""Sweeps: Ray Tune with Optuna TPE (seeded, ASHA-aware) and ASHA over lr, momentum, StepLR step
size and gradient-loss weight (random search and FIFO as the baseline). The dataset is read once by the driver and shared through Ray's
object store; every trial is a nested MLflow run under the sweep's parent run."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import ray
from mlflow import MlflowClient
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from depthtune.checkpoints import model_from_checkpoint
from depthtune.dashboards.sweep import write_sweep_dashboard
from depthtune.dashboards.sweep_record import load_sweep
from depthtune.data import NYUArrays, read_nyu
from depthtune.data.source import file_sha256, resolve_data
from depthtune.metrics import EIGEN_PROTOCOL
from depthtune.predictor import save_model_files
from depthtune.profiles import model_config
from depthtune.runner import evaluate_model
from depthtune.searcher import describe_search, search_algorithm, trial_scheduler
from depthtune.sweep_config import SweepConfig
from depthtune.tracking.callback import RunStatusCallback, complete_run
from depthtune.tracking.lineage import BaseModel, resolve_base_model
from depthtune.tracking.registry import Registration, log_depth_model, register_version
from depthtune.tracking.runs import DIVERGED_TAG, TIMESTAMP_KEY, RunLogger
from depthtune.tracking.server import TrackingServer, embedded_store
from depthtune.train import EPOCH_METRICS, data_splits
from depthtune.trial import RUN_ID_KEY, run_trial

logger = logging.getLogger(__name__)

STATE_FILE = "depthtune_sweep.json"
DASHBOARD_FILE = "sweep_dashboard.html"
PACKAGES = ("depthtune", "torch", "ray", "mlflow", "optuna", "numpy", "h5py")


@contextmanager
def _tune_file_loggers_only() -> Iterator[None]:
    """While Tune sets up a sweep, keep it from adding its TensorBoardX logger on its own: MLflow
    has every metric, and the logger's import alone costs the driver about 2.5 s at each start.
    The CSV and JSON loggers, which Tune's results read, are passed explicitly."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


@dataclass
class SweepOutcome:
    """Where a finished sweep's results are and which trial won."""

    sweep_run_id: str
    experiment_id: str
    tracking_uri: str
    results_path: Path
    trials: int
    best_trial_id: str
    best_run_id: str
    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    best_checkpoint: Path
    test_metrics: dict[str, float]
    registration: Registration
    dashboard: Path


def git_commit() -> str:
    """The commit of the checkout this package runs from, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "not installed"
    return versions


def _experiment_id(client: MlflowClient, name: str) -> str:
    """Get or create the MLflow experiment, once, from the driver (before any trial logs)."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _tracking_uri(config: SweepConfig, stack: ExitStack, log_dir: Path) -> str:
    """The given tracking URI, or a local ``mlflow server`` in front of the embedded SQLite store."""
    if config.tracking_uri:
        return config.tracking_uri
    backend, artifacts = embedded_store(Path.cwd())
    server = stack.enter_context(TrackingServer(backend, artifacts, log_path=log_dir / "mlflow-server.log"))
    return server.uri


def _parent_closer(parent: RunLogger):
    """Exit handler ending the sweep's run: FINISHED, KILLED on Ctrl-C, FAILED on an error."""

    def close(exc_type, exc, tb) -> bool:
        status = "FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        parent.finish(status)
        return False

    return close


def _base_model(config: SweepConfig, state: dict[str, str] | None, uri: str) -> BaseModel | None:
    """The Net12 under a Net3 sweep, pinned to one version; a resumed sweep keeps the version it began with."""
    if config.model != "net3":
        return None
    reference = (state or {}).get("base_model", config.net12_model)
    base = resolve_base_model(reference, uri, expected="net12")
    logger.info("net3 refines %s (asked for %s; trained in run %s)", base.pinned, config.net12_model, base.source_run_id)
    return base


def _save_state(experiment_dir: Path, state: dict[str, str]) -> None:
    """The sweep's MLflow coordinates, rewritten by every driver that runs it: Tune restores its
    callbacks from the first driver's pickle, so they read the current tracking URI from here."""
    path = experiment_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _latest_sweep(storage: Path, model: str) -> str:
    """The name of the most recently started sweep of ``model`` under ``storage`` (for a bare --resume)."""
    sweeps = sorted((p.parent for p in storage.glob(f"{model}-*/{STATE_FILE}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise FileNotFoundError(f"nothing to resume: no {model} sweep under {storage}")
    return sweeps[-1].name


def _load_state(experiment_dir: Path) -> dict[str, str] | None:
    path = experiment_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _register_best(
    config: SweepConfig,
    client: MlflowClient,
    uri: str,
    arrays: NYUArrays,
    checkpoint_dir: Path,
    params: dict[str, Any],
    run_id: str,
    trial_id: str,
    sweep_run_id: str,
    train_extra: dict[str, Any],
    data_sha256: str,
    lineage: dict[str, str],
) -> tuple[Registration, dict[str, float]]:
    """Evaluate the winner on the test split, log it as a model in its run, register a version."""
    trial_config = config.trial_config(params, **train_extra)
    model = model_from_checkpoint(checkpoint_dir, expected=config.model)
    test_metrics = evaluate_model(model, trial_config, arrays)
    splits = data_splits(trial_config, len(arrays))
    protocol = {**EIGEN_PROTOCOL.as_dict(), "split": splits.source, "test_frames": len(splits.test), "data_sha256": data_sha256}
    RunLogger(client, run_id).log_epoch({f"test_{k}": v for k, v in test_metrics.items()}, step=trial_config.epochs)
    model_uri = log_depth_model(model.cpu(), run_id, uri)
    registration = register_version(
        client, uri, model_uri, config.registered_name,
        test_metrics=test_metrics, protocol=protocol, compare_on=config.champion_metric,
        tags={
            "sweep_run_id": sweep_run_id, "run_id": run_id, "trial_id": trial_id, "data_sha256": data_sha256,
            **{f"param_{k}": str(v) for k, v in params.items()},
            **{key.removeprefix("depthtune."): value for key, value in lineage.items()},
        },
    )
    return registration, test_metrics


def best_checkpoint(result: tune.Result, config: SweepConfig) -> tuple[tune.Checkpoint, dict[str, Any]] | None:
    """The trial's checkpoint of its best epoch by the sweep's metric, with the metrics reported
    alongside it: trials checkpoint every new best and Tune keeps the best ones (``CheckpointConfig``
    in ``run_sweep``)."""
    if not result.best_checkpoints:
        return None
    pick = min if config.mode == "min" else max
    return pick(result.best_checkpoints, key=lambda kept: kept[1][config.metric])


def log_best_weights(client: MlflowClient, results: tune.ResultGrid, config: SweepConfig) -> None:
    """Each trial's best checkpoint as weights + architecture JSON into its run's ``best_model/``,
    and the best epoch as tags."""
    for result in results:
        run_id = (result.metrics or {}).get(RUN_ID_KEY)
        best = best_checkpoint(result, config)
        if best is None or not run_id:
            continue
        checkpoint, metrics = best
        with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as staging:
            save_model_files(model_from_checkpoint(directory), staging)
            client.log_artifacts(run_id, staging, "best_model")
        RunLogger(client, run_id).set_tags(
            {"depthtune.best_epoch": int(metrics["epoch"]) + 1, f"depthtune.best_{config.metric}": metrics[config.metric]}
        )


def close_trial_runs(client: MlflowClient, results: tune.ResultGrid, config: SweepConfig) -> None:
    """Every trial's run complete and closed, from Tune's own record of what each trial reported:
    the callback does this as trials end, but a driver killed before its writes went out leaves
    runs RUNNING or short of epochs, and a resumed sweep does not end those trials again."""
    for result in results:
        run_id = (result.metrics or {}).get(RUN_ID_KEY)
        if not run_id or client.get_run(run_id).info.status != "RUNNING":
            continue
        frame = result.metrics_dataframe
        reported = []
        if frame is not None and TIMESTAMP_KEY in frame:
            for row in frame.dropna(subset=[TIMESTAMP_KEY]).to_dict("records"):
                metrics = {key: row[key] for key in EPOCH_METRICS if key in row}
                reported.append({"timestamp_ms": int(row[TIMESTAMP_KEY]), "metrics": metrics})
        reached = result.metrics.get("training_iteration", 0)
        status = "FAILED" if result.error else "FINISHED" if reached >= config.epochs else "KILLED"
        filled = complete_run(client, run_id, reported, status)
        logger.info("closed trial run %s left RUNNING by an earlier driver (%s, %d epochs filled in)", run_id, status, filled)


def best_finished_result(results: tune.ResultGrid, config: SweepConfig) -> tune.Result:
    """The trial with the best epoch among those that trained their whole budget (ASHA-stopped
    trials only when none did): a stopped trial's early score is not a finished result."""
    usable = [r for r in results if r.error is None and r.metrics and config.metric in r.metrics_dataframe]
    finished = [r for r in usable if r.metrics.get("training_iteration", 0) >= config.epochs]
    candidates = finished or usable
    if not candidates:
        raise RuntimeError(f"every trial of the sweep failed or diverged before its first epoch; see the trial errors under "
                           f"{results.experiment_path} and the trials' runs in MLflow (tag {DIVERGED_TAG})")
    pick = min if config.mode == "min" else max
    return pick(candidates, key=lambda r: float(getattr(r.metrics_dataframe[config.metric], config.mode)()))


def run_sweep(config: SweepConfig, *, resume: bool = False) -> SweepOutcome:
    """Run (or with ``resume`` continue) a sweep; returns the best trial and where results are."""
    storage = Path(config.storage_path).resolve()
    name = config.name or (_latest_sweep(storage, config.model) if resume else f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    experiment_dir = storage / name
    state = _load_state(experiment_dir)
    if resume and (state is None or not tune.Tuner.can_restore(str(experiment_dir))):
        raise FileNotFoundError(f"nothing to resume: no sweep named {name!r} under {storage}")
    if not resume and state is not None:
        raise FileExistsError(f"a sweep named {name!r} already exists under {storage}; pass --resume or choose another name")
    data = resolve_data(
        config.data, synthetic_path=config.synthetic_path, synthetic_scenes=config.synthetic_scenes, workers=config.synthetic_workers
    )
    if "model_cfg" not in config.train:
        config.train = {**config.train, "model_cfg": model_config(config.profile, config.model)}
    train_extra: dict[str, Any] = {"data": str(data.resolve()), "splits_file": config.splits_file}
    experiment_dir.mkdir(parents=True, exist_ok=True)
    data_sha256 = file_sha256(data)

    with ExitStack() as stack:
        uri = _tracking_uri(config, stack, experiment_dir)
        client = MlflowClient(uri)
        experiment_id = _experiment_id(client, config.experiment_name)
        base = _base_model(config, state, uri)
        lineage = base.tags() if base else {}
        if base:
            train_extra["net12_checkpoint"] = base.pinned
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=config.ray_address, log_to_driver=True)  # None: RAY_ADDRESS, else a local Ray
            stack.callback(ray.shutdown)
        if state is None:
            parent = RunLogger.start(
                client,
                experiment_id,
                name=name,
                params={
                    "model": config.model,
                    "search_space": json.dumps(config.search_space, sort_keys=True),
                    "metric": config.metric,
                    "mode": config.mode,
                    "epochs": config.epochs,
                    **describe_search(config),
                    "num_samples": config.num_samples,
                    "max_concurrent": config.max_concurrent,
                    "data": str(data.resolve()),
                    "data_sha256": data_sha256,
                    "split": config.splits_file or f"random(seed={config.train.get('split_seed', 0)})",
                    "profile": config.profile,
                    "git_commit": git_commit(),
                    **({"net12_model": base.reference} if base else {}),
                    **_versions(),
                },
                tags={"depthtune.kind": "sweep", "depthtune.host": platform.node(), **lineage},
            )
            state = {"parent_run_id": parent.run_id, **({"base_model": base.pinned} if base else {})}
        else:
            parent = RunLogger.resume(client, state["parent_run_id"])
        _save_state(experiment_dir, {**state, "tracking_uri": uri, "experiment_id": experiment_id})
        stack.push(_parent_closer(parent))

        # The dataset's one copy lives in the object store: trials map it, and the driver reads it back
        # from there for the winner's test metrics instead of holding a second copy for the whole sweep.
        arrays_ref = ray.put(read_nyu(data))
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                sweep=config,
                arrays=arrays_ref,
                tracking={"uri": uri, "experiment_id": experiment_id, "parent_run_id": parent.run_id, "lineage": lineage},
                train_extra=train_extra,
                base_model=base,
            ),
            {**config.resources_per_trial, "cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
        )
        if resume:
            logger.info("resuming sweep %s from %s", name, experiment_dir)
            tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=search_algorithm(config),
                    scheduler=trial_scheduler(config),
                    metric=config.metric,
                    mode=config.mode,
                    num_samples=config.num_samples,
                    max_concurrent_trials=config.max_concurrent,
                    trial_name_creator=lambda trial: f"{config.model}_{trial.trial_id}",
                    trial_dirname_creator=lambda trial: f"{config.model}_{trial.trial_id}",
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=config.keep_checkpoints, checkpoint_score_attribute=config.metric, checkpoint_score_order=config.mode
                    ),
                    callbacks=[
                        RunStatusCallback(experiment_dir / STATE_FILE, config.epochs, EPOCH_METRICS),
                        CSVLoggerCallback(),
                        JsonLoggerCallback(),
                    ],
                    verbose=1,
                ),
            )
        with _tune_file_loggers_only():
            results = tuner.fit()
        close_trial_runs(client, results, config)
        log_best_weights(client, results, config)
        best = best_finished_result(results, config)
        winner_checkpoint, _ = best_checkpoint(best, config)
        best_metrics = {k: float(v) for k, v in best.metrics.items() if k.startswith(("val_", "train_")) and isinstance(v, (int, float))}
        best_params = {k: best.config[k] for k in config.space}
        best_run_id, best_trial_id = best.metrics[RUN_ID_KEY], best.metrics["trial_id"]
        parent.set_tags({"depthtune.best_run_id": best_run_id, "depthtune.best_trial_id": best_trial_id})
        with winner_checkpoint.as_directory() as directory:
            registration, test_metrics = _register_best(
                config, client, uri, ray.get(arrays_ref), Path(directory), best_params, best_run_id, best_trial_id,
                parent.run_id, train_extra, data_sha256, lineage,
            )
        dashboard = write_sweep_dashboard(load_sweep(client, parent.run_id), experiment_dir / DASHBOARD_FILE)
        client.log_artifact(parent.run_id, str(dashboard))
        outcome = SweepOutcome(
            sweep_run_id=parent.run_id,
            experiment_id=experiment_id,
            tracking_uri=uri,
            results_path=experiment_dir,
            trials=len(results),
            best_trial_id=best_trial_id,
            best_run_id=best_run_id,
            best_params=best_params,
            best_metrics=best_metrics,
            best_checkpoint=Path(winner_checkpoint.path),
            test_metrics=test_metrics,
            registration=registration,
            dashboard=dashboard,
        )
    return outcome


def summary_text(outcome: SweepOutcome, config: SweepConfig) -> str:
    """What the user sees at the end: the winner, its numbers, and where to look."""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in outcome.best_params.items())
    metrics = ", ".join(f"{k}={outcome.best_metrics[k]:.4f}" for k in ("val_loss", "val_abs_rel", "val_rmse", "val_delta1") if k in outcome.best_metrics)
    if config.tracking_uri and config.tracking_uri.startswith(("http://", "https://")):
        ui = f"open {config.tracking_uri} (the tracking server's UI; from a laptop through an SSH tunnel, docs/cluster.md)"
    elif config.tracking_uri:
        ui = f"mlflow ui --backend-store-uri {config.tracking_uri}   (then open http://127.0.0.1:5000)"
    else:
        ui = f"cd {Path.cwd()} && mlflow ui   (then open http://127.0.0.1:5000)"
    return "\n".join(
        [
            f"sweep {config.experiment_name}: {outcome.trials} trials, results in {outcome.results_path}",
            f"best trial {outcome.best_trial_id} (MLflow run {outcome.best_run_id}): {params}",
            f"  last epoch: {metrics}",
            f"  best checkpoint: {outcome.best_checkpoint}",
            f"  test split: abs_rel={outcome.test_metrics['abs_rel']:.4f}, rmse={outcome.test_metrics['rmse']:.4f}, "
            f"delta1={outcome.test_metrics['delta1']:.4f}",
            f"registered {outcome.registration.name} version {outcome.registration.version} as "
            f"@{outcome.registration.alias} ({outcome.registration.reason}): load it with "
            f"depthtune.load_model(\"{outcome.registration.name}@{outcome.registration.alias}\")",
            f"sweep run id: {outcome.sweep_run_id} (experiment {outcome.experiment_id})",
            f"dashboard: {outcome.dashboard} (also an artifact of the sweep run)",
            f"look at it: {ui}",
        ]
    )
