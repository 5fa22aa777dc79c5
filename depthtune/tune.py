"""Sweeps: Ray Tune with Optuna TPE (seeded, ASHA-aware) and ASHA over lr, momentum, StepLR step
size and gradient-loss weight (random search and FIFO as the brute-force comparison), the first
trial always the papers' settings. Trials are compared, stopped and registered on a validation
metric of a scene-disjoint split; the test split is evaluated for the winner and the paper trial
only, to report. The dataset is read once by the driver and shared through Ray's object store;
every trial is a nested MLflow run under the sweep's parent run."""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
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
from torch import nn

from depthtune.checkpoints import model_from_checkpoint
from depthtune.dashboards.sweep import write_sweep_dashboard
from depthtune.dashboards.sweep_record import load_sweep
from depthtune.data import NYUArrays, read_nyu
from depthtune.data.source import file_sha256, resolve_data
from depthtune.data.splits import Splits
from depthtune.metrics import EIGEN_PROTOCOL, relative_gain
from depthtune.predictor import save_model_files
from depthtune.profiles import model_setup
from depthtune.runner import evaluate_model
from depthtune.searcher import describe_search, search_algorithm, trial_scheduler
from depthtune.storage_check import check_room, checkpoint_bytes
from depthtune.sweep_config import SweepConfig
from depthtune.sweep_errors import SweepInterrupted
from depthtune.sweep_state import INTERRUPTED, STATE_FILE, InterruptWatch, load_state, save_state
from depthtune.tracking.callback import RunStatusCallback, complete_run
from depthtune.tracking.lineage import BaseModel, resolve_base_model
from depthtune.tracking.reachable import check_tracking_uri
from depthtune.tracking.registry import Registration, log_depth_model, register_version
from depthtune.tracking.runs import DIVERGED_TAG, TIMESTAMP_KEY, RunLogger
from depthtune.tracking.server import TrackingServer, embedded_store
from depthtune.train import EPOCH_METRICS, data_splits
from depthtune.trial import RUN_ID_KEY, run_trial

logger = logging.getLogger(__name__)

LOCAL_STORE_BYTES = 200 * 10**6  # runs, prediction grids and each trial's best weights of a CPU sweep: tens of MB
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


@contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """While a sweep runs, SIGTERM (a scheduler's or ``kill``'s stop) does what Ctrl-C does: Tune
    saves its state and ends the trials, or outside Tune's loop a KeyboardInterrupt unwinds, so the
    sweep's run ends KILLED instead of being left RUNNING by a process that vanished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the block runs (a warning says so): registering is the
    sweep's commit point, written whole, never a version without its alias; the sweep then ends
    normally. (Masking the signals in this thread would not do: Ray's and MLflow's threads would
    still take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        logger.warning(
            "signal %d arrived while the winner was registered: registration completed, the sweep ends normally",
            received[0],
        )


@dataclass
class EvaluatedTrial:
    """A trial's best checkpoint, what chose it (its best epoch's validation metrics) and what is
    reported about it (its metrics on the test split)."""

    trial_id: str
    run_id: str
    params: dict[str, Any]
    best_epoch: int
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    checkpoint: Path


@dataclass
class PaperComparison:
    """The sweep's winner against its paper-settings trial, on validation and on test: ``gains``
    maps ``val_<metric>`` / ``test_<metric>`` to the winner's relative improvement (positive:
    the tuned settings are better). ``paper`` is None, with ``missing`` saying why, when the
    paper trial has no result (it failed or diverged, or the sweep predates it)."""

    paper: EvaluatedTrial | None
    gains: dict[str, float]
    missing: str = ""


@dataclass
class SweepOutcome:
    """Where a finished sweep's results are, which trial won, and how it compares with the paper's settings."""

    sweep_run_id: str
    experiment_id: str
    tracking_uri: str
    results_path: Path
    trials: int
    metric: str
    splits: Splits
    winner: EvaluatedTrial
    paper: PaperComparison
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
    """The given tracking URI (it must answer), or a local ``mlflow server`` in front of the
    embedded SQLite store."""
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
    logger.info(
        "net3 refines %s (asked for %s; trained in run %s)", base.pinned, config.net12_model, base.source_run_id
    )
    return base


def _claim_name(storage: Path, name: str, explicit: bool) -> str:
    """Create the sweep's folder atomically: a sweep started in the same second as another gets
    ``<name>-2`` (``-3``, ...); an explicit name that exists is an error, before anything starts."""
    storage.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        try:
            (storage / candidate).mkdir()
            return candidate
        except FileExistsError:
            if explicit:
                raise FileExistsError(
                    f"a sweep named {name!r} already exists under {storage}; pass --resume or choose another name"
                ) from None
    raise AssertionError("unreachable")


def _sweep_bytes(config: SweepConfig) -> int:
    """What the trials running at once may keep in the storage path: each trial's kept checkpoints,
    its newest, and one being written."""
    return (
        checkpoint_bytes(config.model, config.train["model_cfg"])
        * (config.keep_checkpoints + 2)
        * config.max_concurrent
    )


def all_trials_ended(results: tune.ResultGrid, config: SweepConfig) -> bool:
    """Whether the sweep ran to its end: every sample was started, and every trial ended (finished,
    stopped by ASHA or failed for good) rather than being left paused by an interruption."""
    return len(results) >= config.num_samples and results.num_terminated + results.num_errors == len(results)


def _latest_sweep(storage: Path, model: str) -> str:
    """The name of the most recently started sweep of ``model`` under ``storage`` (for a bare --resume)."""
    sweeps = sorted((p.parent for p in storage.glob(f"{model}-*/{STATE_FILE}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise FileNotFoundError(f"nothing to resume: no {model} sweep under {storage}")
    return sweeps[-1].name


def evaluate_trial(
    result: tune.Result, config: SweepConfig, client: MlflowClient, arrays: NYUArrays, train_extra: dict[str, Any]
) -> tuple[EvaluatedTrial, nn.Module]:
    """Test a trial's best checkpoint (the one its selection metric chose) and log the test
    metrics into its run; returns the evaluation and the loaded model."""
    checkpoint, metrics = best_checkpoint(result, config)
    params = {name: result.config[name] for name in config.space}
    with checkpoint.as_directory() as directory:
        model = model_from_checkpoint(directory, expected=config.model)
    trial_config = config.trial_config(params, **train_extra)
    test_metrics = evaluate_model(model, trial_config, arrays)
    run_id = result.metrics[RUN_ID_KEY]
    RunLogger(client, run_id).log_epoch({f"test_{k}": v for k, v in test_metrics.items()}, step=trial_config.epochs)
    evaluated = EvaluatedTrial(
        trial_id=result.metrics["trial_id"],
        run_id=run_id,
        params=params,
        best_epoch=int(metrics["epoch"]) + 1,
        val_metrics={k: float(v) for k, v in metrics.items() if k.startswith("val_")},
        test_metrics=test_metrics,
        checkpoint=Path(checkpoint.path),
    )
    return evaluated, model


def paper_result(results: tune.ResultGrid, config: SweepConfig) -> tune.Result | None:
    """The sweep's paper-settings trial, if it has a checkpoint to evaluate."""
    for result in results:
        if result.config and config.is_baseline(result.config):
            return result if result.best_checkpoints else None
    return None


def compare_with_paper(
    winner: EvaluatedTrial, paper: EvaluatedTrial | None, metric: str, missing: str = ""
) -> PaperComparison:
    """The winner's relative gain over the paper-settings trial on the selection metric
    (validation) and on every test metric."""
    if paper is None:
        return PaperComparison(None, {}, missing)
    gains = {metric: relative_gain(metric, winner.val_metrics[metric], paper.val_metrics[metric])}
    gains.update(
        {f"test_{k}": relative_gain(k, winner.test_metrics[k], paper.test_metrics[k]) for k in winner.test_metrics}
    )
    return PaperComparison(paper, gains)


def log_paper_comparison(parent: RunLogger, winner: EvaluatedTrial, comparison: PaperComparison, metric: str) -> None:
    """On the sweep's run: ``winner_*`` and ``baseline_*`` (the paper-settings trial) validation
    and test metrics, and ``gain_vs_paper_*`` in percent (positive: tuning helped)."""
    values = {
        f"winner_{metric}": winner.val_metrics[metric],
        **{f"winner_test_{k}": v for k, v in winner.test_metrics.items()},
    }
    if comparison.paper is not None:
        values[f"baseline_{metric}"] = comparison.paper.val_metrics[metric]
        values.update({f"baseline_test_{k}": v for k, v in comparison.paper.test_metrics.items()})
        values.update({f"gain_vs_paper_{k}": 100.0 * gain for k, gain in comparison.gains.items()})
    parent.log_epoch(values, step=0)
    parent.set_tags({"depthtune.baseline_run_id": comparison.paper.run_id if comparison.paper else comparison.missing})


