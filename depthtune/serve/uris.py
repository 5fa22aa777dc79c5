"""Database URIs of the tracking service: which store a URI names, its password filled in from the
environment (never from a command line), and masked again for anything printed or logged."""

from __future__ import annotations

import importlib.util
import os
import urllib.parse
from pathlib import Path
from typing import Mapping

BACKEND_ENV = "DEPTHTUNE_BACKEND_STORE_URI"
DB_PASSWORD_ENV = "DEPTHTUNE_DB_PASSWORD"
AUTH_DATABASE_NAME = "mlflow_auth"


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


def is_postgres_uri(uri: str) -> bool:
    """Whether ``uri`` names a PostgreSQL database (``postgresql://``, ``postgres://``, any ``+driver``)."""
    return urllib.parse.urlsplit(uri).scheme.split("+")[0] in ("postgresql", "postgres")


def resolve_backend_store_uri(uri: str | None, env: Mapping[str, str] | None = None) -> str:
    """The backend store URI from the flag or ``DEPTHTUNE_BACKEND_STORE_URI``, with
    ``DEPTHTUNE_DB_PASSWORD`` inserted when the URI names a user but no password, and PostgreSQL's
    driver named as psycopg2 when psycopg 3 is not installed (SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3)."""
    env = os.environ if env is None else env
    uri = uri or env.get(BACKEND_ENV)
    if not uri:
        raise ValueError(
            f"no backend store: pass --backend-store-uri or set {BACKEND_ENV} "
            "(e.g. postgresql://mlflow@db-host:5432/mlflow)"
        )
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme:
        raise ValueError(
            f"backend store {redact_uri(uri)!r}: expected a URI such as postgresql://user@host:5432/mlflow"
        )
    if not is_postgres_uri(uri) and "+" not in parts.scheme:
        return uri  # sqlite:////abs/path and the like: left exactly as given
    scheme, rest = uri.split("://", 1)
    password = env.get(DB_PASSWORD_ENV)
    if password and parts.username and parts.password is None:
        user_info, _, after = rest.partition("@")
        rest = f"{user_info}:{urllib.parse.quote(password, safe='')}@{after}"
    if scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            scheme = "postgresql+psycopg2"
        else:
            scheme = "postgresql"
    return f"{scheme}://{rest}"


def default_auth_database_uri(backend_store_uri: str, state_dir: Path) -> str:
    """Where basic-auth keeps users: the database ``mlflow_auth`` on the backend's PostgreSQL
    server, otherwise ``basic_auth.db`` (SQLite) in the state directory."""
    if is_postgres_uri(backend_store_uri):
        parts = urllib.parse.urlsplit(backend_store_uri)
        return urllib.parse.urlunsplit(parts._replace(path="/" + AUTH_DATABASE_NAME))  # keeps ?sslmode=... too
    return f"sqlite:///{(Path(state_dir) / 'basic_auth.db').resolve()}"
