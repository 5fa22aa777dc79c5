"""A sweep on a real multi-node Ray cluster on this machine: a head and two worker nodes (separate
``ray start`` raylets, each with one CPU and one ``fake_gpu`` standing in for a GPU), a real
``mlflow server`` on PostgreSQL with basic-auth and proxied artifacts, Tune storage on a shared
path, and the sweep driven through ``RAY_ADDRESS`` by the CLI as a user would. Faults, in one sweep
(each sweep here costs about two minutes of CI): a worker node's raylet is killed, the tracking
server is down for 30 s, the driver is killed and resumed."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import PAPER_SETTINGS, SEARCH_SPACE, TINY
from depthtune.serve.auth import BasicAuth
from depthtune.serve.server import TrackingServer
from local_cluster import LocalRayCluster

pytestmark = pytest.mark.slow

MODEL_CFG = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["net12"].items()}
OUTAGE_S = 30
EPOCHS = 8
# ASHA may stop a trial first at epoch GRACE: the victim must be killed well before that, or it is
# stopped on worker-b and never moves.
GRACE = 6


@pytest.fixture(scope="module")
def credentials() -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": "depthtune-admin", "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(18)}


@pytest.fixture(scope="module")
def tracking(postgres, tmp_path_factory, credentials):
    """The head's tracking service: mlflow server on PostgreSQL, basic-auth, proxied artifacts."""
    postgres.create_database("mlflow_cluster")
    postgres.create_database("mlflow_cluster_auth")
    state = tmp_path_factory.mktemp("tracking")
    auth = BasicAuth(
        credentials["MLFLOW_TRACKING_USERNAME"],
        credentials["MLFLOW_TRACKING_PASSWORD"],
        database_uri=postgres.uri("mlflow_cluster_auth"),
    )
    server = TrackingServer(
        postgres.uri("mlflow_cluster"),
        state / "artifacts",
        proxy_artifacts=True,
        auth=auth,
        state_dir=state,
        log_path=state / "server.log",
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(credentials):
    """Head (0 CPUs) + worker-a + worker-b (1 CPU, 1 fake_gpu each). Every node carries the
    tracking credentials in its environment, as ray_cluster.yaml gives them to real nodes."""
    env = {
        **os.environ,
        **credentials,
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    cluster = LocalRayCluster(env)
    try:
        cluster.start_head()
        cluster.add_worker("worker-a", cpus=1, resources={"fake_gpu": 1})
        cluster.add_worker("worker-b", cpus=1, resources={"fake_gpu": 1})
        yield cluster
    finally:
        cluster.stop()


def _config_file(directory: Path, data: Path, **overrides) -> Path:
    values = {
        "model": "net12",
        "experiment": "cluster",
        "data": str(data),
        "num_samples": 4,
        "max_concurrent": 2,
        "cpus_per_trial": 1,
        "gpus_per_trial": 0,
        "resources_per_trial": {"fake_gpu": 1},
        "grace_period": GRACE,
        "reduction_factor": 2,
        "max_failures": 3,
        "seed": 11,
        "preview_every": 4,
        "preview_frames": 2,
        "search_space": SEARCH_SPACE,
        "paper_settings": PAPER_SETTINGS,
        "train": {"epochs": EPOCHS, "batch_size": 8, "model_cfg": MODEL_CFG},
        **overrides,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _driver(
    cluster: LocalRayCluster, tracking: TrackingServer, config: Path, storage: Path, name: str, log: Path, *extra: str
):
    """``depthtune tune net12`` on the cluster, as a user runs it: RAY_ADDRESS and the tracking URI
    from the environment, the shared storage as a flag."""
    # Epochs here last about a second: snapshot Tune's experiment every second (its default is 10 s
    # or more), or a killed driver's last snapshot may name checkpoints already pruned (docs/sweeps.md, "Faults").
    env = {
        **cluster.env,
        "RAY_ADDRESS": cluster.address,
        "MLFLOW_TRACKING_URI": tracking.uri,
        "TUNE_GLOBAL_CHECKPOINT_S": "1",
    }
    command = [
        sys.executable,
        "-m",
        "depthtune.cli",
        "tune",
        "net12",
        "--config",
        str(config),
        "--profile",
        "cpu",
        "--storage-path",
        str(storage),
        "--name",
        name,
        *extra,
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent, start_new_session=True
        )


def _trial_query(client: MlflowClient, sweep_name: str) -> tuple[str, str] | None:
    """(experiment id, filter) that finds the trial runs of sweep ``sweep_name``, once its run exists."""
    experiment = client.get_experiment_by_name("cluster")
    if experiment is None:
        return None
    parents = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{sweep_name}'")
    if not parents:
        return None
    return experiment.experiment_id, f"tags.`depthtune.sweep_run_id` = '{parents[0].info.run_id}'"


def _trial_runs(client: MlflowClient, sweep_name: str, query: tuple[str, str] | None = None) -> list:
    """The trial runs of sweep ``sweep_name`` (``query``: its ``_trial_query``, to save two requests)."""
    query = query or _trial_query(client, sweep_name)
    return client.search_runs([query[0]], query[1]) if query else []


def _steps(client: MlflowClient, run_id: str, key: str = "val_loss") -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


def _wait(condition, timeout: float, what: str, driver: subprocess.Popen, log: Path, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver.poll() is not None:
            raise AssertionError(
                f"the driver exited ({driver.returncode}) while waiting for {what}:\n{log.read_text()[-4000:]}"
            )
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-4000:]}")


def _finish(driver: subprocess.Popen, log: Path, timeout: float = 420) -> None:
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        raise AssertionError(f"the sweep did not finish in {timeout:.0f} s:\n{log.read_text()[-6000:]}") from None
    assert driver.returncode == 0, log.read_text()[-6000:]


def _assert_one_complete_run_per_trial(runs: list, client: MlflowClient, epochs: int) -> None:
    trial_ids = [run.data.tags["depthtune.trial_id"] for run in runs]
    assert len(trial_ids) == len(set(trial_ids)) == 4, trial_ids
    for run in runs:
        assert run.info.status in ("FINISHED", "KILLED"), (run.info.run_name, run.info.status)
        steps = _steps(client, run.info.run_id)
        assert steps == list(range(len(steps))), f"{run.info.run_name}: epochs {steps} (missing or repeated)"
        assert len(steps) == epochs if run.info.status == "FINISHED" else 1 <= len(steps) < epochs
        for key in ("train_loss", "val_abs_rel", "lr"):
            assert _steps(client, run.info.run_id, key) == steps, (run.info.run_name, key)


def _epochs_checkpointed(trial_dir: Path) -> int:
    """Epochs a trial has checkpointed: its newest ``checkpoint_NNNNNN`` (Tune prunes older ones)."""
    indices = [int(path.name.rsplit("_", 1)[1]) for path in trial_dir.glob("checkpoint_*")]
    return max(indices) + 1 if indices else 0


def test_sweep_spans_both_workers_and_survives_a_dead_worker_a_tracking_outage_and_a_dead_driver(
    cluster, tracking, synthetic_file, tmp_path, monkeypatch, credentials
):
    """One sweep, the faults in turn: worker-b's raylet is SIGKILLed while both workers train, then
    the driver is SIGKILLed and ``--resume`` goes on, then the tracking server is down for 30 s."""
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    client = MlflowClient(tracking.uri)
    nodes = cluster.alive_nodes()
    config, log = _config_file(tmp_path, synthetic_file), tmp_path / "driver.log"
    driver = _driver(cluster, tracking, config, tmp_path / "shared", "faults", log)
    try:
        query = {}

        def two_workers_busy_b_early():
            """A trial on each worker, worker-b's with a checkpoint and epochs left to lose (1 to
            GRACE - 3 done: at least three more before ASHA's rung at GRACE could stop it).
            Epochs are counted from the checkpoints on the shared storage: quicker than MLflow."""
            query["faults"] = query.get("faults") or _trial_query(client, "faults")  # then one request a poll
            runs = [r for r in _trial_runs(client, "faults", query["faults"]) if r.info.status == "RUNNING"]
            done = {
                r.info.run_id: _epochs_checkpointed(
                    tmp_path / "shared" / "faults" / f"net12_{r.data.tags['depthtune.trial_id']}"
                )
                for r in runs
            }
            on = {
                name: [r for r in runs if r.data.tags.get("depthtune.node_name") == name]
                for name in ("worker-a", "worker-b")
            }
            early = [r for r in on["worker-b"] if 1 <= done[r.info.run_id] <= GRACE - 3]
            return (on["worker-a"] + early) if on["worker-a"] and early else None

        running = _wait(two_workers_busy_b_early, 180, "trials running on both workers", driver, log, poll=0.1)
        assert {r.data.tags["depthtune.node_id"] for r in running} >= {nodes["worker-a"], nodes["worker-b"]}
        victim = next(r for r in running if r.data.tags["depthtune.node_name"] == "worker-b")
        cluster.nodes[2].kill_raylet()
        victim_dir = tmp_path / "shared" / "faults" / f"net12_{victim.data.tags['depthtune.trial_id']}"
        killed_after = _epochs_checkpointed(victim_dir)
        time.sleep(3)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()

    resumed_at = time.time()
    driver = _driver(cluster, tracking, config, tmp_path / "shared", "faults", log, "--resume")
    try:

        def training_early():
            """A trial of the resumed sweep with epochs to go (1-2 of 8 checkpointed since the resume)."""
            for trial in (tmp_path / "shared" / "faults").glob("net12_*"):
                try:
                    if (
                        1 <= _epochs_checkpointed(trial) <= 2
                        and max(p.stat().st_mtime for p in trial.glob("checkpoint_*")) > resumed_at
                    ):
                        return True
                except (FileNotFoundError, ValueError):  # Tune pruned a checkpoint while we looked
                    continue
            return False

        _wait(training_early, 180, "the resumed sweep training", driver, log, poll=0.1)
        tracking.stop()
        outage = (time.time(), time.time() + OUTAGE_S)
        time.sleep(OUTAGE_S)
        tracking.start()
        assert driver.poll() is None, "the sweep ended during the tracking outage"
        _finish(driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    runs = _trial_runs(client, "faults")
    _assert_one_complete_run_per_trial(runs, client, epochs=EPOCHS)
    experiment = client.get_experiment_by_name("cluster")
    parent = client.search_runs([experiment.experiment_id], "attributes.run_name = 'faults'")
    assert [p.info.status for p in parent] == ["FINISHED"]
    assert {r.data.tags["depthtune.node_id"] for r in runs} <= set(nodes.values())
    moved = client.get_run(victim.info.run_id)
    assert moved.data.tags["depthtune.node_name"] == "worker-a", (
        f"the dead worker's trial did not move to the live one (it had checkpointed {killed_after} epochs when killed)"
    )
    assert int(moved.data.tags["depthtune.restored_after_epoch"]) >= 1, (
        "the moved trial started over instead of resuming"
    )
    grids = [a for a in client.list_artifacts(runs[0].info.run_id, "images") if a.path.endswith(".png")]
    assert grids, "prediction grids were not uploaded through the proxied artifact store"
    produced_during_outage = [
        m
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "val_loss")
        if outage[0] * 1000 <= m.timestamp <= outage[1] * 1000
    ]
    assert produced_during_outage, "no epoch ended while the server was down: the outage missed the training"
