"""A real sweep: Ray Tune (Optuna TPE + ASHA) on a local Ray, every trial a nested run in a real
MLflow server in front of the embedded SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import PAPER_SETTINGS, SEARCH_SPACE, SWEEP_SPACE, run_in, sweep_config
from depthtune.checkpoints import load_checkpoint
from depthtune.sweep.summary import summary_text
from depthtune.tracking.loading import load_model
from depthtune.tracking.previews import GRID_KEY
from depthtune.tracking.runs import EXPERIMENT_KIND

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("finished_sweep")]


def test_parent_and_one_nested_run_per_trial_with_every_epoch(finished_sweep):
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([outcome.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.sweep_run_id]
    assert [p.info.run_id for p in parents] == [outcome.sweep_run_id]
    assert len(children) == outcome.trials == 4
    assert client.get_experiment(outcome.experiment_id).tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    stopped = [r for r in children if r.info.status == "KILLED"]
    assert stopped, "ASHA stopped no trial"
    for run in children:
        epochs = len(client.get_metric_history(run.info.run_id, "val_loss"))
        assert epochs == 3 if run.info.status == "FINISHED" else 1 <= epochs < 3
        for key in ("train_loss", "val_abs_rel", "val_delta1", "lr", "epoch_seconds", "images_per_second"):
            assert len(client.get_metric_history(run.info.run_id, key)) == epochs
        if run.info.status == "FINISHED":  # sampled every second; an ASHA-stopped process may end before a sample
            cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
            assert cpu and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
            assert {"system/system_memory_usage_megabytes", "system/disk_usage_percentage"} <= set(run.data.metrics)
        assert set(SEARCH_SPACE) <= set(run.data.params)
        assert run.data.tags["depthtune.sweep_run_id"] == outcome.sweep_run_id
        artifacts = workdir / "mlruns" / outcome.experiment_id / run.info.run_id / "artifacts"
        config = json.loads((artifacts / "trial_config.json").read_text())
        assert config["lr"] == float(run.data.params["lr"]) and config["epochs"] == 3
        assert {p.name for p in (artifacts / "best_model").iterdir()} == {"weights.pt", "model.json"}
        assert 1 <= int(run.data.tags["depthtune.best_epoch"]) <= epochs
        grids = sorted(int(p.name.split("+")[2]) for p in (artifacts / "images").glob(f"{GRID_KEY}+step+*.png"))
        assert grids == list(range(1, epochs))  # every 2nd epoch and the last (steps count epochs from 0)
    parent = client.get_run(outcome.sweep_run_id)
    assert {"search_space", "scheduler", "data_sha256", "git_commit", "version.ray", "paper_settings"} <= set(
        parent.data.params
    )
    for run in [parent, *children]:  # the data as MLflow's dataset input, with the split it was cut into
        (used,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert used.dataset.digest == parent.data.params["data_sha256"][:36] and used.dataset.source_type == "local"
        assert json.loads(used.dataset.source)["uri"] == parent.data.params["data"]
        profile = json.loads(used.dataset.profile)
        assert (
            f"train {profile['train']}, val {profile['val']}, test {profile['test']}"
            == parent.data.params["split_frames"]
        )
        assert [(tag.key, tag.value) for tag in used.tags] == [("mlflow.data.context", "training")]
    assert parent.data.params["metric"] == "val_abs_rel" and parent.data.params["split"].startswith(
        "random by scene(seed=0"
    )
    assert parent.data.params["scheduler"].startswith("ASHA(metric=val_abs_rel, mode=min")
    assert parent.data.tags["depthtune.best_run_id"] == outcome.winner.run_id


def test_the_sweep_logs_its_scene_disjoint_split(finished_sweep, synthetic_arrays, tmp_path):
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    logged = json.loads(Path(client.download_artifacts(outcome.sweep_run_id, "splits.json", str(tmp_path))).read_text())
    assert logged == outcome.splits.describe(synthetic_arrays.scenes)
    scenes = {name: set(logged[name]["scene_names"]) for name in ("train", "val", "test")}
    assert (
        not scenes["train"] & scenes["val"]
        and not scenes["train"] & scenes["test"]
        and not scenes["val"] & scenes["test"]
    )
    assert sum(logged[name]["frames"] for name in scenes) == len(synthetic_arrays)


def test_the_paper_settings_trial_trains_its_whole_budget_and_is_compared(finished_sweep):
    """Trial 0 runs the paper's settings, tagged; ASHA never stops it; the sweep's run records the
    winner against it on validation and test, and the summary states the gain."""
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    children = client.search_runs([outcome.experiment_id], f"tags.depthtune.sweep_run_id = '{outcome.sweep_run_id}'")
    (paper,) = [r for r in children if r.data.tags.get("depthtune.baseline") == "paper"]
    assert {k: float(paper.data.params[k]) for k in SWEEP_SPACE} == {
        "lr": 0.01,
        "momentum": 0.9,
        "step_size": 1,
        "grad_weight": 1.0,
    }
    assert paper.info.status == "FINISHED" and len(client.get_metric_history(paper.info.run_id, "val_abs_rel")) == 3
    assert min(r.info.start_time for r in children) == paper.info.start_time
    comparison = outcome.paper
    assert comparison.paper is not None and comparison.paper.run_id == paper.info.run_id
    assert "test_abs_rel" in paper.data.metrics
    metrics = client.get_run(outcome.sweep_run_id).data.metrics
    best_paper = min(m.value for m in client.get_metric_history(paper.info.run_id, "val_abs_rel"))
    assert metrics["baseline_val_abs_rel"] == pytest.approx(best_paper)
    assert metrics["winner_val_abs_rel"] <= best_paper
    assert metrics["gain_vs_paper_val_abs_rel"] == pytest.approx(
        100 * (best_paper - metrics["winner_val_abs_rel"]) / best_paper
    )
    assert metrics["gain_vs_paper_test_abs_rel"] == pytest.approx(
        100 * (metrics["baseline_test_abs_rel"] - metrics["winner_test_abs_rel"]) / metrics["baseline_test_abs_rel"]
    )
    text = summary_text(outcome, sweep_config(workdir / "synth20.mat", workdir))
    assert "chosen on validation val_abs_rel" in text and "never used to choose" in text
    assert f"paper settings (trial {comparison.paper.trial_id}" in text
    assert ("gain over the paper's settings" in text) != (comparison.paper.run_id == outcome.winner.run_id)


def test_best_trial_is_the_best_finished_one(finished_sweep):
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    best = client.get_run(outcome.winner.run_id)
    assert best.info.status == "FINISHED"
    assert (outcome.winner.checkpoint / "checkpoint.pt").is_file()
    assert set(outcome.winner.params) == set(SEARCH_SPACE)
    finished = [
        r
        for r in client.search_runs([outcome.experiment_id], f"tags.depthtune.sweep_run_id = '{outcome.sweep_run_id}'")
        if r.info.status == "FINISHED"
    ]
    best_of = {
        r.info.run_id: min(m.value for m in client.get_metric_history(r.info.run_id, "val_abs_rel")) for r in finished
    }
    assert outcome.winner.val_metrics["val_abs_rel"] == pytest.approx(min(best_of.values()))


def test_the_registered_and_logged_weights_are_each_trials_best_epoch(finished_sweep):
    """Trials checkpoint only new bests and their last epoch and Tune keeps one by score (plus the
    newest): the winner's checkpoint, its registered model and every run's ``best_model/`` are the
    epoch with the lowest val_abs_rel (the sweep's metric), not the last one."""
    workdir, outcome = finished_sweep
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    best_epoch = min(client.get_metric_history(outcome.winner.run_id, "val_abs_rel"), key=lambda m: m.value).step
    assert load_checkpoint(outcome.winner.checkpoint)["epoch"] == best_epoch == outcome.winner.best_epoch - 1
    registered = load_model("net12@champion", tracking_uri=f"sqlite:///{workdir}/mlflow.db").module
    for name, tensor in load_checkpoint(outcome.winner.checkpoint)["model"].items():
        assert torch.equal(registered.state_dict()[name], tensor), name
    for run in client.search_runs([outcome.experiment_id], f"tags.depthtune.sweep_run_id = '{outcome.sweep_run_id}'"):
        history = client.get_metric_history(run.info.run_id, "val_abs_rel")
        assert int(run.data.tags["depthtune.best_epoch"]) == min(history, key=lambda m: m.value).step + 1


def test_bad_search_range_is_refused_before_anything_starts(tmp_path, synthetic_file):
    with pytest.raises(ValueError, match="search_space.lr.low=-1"):
        sweep_config(
            synthetic_file, tmp_path, search_space={**SEARCH_SPACE, "lr": {"type": "loguniform", "low": -1, "high": 1}}
        )
    assert not (tmp_path / "mlflow.db").exists()


def test_winner_is_registered_and_loadable(finished_sweep):
    workdir, outcome = finished_sweep
    assert (outcome.registration.name, outcome.registration.version, outcome.registration.alias) == (
        "net12",
        "1",
        "champion",
    )
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    version = client.get_model_version("net12", "1")
    assert version.run_id == outcome.winner.run_id
    assert version.tags["sweep_run_id"] == outcome.sweep_run_id and float(version.tags["test_abs_rel"]) > 0
    assert float(version.tags["val_abs_rel"]) == pytest.approx(outcome.winner.val_metrics["val_abs_rel"], rel=1e-5)
    protocol = json.loads(version.tags["eval_protocol"])
    assert protocol["selection_metric"] == "val_abs_rel" and protocol["split"] == outcome.splits.source
    assert protocol["val_frames"] == len(outcome.splits.val) and "data_sha256" in protocol
    assert "data_sha256" in version.tags and "param_lr" in version.tags
    assert "test_abs_rel" in client.get_run(outcome.winner.run_id).data.metrics


def test_fresh_process_in_the_sweep_folder_loads_the_winner_by_name(finished_sweep):
    """What a user does next: a new process in that folder, MLFLOW_TRACKING_URI unset (MLflow's
    default sqlite:///mlflow.db), pickle loading forbidden; both loading paths agree."""
    workdir, _ = finished_sweep
    script = textwrap.dedent(
        """
        import numpy as np, mlflow, depthtune
        image = np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        ours = depthtune.load_model("net12@champion").predict(image)
        theirs = mlflow.pyfunc.load_model("models:/net12@champion").predict(image)
        assert ours.shape == (480, 640) and (ours > 0).all()
        np.testing.assert_allclose(theirs, ours, rtol=1e-5)
        print("LOADED", mlflow.get_tracking_uri())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and f"LOADED sqlite:///{workdir}/mlflow.db" in out.stdout, out.stderr[-3000:]


def test_worse_second_sweep_leaves_the_champion_alone(finished_sweep, synthetic_file):
    workdir, first = finished_sweep
    # Barely trained from a 0.1 m starting guess: certainly worse than the first sweep's winner. Its
    # one trial (the baseline, here set to the same hopeless rate) loads in a worker process (as the
    # GPU profiles do), forked with the object store's arrays.
    hopeless = {**SWEEP_SPACE, "lr": {"type": "loguniform", "low": 1e-7, "high": 2e-7}}
    train = {
        "epochs": 1,
        "batch_size": 8,
        "num_workers": 1,
        "model_cfg": {"input_size": [64, 80], "width": 0.125, "init_depth": 0.1},
    }
    second = run_in(
        workdir,
        sweep_config(
            synthetic_file,
            workdir / "ray_results",
            name="hopeless",
            num_samples=1,
            search_space=hopeless,
            train=train,
            paper_settings={**PAPER_SETTINGS, "lr": 1.5e-7},
        ),
    )
    assert second.winner.val_metrics["val_abs_rel"] > first.winner.val_metrics["val_abs_rel"]
    assert "val_abs_rel" in second.registration.reason
    assert (second.registration.version, second.registration.alias) == ("2", "challenger")
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert str(client.get_model_version_by_alias("net12", "champion").version) == "1"


def test_eight_concurrent_trials_on_the_embedded_store(tmp_path, synthetic_file, local_ray):
    """8 trials at once through the sweep's local server in front of ./mlflow.db: no lock errors,
    every epoch of every trial recorded."""
    train = {"epochs": 2, "batch_size": 8, "model_cfg": {"input_size": [64, 80], "width": 0.125}}
    config = sweep_config(
        synthetic_file,
        tmp_path / "ray_results",
        name="eight",
        num_samples=8,
        max_concurrent=8,
        cpus_per_trial=0.25,
        grace_period=2,
        train=train,
    )
    outcome = run_in(tmp_path, config)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    children = [r for r in client.search_runs([outcome.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 8 and {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    server_log = (tmp_path / "ray_results" / "eight" / "mlflow-server.log").read_text()
    assert "database is locked" not in server_log


def test_net3_sweep_refines_the_registered_net12_and_records_it(finished_sweep, net3_sweep):
    workdir, _ = finished_sweep
    outcome = net3_sweep
    uri = f"sqlite:///{workdir}/mlflow.db"
    client = MlflowClient(uri)
    net12 = client.get_model_version_by_alias("net12", "champion")
    lineage = {"base_model": f"models:/net12/{net12.version}", "base_model_run_id": net12.run_id}
    assert (outcome.registration.name, outcome.registration.alias) == ("net3", "champion")
    version = client.get_model_version("net3", outcome.registration.version)
    assert {k: version.tags[k] for k in lineage} == lineage and version.tags[
        "base_model_requested"
    ] == "models:/net12@champion"
    parent = client.get_run(outcome.sweep_run_id)
    assert parent.data.params["net12_model"] == "models:/net12@champion"
    runs = client.search_runs([outcome.experiment_id])
    assert len(runs) == 3 and all(r.data.tags["depthtune.base_model"] == lineage["base_model"] for r in runs)
    refined = load_model("net3@champion", tracking_uri=uri).module  # the registered Net3 holds its Net12
    base = load_model(lineage["base_model"], tracking_uri=uri).module
    for name, tensor in base.state_dict().items():
        assert torch.equal(refined.net12.state_dict()[name], tensor), name
    for run in runs:  # the trials' best_model/ and checkpoints hold scale 3 and name the Net12 instead
        artifacts = workdir / "mlruns" / outcome.experiment_id / run.info.run_id / "artifacts" / "best_model"
        if run.data.tags.get("mlflow.parentRunId"):
            assert json.loads((artifacts / "model.json").read_text())["base_model"] == lineage["base_model"]
            assert not any(k.startswith("net12.") for k in torch.load(artifacts / "weights.pt", weights_only=True))
    assert load_checkpoint(outcome.winner.checkpoint)["base_model"] == lineage["base_model"]


def test_a_diverging_trial_ends_at_once_as_failed_and_the_sweep_goes_on(tmp_path, synthetic_file, local_ray):
    """Seeded training diverges again at the same epoch, so a trial that diverges after reporting an
    epoch is not retried (max_failures 2): it ends with the epochs it reported, its run FAILED and
    tagged with the reason, and the trials that train normally still produce the winner. (Tiny Net12
    with BatchNorm, the cpu profile's variant, on this data: lr 0.3 diverges in epoch 2, lr 0.6 and
    above in epoch 1.)"""
    wild = {**SWEEP_SPACE, "lr": {"type": "loguniform", "low": 1e-3, "high": 0.32}}
    train = {"epochs": 2, "batch_size": 8, "model_cfg": {"input_size": [64, 80], "width": 0.125, "batch_norm": True}}
    config = sweep_config(
        synthetic_file,
        tmp_path / "ray_results",
        name="wild",
        num_samples=4,
        max_failures=2,
        grace_period=2,
        search_space=wild,
        train=train,
    )
    outcome = run_in(tmp_path, config)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    children = [r for r in client.search_runs([outcome.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    diverged = [r for r in children if "depthtune.diverged" in r.data.tags]
    assert diverged and len(diverged) < len(children) == 4
    for run in diverged:
        assert run.info.status == "FAILED"
        assert "epoch 2" in run.data.tags["depthtune.diverged"] and "diverged" in run.data.tags["depthtune.diverged"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0]
    assert {r.info.status for r in children if r not in diverged} == {"FINISHED"}
    assert outcome.winner.run_id not in {r.info.run_id for r in diverged}
    assert not list(outcome.results_path.rglob("error.txt")), "a diverged trial was handled as an error (and retried)"
