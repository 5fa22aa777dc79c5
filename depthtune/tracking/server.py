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

import base64
import ctypes
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (as uvicorn does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user info replaced by ``***`` (for logs and messages)."""
    try:
        parts = urllib.parse.urlsplit(str(uri))
        if parts.password is None:
            return str(uri)
        user_info, _, host = parts.netloc.rpartition("@")
        user = user_info.split(":", 1)[0]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparseable URI>"


def process_cmdline(pid: int) -> str:
    """The command line of process ``pid`` from /proc (Linux), or "" when it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc (Linux); elsewhere
    ``[pgid]`` while ``killpg(pgid, 0)`` succeeds."""
    if pgid <= 1:
        raise ValueError(f"process group {pgid}: not a server's group")
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def stop_process_group(pgid: int, timeout: float = 20.0, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM process group ``pgid``, wait until all of it is gone, SIGKILL what is left after
    ``timeout``. ``leader`` (our child, when it is one) is reaped."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if leader is not None:
            try:
                leader.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        if not process_group_members(pgid):
            return
        time.sleep(0.2)
    logger.warning("process group %d did not stop within %.0f s: SIGKILL", pgid, timeout)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if leader is not None:
        leader.wait()
    deadline = time.monotonic() + 10
    while process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def parent_death_preexec(wanted: bool, sig: int = signal.SIGTERM):
    """``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies, or None.
    The kernel sends it when the *thread* that started the child ends, so it is only used from
    the main thread: a server (re)started from a helper thread would otherwise be killed as soon
    as that thread returns."""
    if not wanted:
        return None
    if threading.current_thread() is not threading.main_thread():
        logger.info(
            "started off the main thread: the child is not tied to this process's death (it is stopped by stop())"
        )
        return None
    if sig == signal.SIGTERM:
        return _stop_with_parent

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return preexec


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM this process when its parent dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def embedded_store(directory: str | os.PathLike) -> tuple[str, Path]:
    """MLflow's own client defaults for ``directory``: the SQLite file ``mlflow.db`` and the artifact
    folder ``mlruns``. Artifacts get plain file locations (not proxied ``mlflow-artifacts:`` ones),
    so a bare ``mlflow ui`` there shows them and any process on this machine loads registered models
    with the tracking URI alone (``sqlite:///.../mlflow.db`` or a server), no server needed."""
    directory = Path(directory).resolve()
    return f"sqlite:///{directory / 'mlflow.db'}", directory / "mlruns"


AUTH_PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
MIN_PASSWORD_LENGTH = 12  # MLflow's basic-auth refuses shorter passwords (mlflow.utils.validation)


@dataclass
class BasicAuth:
    """MLflow ``basic-auth`` settings. The admin user is created with this password the first
    time the server starts on an empty auth database; later starts only check that the password
    still logs in (MLflow ignores a changed bootstrap password). ``database_uri`` is where users
    and permissions live (default: ``basic_auth.db``, SQLite, in the server's state directory; for
    a PostgreSQL backend use a second database on the same server, e.g. ``mlflow_auth``; it must
    exist). Users other than the admin get ``default_permission`` on what they did not create.
    ``secret_key`` signs the login form's CSRF token (default: one generated once and kept 0600 in
    the state directory)."""

    admin_username: str
    admin_password: str = field(repr=False)
    database_uri: str | None = field(default=None, repr=False)
    default_permission: str = "READ"
    secret_key: str | None = field(default=None, repr=False)

    USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
    PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"

    def __post_init__(self) -> None:
        if not self.admin_username or any(c in self.admin_username for c in ":\n\r"):
            raise ValueError(
                f"admin username {self.admin_username!r}: expected a non-empty name without ':' or newlines"
            )
        if not self.admin_password or len(self.admin_password) < MIN_PASSWORD_LENGTH:
            raise ValueError(
                f"admin password for {self.admin_username!r}: "
                f"MLflow's basic-auth needs at least {MIN_PASSWORD_LENGTH} characters"
            )
        if any(c in self.admin_password for c in "\n\r"):
            raise ValueError("admin password: newlines are not allowed")
        if self.default_permission not in AUTH_PERMISSIONS:
            raise ValueError(
                f"default_permission {self.default_permission!r}: expected one of {', '.join(AUTH_PERMISSIONS)}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **settings) -> "BasicAuth":
        """Admin credentials from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (the
        variables MLflow clients read, so one env file serves the server and its clients)."""
        env = os.environ if env is None else env
        missing = [name for name in (cls.USERNAME_ENV, cls.PASSWORD_ENV) if not env.get(name)]
        if missing:
            raise ValueError(
                f"basic-auth needs the admin credentials in the environment: {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set (set {cls.USERNAME_ENV} and {cls.PASSWORD_ENV}, "
                "e.g. from an env file, or turn auth off explicitly)"
            )
        return cls(env[cls.USERNAME_ENV], env[cls.PASSWORD_ENV], **settings)

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.admin_username}:{self.admin_password}".encode()).decode()
        return f"Basic {token}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (replaced atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _ini_value(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("auth settings cannot contain newlines")
    return value.replace("%", "%%")  # MLflow reads the file with configparser's % interpolation


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
                _write_private(key_file, secrets.token_hex(32))
            secret_key = key_file.read_text().strip()
        database_uri = self.auth.database_uri or f"sqlite:///{(directory / 'basic_auth.db').resolve()}"
        ini = "\n".join(
            [
                "[mlflow]",
                f"default_permission = {_ini_value(self.auth.default_permission)}",
                f"database_uri = {_ini_value(database_uri)}",
                f"admin_username = {_ini_value(self.auth.admin_username)}",
                f"admin_password = {_ini_value(self.auth.admin_password)}",
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                "",
            ]
        )
        path = directory / "basic_auth.ini"
        _write_private(path, ini)
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
