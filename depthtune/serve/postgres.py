"""A private PostgreSQL cluster for one machine or one test session: ``initdb`` in a directory, a
``postgres`` listening on 127.0.0.1 and a free port, one password-protected role, databases made on
demand. It is what the tests (and a single head node without a managed database) put behind
``mlflow server``; a real cluster uses RDS or Debian's own ``postgresql`` service instead.

PostgreSQL refuses to run as root, so when this process is root the server programs (``initdb``,
``postgres``, ``pg_ctl``) run as the ``postgres`` system user and the data directory belongs to it.
The role's password comes from the caller; it is written only to a 0600 file that ``initdb`` reads
and that is deleted right after, and handed to client programs through ``PGPASSWORD``, never on a
command line."""

from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from depthtune.serve.processes import free_port, parent_death_preexec, process_cmdline

logger = logging.getLogger(__name__)

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ROLE_NAME = _DATABASE_NAME


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up, started, reached or stopped; the message says which step."""


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb``/``postgres``/``pg_ctl``: ``$DEPTHTUNE_PG_BIN``, else the
    newest ``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu), else ``pg_config --bindir``;
    None when none of them has the server programs."""
    candidates: list[Path] = []
    if os.environ.get("DEPTHTUNE_PG_BIN"):
        candidates.append(Path(os.environ["DEPTHTUNE_PG_BIN"]))
    versions = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            versions.append((float(Path(path).parent.name), Path(path)))
        except ValueError:
            continue
    candidates.extend(path for _, path in sorted(versions, reverse=True))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.SubprocessError, OSError):
            pass
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "postgres", "pg_ctl")):
            return candidate
    return None


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) if text else f"(log {path} is empty)"


