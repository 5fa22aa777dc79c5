"""A finished sweep extended with more trials (same parent run, same Optuna study, TPE continuing),
and a new sweep warm-started from it: real Ray, real MLflow, the study in the sweep's folder."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import TINY, run_in, sweep_config
from depthtune.sweep.state import load_state

pytestmark = pytest.mark.slow


def test_extend_a_finished_sweep_then_warm_start_a_new_one(tmp_path, synthetic_file, local_ray):
    storage = tmp_path / "ray_results"
    train = {"epochs": 1, "batch_size": 8, "model_cfg": dict(TINY["net12"])}
    config = sweep_config(synthetic_file, storage, name="first", num_samples=2, scheduler="fifo", train=train)
    first = run_in(tmp_path, config)
    with pytest.raises(FileNotFoundError, match="nothing to extend: no sweep named 'missing'"):
        run_in(tmp_path, dataclasses.replace(config, name=None), extend="missing")

    extended = run_in(tmp_path, dataclasses.replace(config, name=None, num_samples=2), extend="first")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    children = client.search_runs(
        [first.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{first.sweep_run_id}'"
    )
    assert extended.sweep_run_id == first.sweep_run_id and extended.trials == len(children) == 4
    parent = client.get_run(first.sweep_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["depthtune.extension_1"] == "2 more trials"
    study_url = f"sqlite:///{storage / 'first' / 'optuna.db'}"
    study = optuna.load_study(study_name="first", storage=study_url)
    assert [t.number for t in study.trials] == [0, 1, 2, 3] and {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert sum(config.is_baseline(t.params) for t in study.trials) == 1  # the extension ran no second paper trial
    assert parent.data.params["optuna_storage"] == study_url and f"optuna-dashboard {study_url}" in extended.study
    state = load_state(storage / "first")
    assert state.extensions == 1 and state.registered and (storage / "first" / "extend-1").is_dir()
    best = min(t.value for t in study.trials)
    assert extended.winner.val_metrics[config.metric] == pytest.approx(best)  # chosen among all four trials

    second = run_in(
        tmp_path,
        dataclasses.replace(config, name="second", num_samples=1),
        warm_start="first",
    )
    seeded = optuna.load_study(study_name="second", storage=f"sqlite:///{storage / 'second' / 'optuna.db'}")
    states = [t.state for t in seeded.trials]
    assert states.count(TrialState.COMPLETE) == 5 and len(states) == 5  # 4 from "first", and its own paper trial
    assert sum(config.is_baseline(t.params) for t in seeded.trials) == 2  # first's paper trial, and its own
    run = client.get_run(second.sweep_run_id)
    assert run.data.params["warm_start"] == "sweep first: 4 finished trials"
    assert json.loads(run.data.params["search_space"]) == config.search_space
