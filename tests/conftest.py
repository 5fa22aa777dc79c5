"""Shared fixtures: a small synthetic file in the NYU layout and tiny model configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The suite writes nothing under $HOME but caches. MLflow's telemetry keeps an installation id in
# ~/.config/mlflow/telemetry.json (and tries the network); DO_NOT_TRACK turns it off, is read when
# mlflow is first imported (below, through depthtune), and survives the tests' environments that
# drop MLFLOW_* variables for the servers they start.
os.environ["DO_NOT_TRACK"] = "true"

from depthtune.data import generate_dataset, read_nyu
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.driver import run_sweep
from depthtune.sweep.summary import SweepOutcome
from local_cluster import write_ray_token

# AWS's recommended NFS options for mounting EFS, which ray_cluster.yaml's mount must use.
AWS_EFS_MOUNT_OPTIONS = {
    "nfsvers=4.1",
    "rsize=1048576",
    "wsize=1048576",
    "hard",
    "timeo=600",
    "retrans=2",
    "noresvport",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--alone",
        choices=("skip", "only"),
        help="leave out, or run only, the tests marked alone (scripts/test.sh runs them by themselves)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply ``--alone``: the tests marked so depend on the machine's memory use staying put, which
    tests running beside them would move."""
    choice = config.getoption("--alone")
    if choice is None:
        return
    keep = [item for item in items if (item.get_closest_marker("alone") is not None) == (choice == "only")]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


TINY = {
    "net12": {"input_size": (64, 80), "width": 0.125},
    "net3": {"width": 0.125},
    "fcrn": {"input_size": (64, 80), "width": 0.125, "blocks": (1, 1, 1, 1)},
}

SEARCH_SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.95},
    "step_size": {"type": "int", "low": 2, "high": 8},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}
# The space of the tests' sweeps (whose budgets are 1-3 epochs).
SWEEP_SPACE = {**SEARCH_SPACE, "step_size": {"type": "int", "low": 1, "high": 3}}
# The baseline trial of the tests' sweeps: inside SEARCH_SPACE (and its narrower step ranges) at
# the epoch budgets the tests use.
PAPER_SETTINGS = {
    "lr": 0.01,
    "momentum": 0.9,
    "step_fraction": 0.34,
    "grad_weight": 1.0,
    "source": "tests: a point inside SEARCH_SPACE",
}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests are many small ops on a 2-core machine: one intra-op thread is faster and deterministic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def _session_ray_token(tmp_path_factory):
    """Every Ray the suite starts, in this process or in a child (which inherits the environment),
    uses a token made for this session and removed after it. Ray 2.60's ``ray.init()`` turns token
    auth on for a new local cluster and, finding no token, writes one to ``~/.ray/auth_token``: the
    suite must neither write a secret into the home directory nor pass only because one is there.
    Only the path is set: ``ray`` is imported already, and it reads ``RAY_AUTH_MODE`` at import, so
    the mode is left to ``ray.init()``, which turns token auth on in this process as well."""
    previous = os.environ.get("RAY_AUTH_TOKEN_PATH")
    token = write_ray_token(tmp_path_factory.mktemp("ray-token"))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    yield
    if previous is None:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    else:
        os.environ["RAY_AUTH_TOKEN_PATH"] = previous
    token.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory):
    """20 synthetic frames of 7 rooms written in the NYU labelled-file layout (split by room 14/3/3)."""
    return generate_dataset(tmp_path_factory.mktemp("data") / "synth20.mat", 20, seed=3)


@pytest.fixture(scope="session")
def synthetic_arrays(synthetic_file):
    return read_nyu(synthetic_file)


def sweep_config(data, storage, **overrides) -> SweepConfig:
    """A 4-trial Net12 sweep of tiny models, 3 epochs each; ASHA (grace 1, factor 2) stops some."""
    values = {
        "model": "net12",
        "data": str(data),
        "num_samples": 4,
        "max_concurrent": 1,
        "grace_period": 1,
        "reduction_factor": 2,
        "seed": 7,
        "storage_path": str(storage),
        "system_metrics_every": 1,
        "search_space": SWEEP_SPACE,
        "paper_settings": PAPER_SETTINGS,
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "model_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["net12"].items()},
        },
    }
    values.update(overrides)
    return SweepConfig.from_dict(values, profile="cpu")


def run_in(directory: Path, config: SweepConfig, **how) -> SweepOutcome:
    """Run a sweep (``how``: run_sweep's resume, extend, warm_start) with ``directory`` as the
    working directory (where ./mlflow.db lives)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        return run_sweep(config, **how)
    finally:
        os.chdir(previous)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for every in-process sweep of the session (run_sweep reuses a running Ray
    instead of starting and stopping its own, which costs about 10 s each time)."""
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory, synthetic_file, local_ray) -> tuple[Path, SweepOutcome]:
    """One real Net12 sweep (real Ray, real MLflow server on ./mlflow.db) shared by the tests; its
    trials checkpoint only new bests and their last epoch, and Tune keeps one checkpoint by score."""
    workdir = tmp_path_factory.mktemp("sweep")
    train = {"epochs": 3, "batch_size": 8, "checkpoint_every": 3, "model_cfg": dict(TINY["net12"])}
    return workdir, run_in(
        workdir, sweep_config(synthetic_file, workdir / "ray_results", keep_checkpoints=1, train=train)
    )


@pytest.fixture(scope="session")
def net3_sweep(finished_sweep, synthetic_file) -> SweepOutcome:
    """A 2-trial Net3 sweep on the registered net12@champion, in the same store."""
    workdir, _ = finished_sweep
    train = {"epochs": 2, "batch_size": 8, "model_cfg": dict(TINY["net3"])}
    return run_in(
        workdir,
        sweep_config(synthetic_file, workdir / "ray_results", model="net3", name="net3", num_samples=2, train=train),
    )


def require_postgres() -> Path:
    """The PostgreSQL server programs' directory (and psycopg2 importable), or skip the test with
    the reason; with DEPTHTUNE_REQUIRE_POSTGRES=1 (CI) a missing PostgreSQL fails it instead."""
    import importlib.util

    from depthtune.serve.postgres import find_postgres_bin

    bin_dir = find_postgres_bin()
    problem = None
    if bin_dir is None:
        problem = (
            "PostgreSQL server programs (initdb, postgres, pg_ctl) not found: install Debian's postgresql "
            "(apt-get install postgresql) or set DEPTHTUNE_PG_BIN"
        )
    elif importlib.util.find_spec("psycopg2") is None:
        problem = "psycopg2 is not installed: pip install -e '.[dev]' (or '.[platform]')"
    if problem:
        if os.environ.get("DEPTHTUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{problem} (DEPTHTUNE_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(problem)
    return bin_dir


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL on 127.0.0.1 and a free port for the whole session, stopped at the end.
    ``postgres.create_database("mlflow_<something>")`` then ``postgres.uri(name)`` gives a
    backend store URI; use a database name of your own per test module."""
    import secrets
    import shutil
    import tempfile

    from depthtune.serve.postgres import LocalPostgres

    bin_dir = require_postgres()
    # Under /tmp rather than pytest's tmp_path: when we are root the server runs as the `postgres`
    # user, which cannot enter pytest's 0700 folders.
    directory = Path(tempfile.mkdtemp(prefix="depthtune-pg-"))
    os.chmod(directory, 0o711)
    server = LocalPostgres(
        directory / "cluster",
        secrets.token_urlsafe(18),
        bin_dir=bin_dir,
        settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