def _run_as(os_user: str) -> dict:
    """Popen arguments that run a PostgreSQL server program as ``os_user`` when we are root
    (PostgreSQL refuses to run as root); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses root: the system user {os_user!r} to run it as does not exist"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in ``directory`` (data in ``directory/data``, log in
    ``directory/postgres.log``) whose superuser role ``user`` has ``password``.

    ``start()`` runs ``initdb`` the first time (later starts reuse the data), starts ``postgres`` on
    ``host:port`` and waits until it accepts connections; ``stop()`` shuts it down (fast mode: open
    sessions are ended). With ``stop_with_parent`` the server also shuts down when the process
    that started it dies (tests); without, it keeps running detached (``depthtune serve postgres``).
    ``settings`` are extra ``postgres -c`` settings (tests pass ``fsync=off``)."""

    directory: str | os.PathLike
    password: str = field(repr=False)
    user: str = "depthtune"
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    bin_dir: str | os.PathLike | None = None
    os_user: str = "postgres"
    stop_with_parent: bool = True
    startup_timeout: float = 60.0
    settings: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _socket_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).absolute()
        if not self.password:
            raise ValueError("LocalPostgres needs a password for its role (none given)")
        if not _ROLE_NAME.match(self.user):
            raise ValueError(f"role name {self.user!r}: expected letters, digits and '_' (not starting with a digit)")
        found = Path(self.bin_dir) if self.bin_dir else find_postgres_bin()
        if found is not None and self.bin_dir and not (found / "initdb").is_file():
            raise FileNotFoundError(f"PostgreSQL bin dir {found}: no initdb there")
        if found is None:
            raise FileNotFoundError(
                "PostgreSQL server programs (initdb, postgres, pg_ctl) not found: set DEPTHTUNE_PG_BIN to their "
                "directory, or install them (Debian: apt-get install postgresql)"
            )
        self.bin_dir = found

    # -- paths and identity -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(self.directory) / "data"

    @property
    def log_path(self) -> Path:
        return Path(self.directory) / "postgres.log"

    def _bin(self, name: str) -> str:
        path = Path(self.bin_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"PostgreSQL program {path} does not exist (bin dir {self.bin_dir})")
        return str(path)

    def _as_server_user(self) -> dict:
        return _run_as(self.os_user)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _postmaster_file(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    @property
    def pid(self) -> int | None:
        """The postmaster's PID: our child, or the one ``postmaster.pid`` names (a detached server)."""
        if self._process is not None:
            return self._process.pid
        lines = self._postmaster_file()
        return int(lines[0]) if lines and lines[0].strip().isdigit() else None

    def uri(self, database: str) -> str:
        """``postgresql+psycopg2://user:password@host:port/database`` (password URL-quoted), for
        SQLAlchemy/MLflow. The driver is named because SQLAlchemy 2.1 maps a bare ``postgresql://``
        to psycopg 3, not to the psycopg2 that depthtune's ``platform`` extra installs."""
        self._check_database_name(database)
        return (
            f"postgresql+psycopg2://{self.user}:{urllib.parse.quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{database}"
        )

    def __repr__(self) -> str:
        return f"LocalPostgres({str(self.directory)!r}, user={self.user!r}, host={self.host!r}, port={self.port})"

    # -- lifecycle -----------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        created = not Path(self.directory).exists()
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if created:
                os.chmod(self.directory, 0o711)  # the server user must be able to reach data/
            probe = subprocess.run(["test", "-x", str(self.directory)], **self._as_server_user())
            if probe.returncode != 0:
                raise PostgresError(
                    f"the PostgreSQL server runs as {self.os_user!r} (root is refused) "
                    f"but {self.os_user!r} cannot reach "
                    f"{self.directory}: a parent folder is private to root. Use a directory under /tmp or /var/lib, "
                    "or let LocalPostgres create it"
                )

    def _initdb(self) -> None:
        data = self.data_dir
        data.mkdir(mode=0o700, exist_ok=True)
        self._chown(data)
        secret_dir = Path(tempfile.mkdtemp(prefix="dtpg-init-"))
        try:
            self._chown(secret_dir)
            pwfile = secret_dir / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password + "\n")
            self._chown(pwfile)
            command = [
                self._bin("initdb"),
                "-D",
                str(data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ]
            if self.settings.get("fsync") == "off":
                command.append("--no-sync")
            result = subprocess.run(command, capture_output=True, text=True, cwd=secret_dir, **self._as_server_user())
        finally:
            shutil.rmtree(secret_dir, ignore_errors=True)
        if result.returncode != 0:
            raise PostgresError(
                f"initdb in {data} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
            )
        logger.info("initialised PostgreSQL cluster %s (role %s)", data, self.user)

    def running(self) -> bool:
        """Whether a postmaster for this data directory is alive."""
        if self._process is not None:
            return self._process.poll() is None
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        cmdline = process_cmdline(pid)
        return "postgres" in cmdline or "postmaster" in cmdline

    def _ready(self) -> bool:
        result = subprocess.run(
            [self._bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-t", "2"], capture_output=True
        )
        return result.returncode == 0

    def start(self) -> "LocalPostgres":
        """initdb when new, start ``postgres`` and wait until it accepts connections with our password."""
        if self.running():
            raise PostgresError(f"PostgreSQL in {self.data_dir} is already running (pid {self.pid})")
        self._prepare_directory()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        self._socket_dir = Path(tempfile.mkdtemp(prefix="dtpg-"))  # short: socket paths must fit 107 bytes
        self._chown(self._socket_dir)
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir),
            **self.settings,
        }
        command = [self._bin("postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        preexec = parent_death_preexec(self.stop_with_parent, signal.SIGINT)  # SIGINT = fast shutdown
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=preexec,
                **self._as_server_user(),
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                self._remove_socket_dir()
                raise PostgresError(
                    f"postgres for {self.data_dir} exited at start (exit {code}); "
                    f"log {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            if self._ready():
                break
            time.sleep(0.3)
        else:
            self.stop()
            raise PostgresError(
                f"postgres for {self.data_dir} did not accept connections on {self.host}:{self.port} within "
                f"{self.startup_timeout:.0f} s; log {self.log_path}:\n{_log_tail(self.log_path)}"
            )
        try:
            self._psql("SELECT 1")
        except PostgresError as exc:
            self.stop()
            raise PostgresError(
                f"PostgreSQL in {self.data_dir} is up but role {self.user!r} cannot log in with the given password "
                f"(was the cluster initialised with another one?): {exc}"
            ) from None
        logger.info("PostgreSQL %s:%d up (pid %d, data %s)", self.host, self.port, self.pid, self.data_dir)
        return self

    def _remove_socket_dir(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown of our postmaster (or, for one we did not start, ``pg_ctl stop -m fast`` on
        our data directory); escalates to immediate shutdown, then SIGKILL of its process group."""
        process, self._process = self._process, None
        if process is None:
            stop_cluster(self.directory, bin_dir=self.bin_dir, os_user=self.os_user, timeout=timeout)
            return
        if process.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 10.0)):
                try:
                    process.send_signal(sig)
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("postgres pid %d did not stop on %s", process.pid, signal.Signals(sig).name)
            else:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait()
        self._remove_socket_dir()
        logger.info("PostgreSQL %s:%d stopped", self.host, self.port)

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------------

    @staticmethod
    def _check_database_name(name: str) -> None:
        if not _DATABASE_NAME.match(name or ""):
            raise ValueError(
                f"database name {name!r}: expected letters, digits and '_' (not starting with a digit), at most 63"
            )

    def _psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        result = subprocess.run(
            [
                self._bin("psql"),
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if result.returncode != 0:
            raise PostgresError(f"psql on {self.host}:{self.port}/{database} failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def databases(self) -> list[str]:
        return self._psql("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1").split()

    def create_database(self, name: str, exist_ok: bool = True) -> str:
        """Create database ``name`` owned by our role (nothing when it exists and ``exist_ok``);
        returns its URI."""
        self._check_database_name(name)
        if name in self.databases():
            if not exist_ok:
                raise PostgresError(f"database {name!r} already exists on {self.host}:{self.port}")
        else:
            self._psql(f'CREATE DATABASE "{name}"')
            logger.info("created database %s on %s:%d", name, self.host, self.port)
        return self.uri(name)


def stop_cluster(
    directory: str | os.PathLike,
    bin_dir: str | os.PathLike | None = None,
    os_user: str = "postgres",
    timeout: float = 30.0,
) -> bool:
    """Stop the postmaster of ``directory/data`` (a :class:`LocalPostgres` directory) with
    ``pg_ctl stop -m fast``, whoever started it; False when none was running."""
    data = Path(directory) / "data"
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    bin_path = Path(bin_dir) if bin_dir else find_postgres_bin()
    if bin_path is None:
        raise FileNotFoundError("PostgreSQL programs not found (set DEPTHTUNE_PG_BIN)")
    as_user = _run_as(os_user)
    result = subprocess.run(
        [str(bin_path / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", str(int(timeout))],
        capture_output=True,
        text=True,
        cwd=data,
        **as_user,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        if "Is server running?" in output or not (data / "postmaster.pid").exists():
            return False
        raise PostgresError(f"pg_ctl stop -D {data} failed (exit {result.returncode}): {output[-2000:]}")
    if len(lines) >= 5 and Path(lines[4]).name.startswith("dtpg-"):
        shutil.rmtree(lines[4], ignore_errors=True)  # the private socket directory start() made
    logger.info("PostgreSQL in %s stopped", data)
    return True