def register_winner(
    config: SweepConfig,
    client: MlflowClient,
    uri: str,
    winner: EvaluatedTrial,
    model: nn.Module,
    splits: Splits,
    sweep_run_id: str,
    data_sha256: str,
    lineage: dict[str, str],
) -> Registration:
    """Log the winner as a model in its run and register a version; the champion gate compares the
    selection metric under a protocol that pins the data, the split and the evaluation. A run that
    is already a version of the model (a resumed sweep whose driver died after registering) is not
    registered again."""
    existing = client.search_model_versions(f"name = '{config.registered_name}' and run_id = '{winner.run_id}'")
    if existing:
        version = client.get_model_version(
            config.registered_name, str(existing[0].version)
        )  # search results carry no aliases
        alias = next(iter(version.aliases), "no alias")
        return Registration(
            config.registered_name, str(version.version), alias, None, "already registered from this trial's run"
        )
    protocol = {
        **EIGEN_PROTOCOL.as_dict(),
        "split": splits.source,
        "val_frames": len(splits.val),
        "test_frames": len(splits.test),
        "data_sha256": data_sha256,
    }
    model_uri = log_depth_model(model.cpu(), winner.run_id, uri)
    return register_version(
        client,
        uri,
        model_uri,
        config.registered_name,
        selection=(config.metric, winner.val_metrics[config.metric]),
        test_metrics=winner.test_metrics,
        protocol=protocol,
        tags={
            "sweep_run_id": sweep_run_id,
            "run_id": winner.run_id,
            "trial_id": winner.trial_id,
            "data_sha256": data_sha256,
            "profile": config.profile,
            "variant": str(config.variant),
            **{f"param_{k}": str(v) for k, v in winner.params.items()},
            **{key.removeprefix("depthtune."): value for key, value in lineage.items()},
        },
    )


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
            {
                "depthtune.best_epoch": int(metrics["epoch"]) + 1,
                f"depthtune.best_{config.metric}": metrics[config.metric],
            }
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
        logger.info(
            "closed trial run %s left RUNNING by an earlier driver (%s, %d epochs filled in)", run_id, status, filled
        )


def best_finished_result(results: tune.ResultGrid, config: SweepConfig) -> tune.Result:
    """The trial with the best epoch among those that trained their whole budget (ASHA-stopped
    trials only when none did): a stopped trial's early score is not a finished result."""
    usable = [r for r in results if r.error is None and r.metrics and config.metric in r.metrics_dataframe]
    finished = [r for r in usable if r.metrics.get("training_iteration", 0) >= config.epochs]
    candidates = finished or usable
    if not candidates:
        raise RuntimeError(
            f"every trial of the sweep failed or diverged before its first epoch; see the trial errors under "
            f"{results.experiment_path} and the trials' runs in MLflow (tag {DIVERGED_TAG})"
        )
    pick = min if config.mode == "min" else max
    return pick(candidates, key=lambda r: float(getattr(r.metrics_dataframe[config.metric], config.mode)()))


