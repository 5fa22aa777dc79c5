"""The shared tracking service of a cluster (``depthtune serve``): ``mlflow server`` with a
PostgreSQL (or any SQLAlchemy) backend store, artifacts proxied through the server to a shared
folder or object store, MLflow's basic-auth with the admin credentials from the environment,
bound to 127.0.0.1 unless told otherwise. It runs detached, remembered by a pid file and a state
file in its state directory, so the cluster head's start/stop scripts and the tests drive it the
same way; optionally a private PostgreSQL for a single head node (:mod:`depthtune.serve.postgres`).

Secrets come from the environment (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
``DEPTHTUNE_DB_PASSWORD``) and go to the server through its environment and 0600 files in the
state directory, never through a command line, and are masked in everything printed."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from depthtune.serve.auth import BasicAuth
from depthtune.serve.processes import process_cmdline, process_group_members, process_start_time, stop_process_group
from depthtune.serve.server import TrackingServer
from depthtune.serve.uris import (
    AUTH_DATABASE_NAME,
    BACKEND_ENV,
    DB_PASSWORD_ENV,
    default_auth_database_uri,
    is_postgres_uri,
    redact_uri,
    resolve_backend_store_uri,
)

if TYPE_CHECKING:
    from depthtune.serve.postgres import LocalPostgres

logger = logging.getLogger(__name__)

AUTH_DATABASE_ENV = "DEPTHTUNE_AUTH_DATABASE_URI"
STATE_DIR_ENV = "DEPTHTUNE_STATE_DIR"
PID_FILE = "mlflow-server.pid"
STATE_FILE = "mlflow-server.json"
LOG_FILE = "mlflow-server.log"
POSTGRES_STATE_FILE = "postgres.json"


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".depthtune" / "tracking")


# -- the backend database ------------------------------------------------------------------------


def ensure_postgres_database(uri: str) -> bool:
    """Check that the PostgreSQL database of ``uri`` answers; create it when it does not exist
    and the role may (True when created). Fails fast with a readable error instead of MLflow's
    connection retries."""
    try:
        import psycopg2
        from sqlalchemy.engine import make_url
    except ImportError:
        raise ValueError("PostgreSQL backend store needs psycopg2: pip install 'depthtune[platform]'") from None
    url = make_url(uri)
    params = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username,
        "password": url.password,
        "connect_timeout": 10,
        **{k: v for k, v in url.query.items() if isinstance(v, str)},
    }
    where = f"{url.host}:{url.port or 5432}/{url.database}"
    try:
        psycopg2.connect(dbname=url.database, **params).close()
        return False
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc) or f'"{url.database}"' not in str(exc):
            raise ValueError(f"cannot connect to PostgreSQL {where} as {url.username!r}: {str(exc).strip()}") from None
    try:
        connection = psycopg2.connect(dbname="postgres", **params)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{url.database}"')
        connection.close()
    except psycopg2.Error as exc:
        raise ValueError(
            f"database {where} does not exist and role {url.username!r} cannot create it: {str(exc).strip()}"
        ) from None
    logger.info("created PostgreSQL database %s", where)
    return True


# -- the server ----------------------------------------------------------------------------------


@dataclass
class ServiceConfig:
    """What ``depthtune serve start`` runs."""

    backend_store_uri: str = field(repr=False)
    artifacts_destination: str
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    auth: bool = True
    auth_database_uri: str | None = field(default=None, repr=False)
    default_permission: str = "READ"
    workers: int = 2
    allowed_hosts: str | None = None
    startup_timeout: float = 120.0


@dataclass
class ServiceStatus:
    running: bool
    healthy: bool = False
    pid: int | None = None
    uri: str | None = None
    log: str | None = None
    state_dir: str | None = None
    auth: bool | None = None
    backend: str | None = None
    artifacts: str | None = None
    started: str | None = None

    def describe(self) -> str:
        if not self.running:
            return f"mlflow server: not running (state dir {self.state_dir})"
        health = "healthy" if self.healthy else "NOT answering /health"
        return (
            f"mlflow server: running, {health}: {self.uri} (pid {self.pid}, basic-auth {'on' if self.auth else 'OFF'}, "
            f"since {self.started})\n  store {self.backend}\n  artifacts {self.artifacts}\n  log {self.log}"
        )


def _check_host(host: str, auth: bool) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_loopback:
        return
    if address is not None and address.is_unspecified:
        logger.warning(
            "binding %s: the tracking server listens on EVERY network interface of this machine%s. On a cluster "
            "bind the head's private IP instead, and reach the UI through an SSH tunnel "
            "(ssh -L 5000:127.0.0.1:5000 user@head) rather than opening the port",
            host,
            "" if auth else ", WITHOUT authentication",
        )
    elif not auth:
        logger.warning(
            "binding %s without authentication: anyone who can reach this address can read and write every run", host
        )


ARTIFACT_CHECK_KEY = ".depthtune-write-check"


def check_artifact_store(destination: str, env: Mapping[str, str] | None = None) -> None:
    """Fail now, not at a trial's first upload, when the server could not store artifacts at an
    ``s3://`` destination: write a small object under it and delete it again (the bucket exists and
    these credentials may put and delete objects there, which is what proxied uploads need). MLflow
    itself starts on a wrong bucket without a word. Uses ``MLFLOW_S3_ENDPOINT_URL`` as MLflow does;
    other URI schemes are left to MLflow."""
    env = os.environ if env is None else env
    parts = urllib.parse.urlsplit(destination)
    if parts.scheme != "s3":
        return
    bucket, prefix = parts.netloc, parts.path.strip("/")
    key = f"{prefix}/{ARTIFACT_CHECK_KEY}" if prefix else ARTIFACT_CHECK_KEY
    try:
        import boto3
    except ImportError:
        raise ValueError(f"artifact store {destination}: s3:// needs boto3: pip install 'depthtune[cluster]'") from None
    try:
        client = boto3.client("s3", endpoint_url=env.get("MLFLOW_S3_ENDPOINT_URL") or None)
        client.put_object(Bucket=bucket, Key=key, Body=b"written and deleted by depthtune serve start\n")
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:  # botocore's ClientError, NoCredentialsError, EndpointConnectionError, ...
        raise ValueError(
            f"artifact store {destination}: the tracking server could not write s3://{bucket}/{key} "
            f"({type(exc).__name__}: {exc}); check the bucket name and the head's S3 permissions"
        ) from None
    logger.info("artifact store %s: writable", destination)


def _artifacts_destination(value: str, env: Mapping[str, str]) -> str:
    if "://" in value:
        check_artifact_store(value, env)
        return value
    path = Path(value).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def build_server(
    config: ServiceConfig, env: Mapping[str, str] | None = None, stop_with_parent: bool = False
) -> TrackingServer:
    """The :class:`TrackingServer` for ``config``: credentials from ``env``, databases checked."""
    env = os.environ if env is None else env
    state_dir = Path(config.state_dir).expanduser().absolute()
    backend = resolve_backend_store_uri(config.backend_store_uri, env)
    auth = None
    if config.auth:
        auth_database = (
            config.auth_database_uri or env.get(AUTH_DATABASE_ENV) or default_auth_database_uri(backend, state_dir)
        )
        auth_database = resolve_backend_store_uri(auth_database, env)
        auth = BasicAuth.from_env(env, database_uri=auth_database, default_permission=config.default_permission)
    _check_host(config.host, config.auth)
    if is_postgres_uri(backend):
        ensure_postgres_database(backend)
    if auth and is_postgres_uri(auth.database_uri or ""):
        ensure_postgres_database(auth.database_uri)
    extra = ("--allowed-hosts", config.allowed_hosts) if config.allowed_hosts else ()
    return TrackingServer(
        backend,
        _artifacts_destination(config.artifacts_destination, env),
        proxy_artifacts=True,
        host=config.host,
        port=config.port,
        log_path=state_dir / LOG_FILE,
        startup_timeout=config.startup_timeout,
        extra_args=extra,
        auth=auth,
        state_dir=state_dir,
        stop_with_parent=stop_with_parent,
        workers=config.workers,
    )


def _read_state(state_dir: Path) -> dict | None:
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = None
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return state
    state = state or {}
    state["pid"] = pid
    return state


def _is_our_server(state: dict) -> bool:
    """Whether the pid in ``state`` is still the mlflow server we started (not a reused pid)."""
    pid = state.get("pid")
    if not pid:
        return False
    cmdline = process_cmdline(pid)
    if "mlflow" not in cmdline or "server" not in cmdline:
        return False
    recorded = state.get("proc_start_time")
    return recorded is None or recorded == process_start_time(pid)


def _forget(state_dir: Path) -> None:
    for name in (PID_FILE, STATE_FILE, "basic_auth.ini"):  # the ini holds the admin password
        (state_dir / name).unlink(missing_ok=True)


def _record(server: TrackingServer, config: ServiceConfig, state_dir: Path) -> ServiceStatus:
    status = ServiceStatus(
        running=True,
        healthy=True,
        pid=server.pid,
        uri=server.uri,
        log=str(state_dir / LOG_FILE),
        state_dir=str(state_dir),
        auth=server.auth is not None,
        backend=redact_uri(server.backend_store_uri),
        artifacts=str(server.artifact_root),
        started=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    state = {**asdict(status), "proc_start_time": process_start_time(server.pid)}
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    (state_dir / PID_FILE).write_text(f"{server.pid}\n")
    return status


def start_service(
    config: ServiceConfig, env: Mapping[str, str] | None = None, foreground: bool = False
) -> ServiceStatus:
    """Start the tracking server and wait until it answers (with auth: until the admin logs in).
    Detached (default): it keeps running after this process exits; stop it with
    :func:`stop_service`. ``foreground``: serve until SIGINT/SIGTERM, then stop it."""
    state_dir = Path(config.state_dir).expanduser().absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    previous = _read_state(state_dir)
    if previous and _is_our_server(previous):
        raise ValueError(
            f"a tracking server from {state_dir} is already running (pid {previous['pid']}, {previous.get('uri')}); "
            f"stop it first: depthtune serve stop --state-dir {state_dir}"
        )
    _forget(state_dir)
    server = build_server(config, env, stop_with_parent=foreground)
    server.start()
    status = _record(server, config, state_dir)
    if not foreground:
        return status
    print(status.describe(), flush=True)

    def _terminate(signum, _frame):
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = server.wait()
        logger.error("mlflow server exited by itself (exit %s); log %s", code, status.log)
    except KeyboardInterrupt:
        logger.info("stopping the mlflow server")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        server.stop()
        _forget(state_dir)
    return ServiceStatus(running=False, state_dir=str(state_dir))


def service_status(state_dir: str | os.PathLike) -> ServiceStatus:
    state_dir = Path(state_dir).expanduser().absolute()
    state = _read_state(state_dir)
    if not state or not _is_our_server(state):
        return ServiceStatus(running=False, state_dir=str(state_dir))
    fields = {k: v for k, v in state.items() if k in ServiceStatus.__dataclass_fields__}
    status = ServiceStatus(**{**fields, "running": True})
    if status.uri:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{status.uri}/health", timeout=3) as response:
                status.healthy = response.status == 200
        except OSError:
            status.healthy = False
    return status


def stop_service(state_dir: str | os.PathLike, timeout: float = 30.0) -> bool:
    """Stop the server recorded in ``state_dir`` (its whole process group), after checking that
    the pid is still an mlflow server; False when none was running (stale files are removed)."""
    state_dir = Path(state_dir).expanduser().absolute()
    state = _read_state(state_dir)
    if not state or not state.get("pid"):
        _forget(state_dir)
        return False
    pid = state["pid"]
    if not _is_our_server(state):
        logger.info(
            "pid %d from %s is not a running mlflow server any more: nothing to stop", pid, state_dir / PID_FILE
        )
        _forget(state_dir)
        return False
    if os.getpgid(pid) != pid:
        raise ValueError(f"pid {pid} is not the leader of its own process group; not signalling it")
    stop_process_group(pid, timeout=timeout)
    if process_group_members(pid):
        raise RuntimeError(f"mlflow server process group {pid} is still alive after SIGKILL")
    _forget(state_dir)
    logger.info("stopped mlflow server pid %d (%s)", pid, state.get("uri"))
    return True


# -- a private PostgreSQL on the head node -------------------------------------------------------


def start_postgres(
    directory: str | os.PathLike,
    port: int = 5432,
    user: str = "mlflow",
    databases: tuple[str, ...] = ("mlflow", AUTH_DATABASE_NAME),
    env: Mapping[str, str] | None = None,
) -> LocalPostgres:
    """Start (initialising on first use) a detached :class:`LocalPostgres` in ``directory`` on
    127.0.0.1:``port`` whose role ``user`` has the password ``DEPTHTUNE_DB_PASSWORD``; create
    ``databases``. Returns the running LocalPostgres."""
    from depthtune.serve.postgres import LocalPostgres

    env = os.environ if env is None else env
    password = env.get(DB_PASSWORD_ENV)
    if not password:
        raise ValueError(f"the PostgreSQL role's password comes from {DB_PASSWORD_ENV}, which is not set")
    directory = Path(directory).expanduser().absolute()
    postgres = LocalPostgres(directory, password, user=user, port=port, stop_with_parent=False)
    if postgres.running():
        raise ValueError(
            f"PostgreSQL in {directory} is already running (pid {postgres.pid}); "
            f"stop it: depthtune serve postgres stop --dir {directory}"
        )
    postgres.start()
    for name in databases:
        postgres.create_database(name)
    (directory / POSTGRES_STATE_FILE).write_text(
        json.dumps({"pid": postgres.pid, "port": port, "user": user, "databases": list(databases)}) + "\n"
    )
    return postgres


def stop_postgres(directory: str | os.PathLike) -> bool:
    from depthtune.serve.postgres import stop_cluster

    directory = Path(directory).expanduser().absolute()
    stopped = stop_cluster(directory)
    (directory / POSTGRES_STATE_FILE).unlink(missing_ok=True)
    return stopped


# -- what `depthtune serve` needs besides the above ----------------------------------------------

HOST_ENV = "DEPTHTUNE_TRACKING_HOST"
PORT_ENV = "DEPTHTUNE_TRACKING_PORT"
ARTIFACTS_ENV = "DEPTHTUNE_ARTIFACTS_DESTINATION"


def service_config(
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    state_dir: str | os.PathLike | None = None,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    **settings,
) -> ServiceConfig:
    """A :class:`ServiceConfig` from flags, falling back to ``DEPTHTUNE_BACKEND_STORE_URI``,
    ``DEPTHTUNE_ARTIFACTS_DESTINATION``, ``DEPTHTUNE_STATE_DIR``, ``DEPTHTUNE_TRACKING_HOST``
    (default 127.0.0.1) and ``DEPTHTUNE_TRACKING_PORT`` (default 5000)."""
    env = os.environ if env is None else env
    artifacts = artifacts_destination or env.get(ARTIFACTS_ENV)
    if not artifacts:
        raise ValueError(
            "no artifact store: pass --artifacts-destination (a shared folder or s3://bucket/path) "
            f"or set {ARTIFACTS_ENV}"
        )
    try:
        port = int(port if port is not None else env.get(PORT_ENV) or 5000)
    except ValueError:
        raise ValueError(f"{PORT_ENV}={env.get(PORT_ENV)!r}: expected a port number") from None
    return ServiceConfig(
        backend_store_uri=backend_store_uri or env.get(BACKEND_ENV) or "",
        artifacts_destination=artifacts,
        state_dir=Path(state_dir) if state_dir else default_state_dir(),
        host=host or env.get(HOST_ENV) or "127.0.0.1",
        port=port,
        **settings,
    )


def started_message(status: ServiceStatus) -> str:
    clients = f"MLFLOW_TRACKING_URI={status.uri}"
    if status.auth:
        clients += " with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD set"
    return (
        f"mlflow server running at {status.uri} (pid {status.pid}, basic-auth {'on' if status.auth else 'OFF'})\n"
        f"  store:     {status.backend}\n"
        f"  artifacts: {status.artifacts} (proxied through the server)\n"
        f"  log:       {status.log}\n"
        f"  clients:   {clients}\n"
        f"  stop it:   depthtune serve stop --state-dir {status.state_dir}"
    )
