"""Sweeps: Ray Tune with Optuna TPE (seeded, ASHA-aware) and ASHA over lr, momentum, StepLR step size
and gradient-loss weight (random search and FIFO as the brute-force comparison), the first trial
always the papers' settings. Trials are compared, stopped and registered on a validation metric of a
scene-disjoint split; the test split is evaluated for the winner and the paper trial only, to
report. The driver runs in three phases: ``prepare`` settles a ``SweepPlan`` (name, data, tracking,
the Net12 a Net3 refines, the sweep's run), ``fit`` runs Tune, ``finalize`` picks, tests and
registers the winner and writes the dashboard."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import platform
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import ray
from mlflow import MlflowClient
from ray import tune
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from depthtune.dashboards.sweep_page import write_sweep_dashboard
from depthtune.dashboards.sweep_record import load_sweep
from depthtune.data import NYUArrays, read_nyu
from depthtune.data.source import file_sha256, resolve_data
from depthtune.data.splits import Splits
from depthtune.evaluation import data_splits
from depthtune.profiles import model_setup
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.storage_check import check_room, checkpoint_bytes
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.console import TrialLines, quiet_process
from depthtune.sweep.errors import SweepInterrupted
from depthtune.sweep.memory_kills import memory_kills_fail_one_trial
from depthtune.sweep.plan import SweepPlan, TrackingTarget
from depthtune.sweep.registration import log_paper_comparison, register_winner
from depthtune.sweep.results import (
    all_trials_ended,
    best_finished_result,
    close_trial_runs,
    evaluate_trial,
    log_best_weights,
    paper_comparison,
)
from depthtune.sweep.run_status import RunStatusCallback
from depthtune.sweep.searcher import describe_search, search_algorithm, trial_scheduler
from depthtune.sweep.signals import sigterm_as_sigint, tune_file_loggers_only, uninterrupted
from depthtune.sweep.state import (
    STATE_FILE,
    InterruptWatch,
    SweepState,
    load_config,
    load_state,
    save_config,
    save_state,
)
from depthtune.sweep.study import StudyTarget, WarmStart, describe_study, finished_trials, storage_url
from depthtune.sweep.summary import SweepOutcome
from depthtune.sweep.trial import run_trial
from depthtune.tracking.datasets import log_dataset
from depthtune.tracking.lineage import BaseModel, resolve_base_model
from depthtune.tracking.reachable import check_tracking_uri
from depthtune.tracking.runs import RunLogger, training_experiment

logger = logging.getLogger(__name__)

LOCAL_STORE_BYTES = 200 * 10**6  # runs, prediction grids and each trial's best weights of a CPU sweep: tens of MB
DASHBOARD_FILE = "sweep_dashboard.html"
PACKAGES = ("depthtune", "torch", "ray", "mlflow", "optuna", "numpy", "h5py")


@dataclass(frozen=True)
class _Location:
    """Where a sweep lives under the storage path, and its state when it is resumed."""

    storage: Path
    name: str
    state: SweepState | None


def run_sweep(
    config: SweepConfig,
    *,
    resume: bool = False,
    extend: str | None = None,
    warm_start: str | None = None,
    verbose: bool = False,
) -> SweepOutcome:
    """Run a sweep, or with ``resume`` continue an interrupted one, or with ``extend`` add
    ``config.num_samples`` trials to the finished sweep of that name (its own settings, study and
    run); ``warm_start`` names an earlier sweep whose finished trials the new sweep's TPE starts
    from. Returns the best trial and where results are. Every refusal (a name taken, nothing to
    resume or extend, no room) comes before anything starts. Unless ``verbose``, the console shows a
    status table, a line per ended trial and the summary (depthtune.sweep.console)."""
    if not verbose:
        quiet_process()
    if config.tracking_uri:
        check_tracking_uri(config.tracking_uri)
    location = _locate(config, resume, extend)
    if extend:
        config = _extension_config(config, extend)
    seed = _warm_start(config, location.storage, warm_start) if warm_start else None
    asked, config = config, _with_variant(config)
    logger.info(
        "sweeping %s (%s profile, %s variant): %d trials, %d at a time, %d epochs each",
        config.model,
        config.profile,
        config.variant,
        config.num_samples,
        config.max_concurrent,
        config.epochs,
    )
    data = resolve_data(
        config.data,
        synthetic_path=config.synthetic_path,
        synthetic_frames=config.synthetic_frames,
        workers=config.synthetic_workers,
    )
    arrays = read_nyu(data)
    _check_room(config, location.storage)
    if not resume and not extend:
        name = _claim_name(location.storage, location.name, explicit=config.name is not None)
        location = dataclasses.replace(location, name=name)
        save_config(location.storage / name, asked)
    with ExitStack() as stack:
        stack.enter_context(sigterm_as_sigint())
        plan = prepare(config, location, data, arrays, stack, extend=bool(extend), warm_start=seed)
        plan = dataclasses.replace(plan, verbose=verbose)
        # The dataset's one copy lives in the object store: trials map it, and the driver reads it back
        # from there for the winner's test metrics instead of holding a second copy for the whole sweep.
        arrays_ref = ray.put(arrays)
        del arrays
        results = fit(plan, arrays_ref, resume)
        return finalize(plan, results, arrays_ref)


def prepare(
    config: SweepConfig,
    location: _Location,
    data: Path,
    arrays: NYUArrays,
    stack: ExitStack,
    *,
    extend: bool = False,
    warm_start: WarmStart | None = None,
) -> SweepPlan:
    """Start what the sweep needs for as long as ``stack`` is open (the tracking server, Ray, the
    sweep's run, which ends FINISHED, KILLED on Ctrl-C or FAILED) and settle the plan; ``extend``
    opens the next extension of a finished sweep."""
    experiment_dir = location.storage / location.name
    uri = _tracking_uri(config, stack, experiment_dir)
    client = MlflowClient(uri)
    experiment_id = training_experiment(client, config.experiment_name)  # once, before any trial logs
    base = _base_model(config, location.state, uri)
    baseline = config.trial_config(
        config.baseline_params, data=str(data), net12_checkpoint=base.pinned if base else None
    )
    splits = data_splits(baseline, arrays.scenes)
    if not ray.is_initialized():
        ray.init(address=config.ray_address, log_to_driver=True)  # None: RAY_ADDRESS, else a local Ray
        stack.callback(ray.shutdown)
    data_sha256 = file_sha256(data)
    study = StudyTarget(storage_url(config, experiment_dir), location.name)
    state = location.state
    if state is None:
        parent = RunLogger.start(
            client,
            experiment_id,
            name=location.name,
            params={
                **_sweep_params(config, data, data_sha256, splits, base),
                "optuna_storage": study.url,
                "optuna_study": study.name,
                **({"warm_start": warm_start.describe()} if warm_start else {}),
            },
            tags={"depthtune.kind": "sweep", "depthtune.host": platform.node(), **(base.tags() if base else {})},
        )
        client.log_dict(parent.run_id, splits.describe(arrays.scenes), "splits.json")
        log_dataset(client, parent.run_id, data, data_sha256, splits)
        state = SweepState(parent.run_id, base_model=base.pinned if base else None)
    else:
        parent = RunLogger.resume(client, state.parent_run_id)
    if extend:
        state = state.but(extensions=state.extensions + 1, registered=None)
        parent.set_tags({f"depthtune.extension_{state.extensions}": f"{config.num_samples} more trials"})
        logger.info("extension %d of sweep %s: %d more trials", state.extensions, location.name, config.num_samples)
    save_state(experiment_dir, state.but(tracking_uri=uri, experiment_id=experiment_id, interrupted=False))
    stack.push(_parent_closer(parent))
    return SweepPlan(
        config=config,
        name=location.name,
        storage=location.storage,
        data=data.resolve(),
        data_sha256=data_sha256,
        splits=splits,
        tracking=TrackingTarget(uri, experiment_id, parent.run_id, base.tags() if base else {}),
        base_model=base,
        study=study,
        extension=state.extensions,
        warm_start=warm_start,
    )


def fit(plan: SweepPlan, arrays_ref: ray.ObjectRef, resume: bool) -> tune.ResultGrid:
    """Run (or continue) Tune over the plan's trials, then close every trial's run from Tune's
    record; an interrupted sweep raises ``SweepInterrupted`` (resume it with ``--resume``)."""
    config = plan.config
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan, arrays=arrays_ref),
        {**config.resources_per_trial, "cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial},
    )
    if resume:
        logger.info("resuming sweep %s from %s", plan.name, plan.tune_dirs[-1])
        tuner = tune.Tuner.restore(str(plan.tune_dirs[-1]), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(plan, trainable)
    with tune_file_loggers_only(), memory_kills_fail_one_trial():
        results = tuner.fit()
    close_trial_runs(MlflowClient(plan.tracking.uri), results, config.epochs)
    if load_state(plan.experiment_dir).interrupted or not all_trials_ended(results, config):
        raise SweepInterrupted(plan.name, plan.storage)
    return results


def finalize(plan: SweepPlan, results: tune.ResultGrid, arrays_ref: ray.ObjectRef) -> SweepOutcome:
    """Log every trial's best weights, test the winner and the paper trial, register the winner
    (uninterruptible: the sweep's commit point) and write the dashboard."""
    config, client = plan.config, MlflowClient(plan.tracking.uri)
    parent = RunLogger(client, plan.tracking.parent_run_id)
    log_best_weights(client, results, config)
    results = [*earlier_results(plan), *results]
    arrays = ray.get(arrays_ref)
    winner, model = evaluate_trial(best_finished_result(results, config), plan, client, arrays)
    parent.set_tags({"depthtune.best_run_id": winner.run_id, "depthtune.best_trial_id": winner.trial_id})
    comparison = paper_comparison(results, winner, plan, client, arrays)
    log_paper_comparison(parent, winner, comparison, config.metric, step=plan.extension)
    with uninterrupted():
        registration = register_winner(plan, client, winner, model)
        state = load_state(plan.experiment_dir)
        save_state(plan.experiment_dir, state.but(registered=f"{registration.name} v{registration.version}"))
    dashboard = write_sweep_dashboard(load_sweep(client, parent.run_id), plan.experiment_dir / DASHBOARD_FILE)
    client.log_artifact(parent.run_id, str(dashboard))
    return SweepOutcome(
        sweep_run_id=parent.run_id,
        experiment_id=plan.tracking.experiment_id,
        tracking_uri=plan.tracking.uri,
        results_path=plan.experiment_dir,
        trials=len(results),
        metric=config.metric,
        splits=plan.splits,
        winner=winner,
        paper=comparison,
        registration=registration,
        dashboard=dashboard,
        study=describe_study(plan.study),
    )


def _locate(config: SweepConfig, resume: bool, extend: str | None = None) -> _Location:
    """The sweep's folder: a new timestamped name, ``config.name``, the sweep to extend, or for a
    bare ``--resume`` the newest sweep of the model; refuses to resume what is not there or
    already registered, to extend what has not finished, and never reuses an explicit name."""
    storage = Path(config.storage_path).resolve()
    name = (
        extend
        or config.name
        or (_latest_sweep(storage, config.model) if resume else f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    )
    state = load_state(storage / name)
    if extend and (state is None or not state.registered):
        raise FileNotFoundError(
            f"nothing to extend: no sweep named {name!r} under {storage}"
            if state is None
            else f"sweep {name!r} under {storage} has not finished: finish it with --resume before extending it"
        )
    tune_dir = storage / name / f"extend-{state.extensions}" if state and state.extensions else storage / name
    if resume and (state is None or not tune.Tuner.can_restore(str(tune_dir))):
        raise FileNotFoundError(f"nothing to resume: no sweep named {name!r} under {storage}")
    if resume and state.registered:
        raise FileExistsError(
            f"sweep {name!r} under {storage} already finished and registered {state.registered}: nothing to resume"
        )
    if not resume and (storage / name).exists() and config.name:
        raise FileExistsError(
            f"a sweep named {name!r} already exists under {storage}; pass --resume or choose another name"
        )
    return _Location(storage, name, state)


def _extension_config(config: SweepConfig, name: str) -> SweepConfig:
    """The settings sweep ``name`` started with, its trials' placement and count taken from ``config``:
    an extension trains, selects and compares exactly as the sweep it extends."""
    saved = load_config(Path(config.storage_path).resolve() / name)
    placement = ("num_samples", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "resources_per_trial")
    where = ("tracking_uri", "ray_address", "storage_path")
    return dataclasses.replace(saved, name=name, **{key: getattr(config, key) for key in placement + where})


def _warm_start(config: SweepConfig, storage: Path, source: str) -> WarmStart:
    """The finished trials of sweep ``source`` (under the same storage path) for the new sweep's TPE."""
    seed = finished_trials(storage_url(config, storage / source), source, config)
    if not seed.points:
        raise ValueError(f"--warm-start: sweep {source!r} has no finished trial inside this sweep's search space")
    logger.info("TPE starts from %s", seed.describe())
    return seed


def earlier_results(plan: SweepPlan) -> list[tune.Result]:
    """The trials of the sweep's earlier Tune runs (an extension picks its winner among all of them)."""
    return [
        result
        for directory in plan.tune_dirs[:-1]
        for result in ResultGrid(
            ExperimentAnalysis(str(directory), default_metric=plan.config.metric, default_mode=plan.config.mode)
        )
    ]


def _with_variant(config: SweepConfig) -> SweepConfig:
    """The config with its profile's and variant's layers and per-layer rates in ``train`` (the
    train block's own values win) and the variant resolved."""
    setup = model_setup(config.profile, config.model, config.variant)
    train = {"model_cfg": setup.model_cfg, "lr_multipliers": setup.lr_multipliers, **config.train}
    return dataclasses.replace(config, variant=setup.variant, train=train)


def _check_room(config: SweepConfig, storage: Path) -> None:
    """Refuse to start when the storage path cannot hold what the trials running at once keep (each
    trial's kept checkpoints, its newest and one being written), or the local store its runs."""
    per_trial = checkpoint_bytes(config.model, config.train["model_cfg"]) * (config.keep_checkpoints + 2)
    check_room(storage, per_trial * config.max_concurrent, "storage_path")
    if not config.tracking_uri:
        check_room(Path.cwd(), LOCAL_STORE_BYTES, "the local tracking store (./mlflow.db, ./mlruns) in")


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


def _latest_sweep(storage: Path, model: str) -> str:
    """The name of the most recently started sweep of ``model`` under ``storage`` (for a bare --resume)."""
    sweeps = sorted((p.parent for p in storage.glob(f"{model}-*/{STATE_FILE}")), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise FileNotFoundError(f"nothing to resume: no {model} sweep under {storage}")
    return sweeps[-1].name


def _tracking_uri(config: SweepConfig, stack: ExitStack, log_dir: Path) -> str:
    """The given tracking URI (it must answer), or a local ``mlflow server`` in front of the
    embedded SQLite store."""
    if config.tracking_uri:
        return config.tracking_uri
    backend, artifacts = embedded_store(Path.cwd())
    server = stack.enter_context(TrackingServer(backend, artifacts, log_path=log_dir / "mlflow-server.log"))
    return server.uri


def _base_model(config: SweepConfig, state: SweepState | None, uri: str) -> BaseModel | None:
    """The Net12 under a Net3 sweep, pinned to one version; a resumed sweep keeps the version it began with."""
    if config.model != "net3":
        return None
    reference = (state.base_model if state else None) or config.net12_model
    base = resolve_base_model(reference, uri, expected="net12")
    logger.info(
        "net3 refines %s (asked for %s; trained in run %s)", base.pinned, config.net12_model, base.source_run_id
    )
    return base


def _sweep_params(
    config: SweepConfig, data: Path, data_sha256: str, splits: Splits, base: BaseModel | None
) -> dict[str, object]:
    """What the sweep's run records as parameters: the search, the data and split, the settings
    compared against, and the code and package versions that ran it."""
    return {
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
    }


def _new_tuner(plan: SweepPlan, trainable) -> tune.Tuner:
    """A Tuner for a new sweep: the searcher and scheduler, the selection metric, Tune's checkpoint
    bookkeeping by that metric, and the callbacks that close runs and record an interruption."""
    config = plan.config
    searcher = search_algorithm(
        config, plan.study.open(config), plan.study.name, extension=plan.extension, warm_start=plan.warm_start
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=trial_scheduler(config),
            metric=config.metric,
            mode=config.mode,
            num_samples=config.num_samples,
            max_concurrent_trials=config.max_concurrent,
            trial_name_creator=lambda trial: f"{config.model}_{trial.trial_id}",
            trial_dirname_creator=lambda trial: f"{config.model}_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=plan.tune_dirs[-1].name,
            storage_path=str(plan.tune_dirs[-1].parent),
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=config.keep_checkpoints,
                checkpoint_score_attribute=config.metric,
                checkpoint_score_order=config.mode,
            ),
            callbacks=[
                RunStatusCallback(plan.experiment_dir, config.epochs),
                InterruptWatch(plan.experiment_dir),
                CSVLoggerCallback(),
                JsonLoggerCallback(),
                *([] if plan.verbose else [TrialLines(config.metric, config.epochs, list(config.space))]),
            ],
            verbose=1 if plan.verbose else 0,
        ),
    )


def _parent_closer(parent: RunLogger):
    """Exit handler ending the sweep's run: FINISHED, KILLED on Ctrl-C, FAILED on an error."""

    def close(exc_type, exc, tb) -> bool:
        status = "FINISHED" if exc_type is None else "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        parent.finish(status)
        return False

    return close


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