def run_sweep(config: SweepConfig, *, resume: bool = False) -> SweepOutcome:
    """Run (or with ``resume`` continue) a sweep; returns the best trial and where results are."""
    if config.tracking_uri:
        check_tracking_uri(config.tracking_uri)
    storage = Path(config.storage_path).resolve()
    name = config.name or (
        _latest_sweep(storage, config.model) if resume else f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    state = load_state(storage / name)
    if resume and (state is None or not tune.Tuner.can_restore(str(storage / name))):
        raise FileNotFoundError(f"nothing to resume: no sweep named {name!r} under {storage}")
    if resume and state.get("registered"):
        raise FileExistsError(
            f"sweep {name!r} under {storage} already finished and registered {state['registered']}: nothing to resume"
        )
    if not resume and (storage / name).exists() and config.name:
        raise FileExistsError(
            f"a sweep named {name!r} already exists under {storage}; pass --resume or choose another name"
        )
    data = resolve_data(
        config.data,
        synthetic_path=config.synthetic_path,
        synthetic_frames=config.synthetic_frames,
        workers=config.synthetic_workers,
    )
    setup = model_setup(config.profile, config.model, config.variant)
    config.variant = setup.variant
    config.train = {"model_cfg": setup.model_cfg, "lr_multipliers": setup.lr_multipliers, **config.train}
    train_extra: dict[str, Any] = {"data": str(data.resolve()), "splits_file": config.splits_file}
    arrays = read_nyu(data)
    check_room(storage, _sweep_bytes(config), "storage_path")
    if not config.tracking_uri:
        check_room(Path.cwd(), LOCAL_STORE_BYTES, "the local tracking store (./mlflow.db, ./mlruns) in")
    if not resume:
        name = _claim_name(storage, name, explicit=config.name is not None)
    experiment_dir = storage / name
    data_sha256 = file_sha256(data)

    with ExitStack() as stack:
        stack.enter_context(_sigterm_as_sigint())
        uri = _tracking_uri(config, stack, experiment_dir)
        client = MlflowClient(uri)
        experiment_id = _experiment_id(client, config.experiment_name)
        base = _base_model(config, state, uri)
        lineage = base.tags() if base else {}
        if base:
            train_extra["net12_checkpoint"] = base.pinned
        splits = data_splits(config.trial_config(config.baseline_params, **train_extra), arrays.scenes)
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
                    "split": splits.source,
                    "split_frames": f"train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}",
                    "paper_settings": json.dumps(config.paper_settings, sort_keys=True),
                    "profile": config.profile,
                    "variant": config.variant,
                    "git_commit": git_commit(),
                    **({"net12_model": base.reference} if base else {}),
                    **_versions(),
                },
                tags={"depthtune.kind": "sweep", "depthtune.host": platform.node(), **lineage},
            )
            client.log_dict(parent.run_id, splits.describe(arrays.scenes), "splits.json")
            state = {"parent_run_id": parent.run_id, **({"base_model": base.pinned} if base else {})}
        else:
            parent = RunLogger.resume(client, state["parent_run_id"])
        save_state(experiment_dir, {**state, "tracking_uri": uri, "experiment_id": experiment_id, INTERRUPTED: False})
        stack.push(_parent_closer(parent))

        # The dataset's one copy lives in the object store: trials map it, and the driver reads it back
        # from there for the winner's test metrics instead of holding a second copy for the whole sweep.
        arrays_ref = ray.put(arrays)
        del arrays
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                sweep=config,
                arrays=arrays_ref,
                tracking={
                    "uri": uri,
                    "experiment_id": experiment_id,
                    "parent_run_id": parent.run_id,
                    "lineage": lineage,
                },
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
                        num_to_keep=config.keep_checkpoints,
                        checkpoint_score_attribute=config.metric,
                        checkpoint_score_order=config.mode,
                    ),
                    callbacks=[
                        RunStatusCallback(experiment_dir / STATE_FILE, config.epochs, EPOCH_METRICS),
                        InterruptWatch(experiment_dir),
                        CSVLoggerCallback(),
                        JsonLoggerCallback(),
                    ],
                    verbose=1,
                ),
            )
        with _tune_file_loggers_only():
            results = tuner.fit()
        close_trial_runs(client, results, config)
        if load_state(experiment_dir).get(INTERRUPTED) or not all_trials_ended(results, config):
            raise SweepInterrupted(name, storage)
        log_best_weights(client, results, config)
        arrays = ray.get(arrays_ref)
        winner, model = evaluate_trial(best_finished_result(results, config), config, client, arrays, train_extra)
        parent.set_tags({"depthtune.best_run_id": winner.run_id, "depthtune.best_trial_id": winner.trial_id})
        paper = paper_result(results, config)
        if paper is None:
            comparison = compare_with_paper(
                winner, None, config.metric, "the paper-settings trial has no checkpoint (it failed or diverged)"
            )
        elif paper.metrics[RUN_ID_KEY] == winner.run_id:
            comparison = compare_with_paper(winner, winner, config.metric)
        else:
            comparison = compare_with_paper(
                winner, evaluate_trial(paper, config, client, arrays, train_extra)[0], config.metric
            )
        log_paper_comparison(parent, winner, comparison, config.metric)
        with _uninterrupted():
            registration = register_winner(
                config, client, uri, winner, model, splits, parent.run_id, data_sha256, lineage
            )
            save_state(
                experiment_dir,
                {**load_state(experiment_dir), "registered": f"{registration.name} v{registration.version}"},
            )
        dashboard = write_sweep_dashboard(load_sweep(client, parent.run_id), experiment_dir / DASHBOARD_FILE)
        client.log_artifact(parent.run_id, str(dashboard))
        outcome = SweepOutcome(
            sweep_run_id=parent.run_id,
            experiment_id=experiment_id,
            tracking_uri=uri,
            results_path=experiment_dir,
            trials=len(results),
            metric=config.metric,
            splits=splits,
            winner=winner,
            paper=comparison,
            registration=registration,
            dashboard=dashboard,
        )
    return outcome


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _test_text(metrics: dict[str, float]) -> str:
    return f"abs_rel={metrics['abs_rel']:.4f}, rmse={metrics['rmse']:.4f}, delta1={metrics['delta1']:.4f}"


