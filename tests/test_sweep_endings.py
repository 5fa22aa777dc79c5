"""How a sweep ends when a user stops it, resumes it, starts two at once, or gives it bad input, each
through the `depthtune` command as a user runs it, with real Ray and a real MLflow server: a clear
exit code, clear run statuses, and a registry that only ever holds finished results, once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import PAPER_SETTINGS, SWEEP_SPACE, TINY
from depthtune.serve.processes import free_port
from depthtune.sweep.console import QUIET_MLFLOW

pytestmark = pytest.mark.slow

MODEL_CFG = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["net12"].items()}


def _config(directory: Path, data: Path, **overrides) -> Path:
    values = {
        "model": "net12",
        "experiment": "endings",
        "data": str(data),
        "num_samples": 3,
        "max_concurrent": 1,
        "cpus_per_trial": 1,
        "gpus_per_trial": 0,
        "grace_period": 4,
        "seed": 5,
        "preview_frames": 0,
        "search_space": SWEEP_SPACE,
        "paper_settings": PAPER_SETTINGS,
        "train": {"epochs": 4, "batch_size": 8, "model_cfg": MODEL_CFG},
        **overrides,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _environment() -> dict[str, str]:
    """This process's environment without what points a sweep elsewhere or quiets its console (an
    in-process sweep of this test session sets QUIET_MLFLOW here)."""
    left_out = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "DEPTHTUNE_STORAGE_PATH", *QUIET_MLFLOW)
    return {k: v for k, v in os.environ.items() if k not in left_out}


def _tune(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "depthtune.cli", "tune", "net12", "--profile", "cpu", *args],
        cwd=cwd,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(driver: subprocess.Popen, timeout: float = 420) -> str:
    try:
        output, _ = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        output, _ = driver.communicate()
        raise AssertionError(f"the sweep did not end within {timeout:.0f} s:\n{output[-4000:]}") from None
    return output


def _versions(client: MlflowClient, name: str = "net12") -> list:
    return client.search_model_versions(f"name = '{name}'")


def test_ctrl_c_registers_nothing_then_resume_registers_once_and_a_finished_sweep_is_not_resumed(
    tmp_path, synthetic_file
):
    config = _config(tmp_path, synthetic_file)
    store = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    driver = _tune(tmp_path, "--config", str(config), "--name", "sig")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:  # until a trial has trained an epoch
            experiment = store.get_experiment_by_name("endings") if (tmp_path / "mlflow.db").exists() else None
            runs = (
                store.search_runs([experiment.experiment_id], "tags.`depthtune.trial_id` != ''") if experiment else []
            )
            if any(store.get_metric_history(r.info.run_id, "val_abs_rel") for r in runs):
                break
            time.sleep(0.5)
        assert driver.poll() is None, driver.communicate()[0][-4000:]
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends: the whole foreground group
        output = _finish(driver)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, output[-4000:]
    assert "sweep sig was interrupted before all its trials ended: nothing was evaluated or registered" in output
    assert (
        f"Continue it with: depthtune tune net12 --resume --name sig --storage-path {tmp_path / 'ray_results'}"
        in output
    )
    experiment = store.get_experiment_by_name("endings")
    runs = store.search_runs([experiment.experiment_id])
    (sweep,) = [r for r in runs if r.data.tags.get("depthtune.kind") == "sweep"]
    assert sweep.info.status == "KILLED"
    trials = [r for r in runs if r is not sweep]
    assert trials, "no trial had started"
    for run in trials:
        # FINISHED only when Tune had its whole budget; an epoch MLflow holds but Tune never got is
        # retrained on --resume
        epochs = len(store.get_metric_history(run.info.run_id, "val_abs_rel"))
        assert run.info.status == "KILLED" or (run.info.status == "FINISHED" and epochs == 4), (
            run.info.run_name,
            run.info.status,
            epochs,
        )
    assert not _versions(store)

    resumed = _tune(tmp_path, "--config", str(config), "--name", "sig", "--resume")
    output = _finish(resumed)
    assert resumed.returncode == 0, output[-4000:]
    (version,) = _versions(store)
    assert str(version.version) == "1" and str(store.get_model_version_by_alias("net12", "champion").version) == "1"
    runs = store.search_runs([experiment.experiment_id])
    assert len(runs) == 4  # the sweep run and 3 trials, no duplicates
    assert {r.info.status for r in runs} == {
        "FINISHED"
    }  # ASHA's grace period is the whole budget: no trial stops early
    for run in runs:
        if run.info.run_id != sweep.info.run_id:
            assert [m.step for m in store.get_metric_history(run.info.run_id, "val_abs_rel")] == [0, 1, 2, 3]
    assert version.run_id == store.get_run(sweep.info.run_id).data.tags["depthtune.best_run_id"]

    again = _tune(tmp_path, "--config", str(config), "--name", "sig", "--resume")
    output = _finish(again)
    assert again.returncode == 2, output[-4000:]
    assert "sweep 'sig'" in output and "already finished and registered net12 v1: nothing to resume" in output
    assert len(_versions(store)) == 1


def test_two_sweeps_started_together_in_a_fresh_folder_both_finish_apart(tmp_path, synthetic_file):
    config = _config(
        tmp_path,
        synthetic_file,
        num_samples=2,
        grace_period=2,
        train={"epochs": 2, "batch_size": 8, "model_cfg": MODEL_CFG},
    )
    drivers = [_tune(tmp_path, "--config", str(config), *flags) for flags in ([], ["--verbose"])]
    outputs = [_finish(driver) for driver in drivers]
    for driver, output in zip(drivers, outputs):
        assert driver.returncode == 0, output[-4000:]
    quiet, verbose = outputs  # the default console: a status table, a line per ended trial, the summary
    assert len(re.findall(r"trial \w+ finished after 2/2 epochs: best val_abs_rel \d\.\d{4}", quiet)) == 2
    for noise in (
        "View run",
        "Checkpoint successfully created",
        "completed after 2 iterations",
        "started with configuration",
    ):
        assert noise not in quiet and noise in verbose, noise
    assert "registered net12 version" in quiet and len(quiet.splitlines()) < len(verbose.splitlines()) / 2
    folders = sorted(p.name for p in (tmp_path / "ray_results").iterdir())
    assert len(folders) == 2 and len(set(folders)) == 2
    store = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = store.get_experiment_by_name("endings")
    sweeps = store.search_runs([experiment.experiment_id], "tags.`depthtune.kind` = 'sweep'")
    assert sorted(s.info.run_name for s in sweeps) == folders and {s.info.status for s in sweeps} == {"FINISHED"}
    for sweep in sweeps:
        trials = store.search_runs([experiment.experiment_id], f"tags.`depthtune.sweep_run_id` = '{sweep.info.run_id}'")
        assert len(trials) == 2
    assert sorted(int(v.version) for v in _versions(store)) == [1, 2]


def test_a_bad_data_file_fails_before_anything_starts_and_leaves_nothing(tmp_path):
    bad = tmp_path / "not_nyu.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, a v5 file and not the labelled one" + bytes(200))
    config = _config(tmp_path, bad)
    work = tmp_path / "work"
    work.mkdir()
    driver = _tune(work, "--config", str(config))
    output = _finish(driver, timeout=120)
    assert driver.returncode == 2, output[-4000:]
    assert f"{bad} is an older MAT-file" in output and "Traceback" not in output
    assert not list(work.iterdir()), "a run, a database or a results folder was left behind"


def test_an_unreachable_tracking_server_is_an_error_within_seconds(tmp_path, synthetic_file):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    driver = _tune(tmp_path, "--data", str(synthetic_file), "--tracking-uri", uri)
    output = _finish(driver, timeout=60)
    assert driver.returncode == 2 and f"tracking server {uri} did not answer within 5 s" in output, output[-4000:]
    assert not (tmp_path / "ray_results").exists()
    image = tmp_path / "room.png"
    from PIL import Image

    Image.new("RGB", (64, 48)).save(image)
    predict = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthtune.cli",
            "predict",
            str(image),
            "--model",
            "net12@champion",
            "--out",
            str(tmp_path / "d.npy"),
            "--tracking-uri",
            uri,
        ],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert predict.returncode == 2 and f"tracking server {uri} did not answer within 5 s" in predict.stderr, (
        predict.stderr[-3000:]
    )
