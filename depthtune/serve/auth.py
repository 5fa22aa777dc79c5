"""MLflow ``basic-auth`` for a server depthtune starts: the admin credentials, checked before the
server sees them, and the owner-only files that carry them to it instead of a command line."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

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
    the state directory). ``credential_cache_seconds``: how long each server worker trusts a
    credential it has checked; MLflow's default, 0, runs its deliberately slow password hash on every
    request, which saturated the server's CPU at 16 concurrent trials (benchmarks/README.md,
    section 9). A password changed through MLflow is dropped at once by the worker that changed it,
    by the others within this time."""

    admin_username: str
    admin_password: str = field(repr=False)
    database_uri: str | None = field(default=None, repr=False)
    default_permission: str = "READ"
    secret_key: str | None = field(default=None, repr=False)
    credential_cache_seconds: int = 60

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
        if not (isinstance(self.credential_cache_seconds, int) and self.credential_cache_seconds >= 0):
            raise ValueError(
                f"credential_cache_seconds {self.credential_cache_seconds!r}: expected whole seconds >= 0 (0: no cache)"
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
        """The ``Authorization`` header value that logs the admin in."""
        token = base64.b64encode(f"{self.admin_username}:{self.admin_password}".encode()).decode()
        return f"Basic {token}"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (replaced atomically)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ini_value(value: str) -> str:
    """``value`` as MLflow's auth ini file needs it: no newlines, ``%`` doubled (configparser interpolation)."""
    if "\n" in value or "\r" in value:
        raise ValueError("auth settings cannot contain newlines")
    return value.replace("%", "%%")


def auth_ini(auth: BasicAuth, database_uri: str) -> str:
    """The ``[mlflow]`` ini file that ``basic-auth`` reads through ``MLFLOW_AUTH_CONFIG_PATH`` (it holds
    the admin password: write it with :func:`write_private`)."""
    return "\n".join(
        [
            "[mlflow]",
            f"default_permission = {ini_value(auth.default_permission)}",
            f"database_uri = {ini_value(database_uri)}",
            f"admin_username = {ini_value(auth.admin_username)}",
            f"admin_password = {ini_value(auth.admin_password)}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            f"auth_cache_ttl_seconds = {int(auth.credential_cache_seconds)}",
            "",
        ]
    )
