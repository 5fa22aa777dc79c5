"""The sweep's Optuna study lives in an RDB storage: another process opens it with
``optuna.load_study``, an extension continues it (trial numbers go on, TPE models every earlier
trial, no second paper trial) and a warm start seeds a new study with its finished trials."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import sweep_config
from depthtune.sweep.searcher import search_algorithm
from depthtune.sweep.study import METRIC_ATTR, StudyTarget, describe_study, finished_trials, storage_url


def _finish(searcher, trial_id: str, value: float, epochs: int = 4) -> dict:
    """One trial through the searcher: suggested, ``epochs`` reports of ``value``, completed."""
    params = searcher.suggest(trial_id)
    for epoch in range(1, epochs + 1):
        searcher.on_trial_result(trial_id, {"val_abs_rel": value, "training_iteration": epoch})
    searcher.on_trial_complete(trial_id, {"val_abs_rel": value, "training_iteration": epochs})
    return params


def _sweep(tmp_path: Path, **overrides):
    return sweep_config(tmp_path / "x.mat", tmp_path, seed=5, startup_trials=3, train={"epochs": 4}, **overrides)


def _first_run(config, target: StudyTarget, values: list[float]) -> None:
    searcher = search_algorithm(config, target.open(config), target.name)
    for number, value in enumerate(values):
        _finish(searcher, f"t{number}", value)


def test_the_study_is_in_the_sweeps_folder_and_loads_elsewhere(tmp_path):
    config = _sweep(tmp_path)
    target = StudyTarget(storage_url(config, tmp_path / "net12-a"), "net12-a")
    assert target.url == f"sqlite:///{tmp_path / 'net12-a' / 'optuna.db'}"
    (tmp_path / "net12-a").mkdir()
    _first_run(config, target, [0.5, 0.4, 0.3])
    study = optuna.load_study(study_name="net12-a", storage=target.url)
    assert [t.number for t in study.trials] == [0, 1, 2] and study.user_attrs[METRIC_ATTR] == "val_abs_rel"
    assert study.trials[0].params == config.baseline_params  # the paper's settings come first
    assert describe_study(target) == f"net12-a (3 trials: 3 COMPLETE): optuna-dashboard {target.url}"
    elsewhere = _sweep(tmp_path, optuna_storage="sqlite:////srv/optuna.db")
    assert storage_url(elsewhere, tmp_path / "net12-a") == "sqlite:////srv/optuna.db"
    with pytest.raises(ValueError, match="optuna_storage='optuna.db': expected an RDB URL"):
        _sweep(tmp_path, optuna_storage="optuna.db")


def _extend(tmp_path: Path, config, history: str, values: list[float]) -> dict:
    """A first run with ``values``, then the first trial of its extension; returns that trial's params."""
    target = StudyTarget(f"sqlite:///{tmp_path / history}.db", "net12-a")
    _first_run(config, target, values)
    extension = search_algorithm(config, target.open(config), target.name, extension=1)
    suggested = _finish(extension, "e0", 0.25)
    study = optuna.load_study(study_name=target.name, storage=target.url)
    assert [t.number for t in study.trials] == list(range(len(values) + 1))
    assert study.trials[-1].params == suggested and study.trials[-1].state == TrialState.COMPLETE
    return suggested


def test_an_extension_continues_the_study_and_tpe_models_every_earlier_trial(tmp_path):
    config = _sweep(tmp_path)
    good = _extend(tmp_path, config, "good", [0.5 - 0.02 * n for n in range(12)])
    bad = _extend(tmp_path, config, "bad", [0.28 + 0.02 * n for n in range(12)])
    assert not config.is_baseline(good) and not config.is_baseline(bad)  # the paper trial ran in the first run
    assert good != bad  # TPE modelled the 12 earlier trials: their values chose the draw


def test_a_warm_start_seeds_a_new_study_with_the_finished_trials_in_its_space(tmp_path):
    config = _sweep(tmp_path)
    source = StudyTarget(f"sqlite:///{tmp_path / 'old.db'}", "old")
    searcher = search_algorithm(config, source.open(config), source.name)
    for number, value in enumerate([0.5, 0.4, 0.3, 0.35]):
        _finish(searcher, f"t{number}", value)
    _finish(searcher, "stopped", 0.9, epochs=1)  # ASHA-stopped: pruned, not a finished trial
    narrower = _sweep(
        tmp_path, search_space={**config.search_space, "momentum": {"type": "uniform", "low": 0.85, "high": 0.95}}
    )
    seed = finished_trials(source.url, "old", narrower)
    inside = [
        t for t in optuna.load_study(study_name="old", storage=source.url).trials if t.state == TrialState.COMPLETE
    ]
    assert len(seed.points) + seed.skipped == len(inside) == 4 and seed.points[0] == config.baseline_params
    assert seed.describe().startswith(f"sweep old: {len(seed.points)} finished trials")
    target = StudyTarget(f"sqlite:///{tmp_path / 'new.db'}", "new")
    warm = search_algorithm(narrower, target.open(narrower), target.name, warm_start=seed)
    assert narrower.is_baseline(warm.suggest("paper"))  # every sweep still runs the paper's settings first
    study = optuna.load_study(study_name="new", storage=target.url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.params for t in complete] == seed.points and [t.value for t in complete] == seed.values
    with pytest.raises(ValueError, match="selected on val_abs_rel, this sweep on val_rmse"):
        finished_trials(source.url, "old", _sweep(tmp_path, metric="val_rmse"))
    with pytest.raises(FileNotFoundError, match="no Optuna study"):
        finished_trials(f"sqlite:///{tmp_path / 'missing.db'}", "old", config)
