"""The shared tracking service: a real `mlflow server` with basic-auth on a real (private)
PostgreSQL, artifacts proxied to a folder, restarted on the same port, and `depthtune serve`
driving a detached one through its pid file. Nothing is mocked."""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from conftest import require_postgres
from depthtune.serve import service
from depthtune.serve.auth import BasicAuth
from depthtune.serve.postgres import LocalPostgres
from depthtune.serve.processes import free_port, process_group_members
from depthtune.serve.server import TrackingServer
from depthtune.serve.uris import redact_uri

ADMIN = "depthtune-admin"


def _cmdlines(pgid: int) -> dict[int, str]:
    lines = {}
    for pid in process_group_members(pgid):
        try:
            lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            pass
    return lines


def _login(monkeypatch, username: str | None, password: str | None) -> None:
    for name, value in (("MLFLOW_TRACKING_USERNAME", username), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def tracking(postgres, tmp_path_factory):
    """mlflow server with basic-auth on the session's PostgreSQL (databases of this module's own),
    artifacts proxied to a tmp folder."""
    root = tmp_path_factory.mktemp("platform")
    backend = postgres.create_database("mlflow_platform")
    auth_db = postgres.create_database("mlflow_platform_auth")
    admin_password = secrets.token_urlsafe(18)
    server = TrackingServer(
        backend,
        root / "artifacts",
        proxy_artifacts=True,
        log_path=root / "server.log",
        auth=BasicAuth(ADMIN, admin_password, database_uri=auth_db),
        state_dir=root / "state",
    )
    try:
        server.start()
        yield SimpleNamespace(
            server=server, password=admin_password, artifacts=root / "artifacts", root=root, postgres=postgres
        )
    finally:
        server.stop()


def test_basic_auth_refuses_strangers_and_proxies_the_admins_artifacts(tracking, monkeypatch, tmp_path):
    server = tracking.server
    _login(monkeypatch, None, None)
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(server.uri).search_experiments()
    _login(monkeypatch, ADMIN, tracking.password + "x")
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(server.uri).search_experiments()

    _login(monkeypatch, ADMIN, tracking.password)
    client = MlflowClient(server.uri)
    experiment = client.create_experiment("platform-probe")
    run = client.create_run(experiment)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric("val_loss", 1.0 / (step + 1), now, step) for step in range(5)])
    (tmp_path / "weights.txt").write_text("tensor")
    client.log_artifact(run_id, str(tmp_path / "weights.txt"))
    client.set_terminated(run_id)

    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a path clients write to
    (on_disk,) = tracking.artifacts.rglob("weights.txt")
    assert on_disk.read_text() == "tensor" and run_id in on_disk.parts
    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == list(range(5)) and history[-1].value == pytest.approx(0.2)
    downloaded = client.download_artifacts(run_id, "weights.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "tensor"

    # A user the admin creates gets default_permission (READ) on what it did not create.
    import mlflow.server

    user, user_password = "reader", secrets.token_urlsafe(15)
    mlflow.server.get_app_client("basic-auth", tracking_uri=server.uri).create_user(user, user_password)
    _login(monkeypatch, user, user_password)
    reader = MlflowClient(server.uri)
    assert reader.get_run(run_id).data.metrics["val_loss"] == pytest.approx(0.2)
    with pytest.raises(MlflowException, match="403"):
        reader.log_metric(run_id, "vandalism", 1.0)
    own = reader.create_experiment("readers-own")  # ... and may create (and then manage) its own
    reader.create_run(own)


def test_health_needs_no_credentials(tracking):
    with urllib.request.urlopen(f"{tracking.server.uri}/health", timeout=5) as response:
        assert response.status == 200


def test_secrets_stay_off_command_lines_and_logs(tracking):
    server = tracking.server
    db_password = tracking.postgres.password
    lines = _cmdlines(server.pid)
    assert len(lines) >= 2, lines  # mlflow server + uvicorn (+ job runners)
    for pid, line in lines.items():
        assert tracking.password not in line, f"admin password on the command line of pid {pid}"
        assert db_password not in line, f"database password on the command line of pid {pid}"
    assert "--app-name basic-auth" in lines[server.pid] and "--backend-store-uri" not in lines[server.pid]
    log = (tracking.root / "server.log").read_text()
    assert tracking.password not in log and db_password not in log
    ini = server.auth_config_path
    assert ini.stat().st_mode & 0o777 == 0o600 and (tracking.root / "state").stat().st_mode & 0o777 == 0o700
    assert "MLFLOW_AUTH_CONFIG_PATH" not in os.environ  # the server's environment only
    assert db_password not in repr(server) and tracking.password not in repr(server)
    assert redact_uri(server.backend_store_uri).count("***") == 1


@pytest.mark.slow
def test_data_survives_a_restart_on_the_same_port(tracking, monkeypatch):
    server = tracking.server
    _login(monkeypatch, ADMIN, tracking.password)
    client = MlflowClient(server.uri)
    experiment = client.create_experiment("survives-restart")
    run_id = client.create_run(experiment).info.run_id
    client.log_metric(run_id, "before", 3.0)
    uri, old_pid = server.uri, server.pid

    server.stop()
    assert not process_group_members(old_pid)
    assert not server.healthy()
    started = time.monotonic()
    server.start()
    logging.getLogger(__name__).info("restart took %.1f s", time.monotonic() - started)
    assert server.uri == uri and server.pid != old_pid and server.healthy()
    assert client.get_run(run_id).data.metrics == {"before": 3.0}
    client.log_metric(run_id, "after", 4.0)
    assert client.get_run(run_id).data.metrics == {"before": 3.0, "after": 4.0}


def _depthtune(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depthtune.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DEPTHTUNE_"))}
    env.update(extra)
    return env


def test_serve_start_refuses_without_credentials(postgres, tmp_path):
    env = _clean_env(DEPTHTUNE_DB_PASSWORD=postgres.password)
    args = (
        "start",
        "--backend-store-uri",
        f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/mlflow_never",
        "--artifacts-destination",
        str(tmp_path / "a"),
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        str(free_port()),
    )
    result = _depthtune(*args, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "MLFLOW_TRACKING_USERNAME" in result.stderr and "MLFLOW_TRACKING_PASSWORD" in result.stderr
    result = _depthtune(
        *args, env={**env, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": "short"}, timeout=60
    )
    assert result.returncode == 2 and "12 characters" in result.stderr
    assert not (tmp_path / "state" / service.PID_FILE).exists()
    assert "mlflow_never" not in postgres.databases()


@pytest.mark.slow
def test_serve_start_status_stop_round_trip(postgres, tmp_path, monkeypatch):
    state_dir = tmp_path / "state"
    admin_password = secrets.token_urlsafe(18)
    port = free_port()
    env = _clean_env(
        MLFLOW_TRACKING_USERNAME=ADMIN,
        MLFLOW_TRACKING_PASSWORD=admin_password,
        DEPTHTUNE_DB_PASSWORD=postgres.password,
        # no password in the URI: it comes from DEPTHTUNE_DB_PASSWORD; the databases are created on demand
        DEPTHTUNE_BACKEND_STORE_URI=f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/mlflow_cli",
        DEPTHTUNE_AUTH_DATABASE_URI=f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/mlflow_cli_auth",
    )
    started = _depthtune(
        "start",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        "--state-dir",
        str(state_dir),
        "--port",
        str(port),
        "--workers",
        "1",
        env=env,
    )
    pid = None
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        uri = f"http://127.0.0.1:{port}"
        assert (
            uri in started.stdout
            and str(state_dir / service.LOG_FILE) in started.stdout
            and "serve stop" in started.stdout
        )
        assert (
            admin_password not in started.stdout + started.stderr
            and postgres.password not in started.stdout + started.stderr
        )
        pid = int((state_dir / service.PID_FILE).read_text())
        assert process_group_members(pid)  # still serving after the CLI that started it exited

        status = _depthtune("status", "--state-dir", str(state_dir), env=env, timeout=60)
        assert status.returncode == 0 and "healthy" in status.stdout and uri in status.stdout, (
            status.stdout + status.stderr
        )
        assert {"mlflow_cli", "mlflow_cli_auth"} <= set(postgres.databases())
        for line in _cmdlines(pid).values():
            assert admin_password not in line and postgres.password not in line

        _login(monkeypatch, ADMIN, admin_password)
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("from-cli"))
        client.log_metric(run.info.run_id, "x", 1.0)

        again = _depthtune(
            "start",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            env=env,
            timeout=60,
        )
        assert again.returncode == 2 and "already running" in again.stderr

        stopped = _depthtune("stop", "--state-dir", str(state_dir), env=env, timeout=60)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert not process_group_members(pid)
        assert not (state_dir / service.PID_FILE).exists() and not (state_dir / "basic_auth.ini").exists()
        pid = None
        status = _depthtune("status", "--state-dir", str(state_dir), env=env, timeout=60)
        assert status.returncode == 3 and "not running" in status.stdout
        again = _depthtune("stop", "--state-dir", str(state_dir), env=env, timeout=60)
        assert again.returncode == 0 and "no mlflow server was running" in again.stdout
    finally:
        if pid is not None and process_group_members(pid):
            service.stop_service(state_dir)


def test_serve_stop_leaves_a_stranger_alone(tmp_path):
    """A pid file naming a process that is not an mlflow server (pid reused) is never signalled."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / service.PID_FILE).write_text(f"{stranger.pid}\n")
        assert service.stop_service(state_dir) is False
        assert stranger.poll() is None and not (state_dir / service.PID_FILE).exists()
        assert service.service_status(state_dir).running is False
    finally:
        stranger.kill()
        stranger.wait()


def test_backend_uri_resolution_from_the_environment(tmp_path, caplog):
    env = {
        "DEPTHTUNE_BACKEND_STORE_URI": "postgresql://mlflow@db.internal:5432/mlflow",
        "DEPTHTUNE_DB_PASSWORD": "p@ss/w:rd%",
    }
    uri = service.resolve_backend_store_uri(None, env)
    assert uri.endswith("://mlflow:p%40ss%2Fw%3Ard%25@db.internal:5432/mlflow") and uri.startswith("postgresql")
    assert redact_uri(uri).endswith("://mlflow:***@db.internal:5432/mlflow")
    # a password already in the URI wins; a URI without a user gets none
    assert ":given@" in service.resolve_backend_store_uri("postgresql://u:given@h/db", env)
    assert service.resolve_backend_store_uri("sqlite:////tmp/x.db", env) == "sqlite:////tmp/x.db"
    with pytest.raises(ValueError, match="DEPTHTUNE_BACKEND_STORE_URI"):
        service.resolve_backend_store_uri(None, {})
    assert service.default_auth_database_uri(uri, tmp_path).endswith("@db.internal:5432/mlflow_auth")
    assert (
        service.default_auth_database_uri("sqlite:////x/mlflow.db", tmp_path)
        == f"sqlite:///{tmp_path.resolve()}/basic_auth.db"
    )
    with caplog.at_level(logging.WARNING):
        service._check_host("0.0.0.0", auth=True)
    assert "EVERY network interface" in caplog.text and "ssh -L" in caplog.text


def test_auth_ini_round_trips_through_mlflows_reader(tmp_path, monkeypatch):
    """Percent signs (URL-quoted passwords) survive configparser's interpolation in MLflow's reader."""
    from mlflow.server.auth.config import read_auth_config

    password = "pa%ss" + secrets.token_urlsafe(12)
    database = "postgresql+psycopg2://u:p%40%25x@127.0.0.1:5/mlflow_auth"
    server = TrackingServer(
        "sqlite:///unused.db",
        tmp_path / "a",
        auth=BasicAuth(ADMIN, password, database_uri=database),
        state_dir=tmp_path / "state",
    )
    env = server._auth_environment()
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", env["MLFLOW_AUTH_CONFIG_PATH"])
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    config = read_auth_config()
    assert (config.admin_username, config.admin_password, config.database_uri) == (ADMIN, password, database)
    assert config.default_permission == "READ"
    assert config.auth_cache_ttl_seconds == 60  # a checked credential is trusted a minute, not re-hashed
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert server._auth_environment()["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]  # kept
    assert configparser.ConfigParser(interpolation=None).read(env["MLFLOW_AUTH_CONFIG_PATH"])
    with pytest.raises(ValueError, match="12 characters"):
        BasicAuth(ADMIN, "short")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD"):
        BasicAuth.from_env({"MLFLOW_TRACKING_USERNAME": ADMIN})


def test_local_postgres_uri_and_errors(tmp_path):
    bin_dir = require_postgres()
    pg = LocalPostgres(tmp_path / "pg", "p@ss:w/rd", bin_dir=bin_dir, port=5999)
    assert pg.uri("mlflow_x") == "postgresql+psycopg2://depthtune:p%40ss%3Aw%2Frd@127.0.0.1:5999/mlflow_x"
    assert "p@ss" not in repr(pg)
    with pytest.raises(ValueError, match="database name"):
        pg.uri("bad-name; drop")
    with pytest.raises(ValueError, match="password"):
        LocalPostgres(tmp_path / "pg", "", bin_dir=bin_dir)
    with pytest.raises(FileNotFoundError, match="initdb"):
        LocalPostgres(tmp_path / "pg", "x" * 12, bin_dir=tmp_path / "nothing")


def test_local_postgres_databases(postgres):
    uri = postgres.create_database("mlflow_platform_probe")
    assert postgres.create_database("mlflow_platform_probe") == uri  # exists: fine
    assert "mlflow_platform_probe" in postgres.databases()
    assert postgres.running() and process_group_members(postgres.pid)