def paper_lines(outcome: SweepOutcome) -> list[str]:
    """The summary's comparison of the winner with the paper-settings trial."""
    comparison, metric = outcome.paper, outcome.metric
    if comparison.paper is None:
        return [f"paper settings: no result to compare with ({comparison.missing})"]
    paper = comparison.paper
    lines = [
        f"paper settings (trial {paper.trial_id}: {_params_text(paper.params)}): best epoch {paper.best_epoch}: "
        f"{metric}={paper.val_metrics[metric]:.4f}; test split: {_test_text(paper.test_metrics)}",
    ]
    if paper.run_id == outcome.winner.run_id:
        lines.append(
            "  the paper's settings won this sweep: no sampled setting beat them on validation within this budget"
        )
    else:
        lines.append(
            f"  gain over the paper's settings (positive = tuning helped): validation {metric} "
            f"{100 * comparison.gains[metric]:+.1f}%, test abs_rel {100 * comparison.gains['test_abs_rel']:+.1f}%, "
            f"test rmse {100 * comparison.gains['test_rmse']:+.1f}%, "
            f"test delta1 {100 * comparison.gains['test_delta1']:+.1f}%"
        )
    return lines


def summary_text(outcome: SweepOutcome, config: SweepConfig) -> str:
    """What the user sees at the end: the winner, the paper-settings trial, which split chose and
    which is reported, and where to look."""
    winner, metric = outcome.winner, outcome.metric
    val = ", ".join(
        f"{k}={winner.val_metrics[k]:.4f}"
        for k in dict.fromkeys((metric, "val_abs_rel", "val_rmse", "val_delta1"))
        if k in winner.val_metrics
    )
    splits = outcome.splits
    if config.tracking_uri and config.tracking_uri.startswith(("http://", "https://")):
        ui = (
            f"open {config.tracking_uri} "
            "(the tracking server's UI; from a laptop through an SSH tunnel, docs/cluster.md)"
        )
    elif config.tracking_uri:
        ui = (
            f"{sys.executable} -m mlflow ui --backend-store-uri {config.tracking_uri}   "
            "(then open http://127.0.0.1:5000)"
        )
    else:
        # this interpreter's mlflow: the command works in a shell where the environment is not activated
        ui = f"cd {Path.cwd()} && {sys.executable} -m mlflow ui   (then open http://127.0.0.1:5000)"
    return "\n".join(
        [
            f"sweep {config.experiment_name}: {outcome.trials} trials, results in {outcome.results_path}",
            f"chosen on validation {metric} ({len(splits.val)} frames, split {splits.source}: no scene in two splits); "
            f"the test split ({len(splits.test)} frames) is reported, never used to choose",
            f"best trial {winner.trial_id} (MLflow run {winner.run_id}): {_params_text(winner.params)}",
            f"  best epoch {winner.best_epoch}: {val}",
            f"  checkpoint: {winner.checkpoint}",
            f"  test split: {_test_text(winner.test_metrics)}",
            *paper_lines(outcome),
            f"registered {outcome.registration.name} version {outcome.registration.version} as "
            f"@{outcome.registration.alias} ({outcome.registration.reason}): load it with "
            f'depthtune.load_model("{outcome.registration.name}@{outcome.registration.alias}")',
            f"sweep run id: {outcome.sweep_run_id} (experiment {outcome.experiment_id})",
            f"dashboard: {outcome.dashboard} (also an artifact of the sweep run)",
            f"look at it: {ui}",
        ]
    )
