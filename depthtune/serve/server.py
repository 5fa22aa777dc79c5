"""A real ``mlflow server`` started and stopped by depthtune: in front of the embedded SQLite file
(so many concurrent trials never open the database themselves) or, on a cluster head, in front
of PostgreSQL. It runs in its own process group and is stopped by that group, never by name; on
Linux it is also told to stop when the process that started it dies (a killed sweep driver leaves
no server behind), unless it is meant to outlive its starter (``depthtune serve start``).

With :class:`BasicAuth` it runs MLflow's ``basic-auth`` app. Secrets never reach a command line:
the backend store URI (it may hold the database password) goes to ``mlflow server`` through
``MLFLOW_BACKEND_STORE_URI``, the admin credentials and the auth database URI through a 0600 ini
file named by ``MLFLOW_AUTH_CONFIG_PATH``, both in the server's environment only, and logs show
URIs with the password masked."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from depthtune.serve.auth import BasicAuth, auth_ini, write_private
from depthtune.serve.processes import free_port, parent_death_preexec, port_bindable, stop_process_group
from depthtune.serve.uris import redact_uri

logger = logging.getLogger(__name__)


def embedded_store(directory: str | os.PathLike) -> tuple[str, Path]:
    """MLflow's own client defaults for ``directory``: the SQLite file ``mlflow.db`` and the artifact
    folder ``mlruns``. Artifacts get plain file locations (not proxied ``mlflow-artifacts:`` ones),
    so a bare ``mlflow ui`` there shows them and any process on this machine loads registered models
    with the tracking URI alone (``sqlite:///.../mlflow.db`` or a server), no server needed."""
    directory = Path(directory).resolve()
    return f"sqlite:///{directory / 'mlflow.db'}", directory / "mlruns"


@dataclass
class TrackingServer:
    """``mlflow server`` on ``host:port`` with a backend store and an artifact store: proxied
    through the server (``proxy_artifacts``, for clients on other machines) or, for the embedded
    store, a folder that clients read and write directly.

    ``auth`` turns on MLflow's ``basic-auth`` app; its ini file and secret key live in
    ``state_dir`` (default: a private temporary folder removed at ``stop()``). ``stop()`` then
    ``start()`` serves again on the same host and port. ``stop_with_parent=False`` lets the server
    outlive the process that started it (it is only tied to it when started from the main thread:
    Linux's parent-death signal follows the starting thread). ``job_execution`` is MLflow's background job runner
    (GenAI evaluation and prompt jobs; about eight more Python processes, several seconds of
    start-up on a small machine): off by default, as depthtune submits no jobs; None leaves
    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` as the environment has it."""

    backend_store_uri: str = field(repr=False)
    artifact_root: str | os.PathLike
    proxy_artifacts: bool = False
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    startup_timeout: float = 90.0
    extra_args: tuple[str, ...] = ()
    auth: BasicAuth | None = None
    state_dir: Path | None = None
    stop_with_parent: bool = True
    workers: int = 1
    job_execution: bool | None = False
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _own_state_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _artifact_args(self) -> list[str]:
        if self.proxy_artifacts:
            return ["--artifacts-destination", str(self.artifact_root)]
        return ["--default-artifact-root", str(Path(self.artifact_root).resolve()), "--no-serve-artifacts"]

    @property
    def auth_config_path(self) -> Path | None:
        """The basic-auth ini file (it holds secrets: 0600, removed at ``stop()``)."""
        directory = self.state_dir or self._own_state_dir
        return Path(directory) / "basic_auth.ini" if self.auth and directory else None

    def _auth_environment(self) -> dict[str, str]:
        """Write the 0600 ini file for ``basic-auth`` and return the variables that point the
        server at it."""
        assert self.auth is not None
        if self.state_dir is None:
            if self._own_state_dir is None:
                self._own_state_dir = Path(tempfile.mkdtemp(prefix="depthtune-mlflow-"))
            directory = self._own_state_dir
        else:
            directory = Path(self.state_dir)
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        secret_key = self.auth.secret_key
        if secret_key is None:
            key_file = directory / "flask_secret_key"
            if not key_file.is_file():
                write_private(key_file, secrets.token_hex(32))
            secret_key = key_file.read_text().strip()
        database_uri = self.auth.database_uri or f"sqlite:///{(directory / 'basic_auth.db').resolve()}"
        path = directory / "basic_auth.ini"
        write_private(path, auth_ini(self.auth, database_uri))
        return {"MLFLOW_AUTH_CONFIG_PATH": str(path), "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key}

    def _describe(self) -> str:
        store = redact_uri(self.backend_store_uri)
        return f"mlflow server on {self.uri} (store {store}{', basic-auth' if self.auth else ''})"

    def start(self) -> "TrackingServer":
        """Start the server and wait until ``/health`` answers (and, with auth, until the admin
        credentials log in); errors carry the server's log. On a SQLite store, servers starting
        together take turns (a lock file beside the database): two that create a new database at
        once race on its tables, and one fails with 'table ... already exists'."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"{self._describe()} is already running (pid {self.pid})")
        with _sqlite_creation_lock(self.backend_store_uri):
            return self._start()

    def _start(self) -> "TrackingServer":
        deadline = time.monotonic() + 15
        while not port_bindable(self.host, self.port):  # e.g. a previous server still closing its socket
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cannot start {self._describe()}: {self.host}:{self.port} is in use by another process"
                )
            time.sleep(0.25)
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *self._artifact_args(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            *(["--app-name", "basic-auth"] if self.auth else []),
            *self.extra_args,
        ]
        env = dict(os.environ)
        env["MLFLOW_BACKEND_STORE_URI"] = str(
            self.backend_store_uri
        )  # `mlflow server` reads it like --backend-store-uri
        if self.job_execution is not None:
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if self.job_execution else "false"
        for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_CONFIG_PATH"):
            env.pop(name, None)  # they would override the ini file
        if self.auth:
            env.update(self._auth_environment())
        log_path = self.log_path or Path(os.devnull)
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=parent_death_preexec(self.stop_with_parent),
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                self._remove_auth_files()
                raise RuntimeError(
                    f"{self._describe()} exited at start (command {' '.join(command)}); "
                    f"log: {log_path}{_tail(log_path)}"
                )
            if self.healthy():
                self._check_admin_login(log_path)
                logger.info("%s up (pid %d)", self._describe(), self.pid)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"mlflow server on {self.uri} did not answer /health in {self.startup_timeout:.0f} s; log: {log_path}"
        )

    def _check_admin_login(self, log_path: Path) -> None:
        if self.auth is None:
            return
        query = urllib.parse.urlencode({"username": self.auth.admin_username})
        request = urllib.request.Request(
            f"{self.uri}/api/2.0/mlflow/users/get?{query}", headers={"Authorization": self.auth.basic_header()}
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                return
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            status = str(exc)
        self.stop()
        raise RuntimeError(
            f"{self._describe()} started, but the admin user {self.auth.admin_username!r} "
            "cannot log in with the configured "
            f"password (answer: {status}). "
            "MLflow uses the configured password only to create the admin on an empty auth "
            "database; this one already has the user with another password. Use that password, or change it with "
            f"mlflow.server.get_app_client('basic-auth', ...).update_user_password. Log: {log_path}"
        )

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the server process to end; its exit code (None if not started)."""
        return self._process.wait(timeout=timeout) if self._process else None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _remove_auth_files(self) -> None:
        path = self.auth_config_path
        if path is not None:
            path.unlink(missing_ok=True)
        if self._own_state_dir is not None:
            shutil.rmtree(self._own_state_dir, ignore_errors=True)
            self._own_state_dir = None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's process group (the server and its workers), politely then firmly,
        and wait until all of it is gone (so the port is free for a restart)."""
        if self._process is None:
            return
        process, self._process = self._process, None
        stop_process_group(process.pid, timeout=timeout, leader=process)
        self._remove_auth_files()
        logger.info("mlflow server %s stopped", self.uri)

    def __enter__(self) -> "TrackingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def _sqlite_creation_lock(backend_store_uri: str) -> Iterator[None]:
    """An exclusive lock on ``<database>.lock`` for a ``sqlite:///`` store (nothing for others)."""
    if not str(backend_store_uri).startswith("sqlite:///"):
        yield
        return
    lock_path = Path(str(backend_store_uri).removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return ("\n" + "\n".join(text[-lines:])) if text else ""
