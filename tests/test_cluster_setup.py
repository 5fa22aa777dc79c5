"""ray_cluster.yaml's setup commands run as a node runs them, in a shell with a home directory of
their own and a stand-in for AWS Secrets Manager (a ``boto3`` module that returns a JSON secret):
the Ray token from the secret reaches Ray's token file with owner-only permissions, and a Ray head
started with the node's environment admits a driver that has the token and refuses one that has not.
No AWS account or Docker engine is needed (docs/cluster.md says what was and was not run)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from local_cluster import LocalRayCluster

REPO = Path(__file__).resolve().parent.parent
FAKE_BOTO3 = """import json, os


class _SecretsManager:
    def get_secret_value(self, SecretId):
        assert SecretId == os.environ["DEPTHTUNE_SECRET_ID"], SecretId
        return {"SecretString": os.environ["FAKE_SECRET"]}


def client(service):
    assert service == "secretsmanager", service
    return _SecretsManager()
"""


def _secret(**overrides) -> dict[str, str]:
    values = {
        "MLFLOW_TRACKING_USERNAME": "depthtune-admin",
        "MLFLOW_TRACKING_PASSWORD": 'it\'s $a `secret` "pw"',
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "DEPTHTUNE_DB_PASSWORD": "db-password-0123",
    }
    return {key: value for key, value in {**values, **overrides}.items() if value is not None}


def _node_home(tmp_path: Path) -> Path:
    """An empty home directory as the container's user has one (a ``.bashrc`` to hook into)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the image's .bashrc\n")
    return home


def _run_setup(home: Path, secret: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Every node's setup_commands, in order, each in its own shell (as Ray runs them), with the
    placeholders a user SETs filled in; stops at the first that fails."""
    commands = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())["setup_commands"]
    script = " && ".join(f"( {command.replace('s3://YOUR-BUCKET/', 's3://test-bucket/')} )" for command in commands)
    stand_in = tmp_path / "stand_in"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "boto3.py").write_text(FAKE_BOTO3)
    python_dir = str(Path(sys.executable).parent)
    env = {
        "HOME": str(home),
        "PATH": f"{python_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(stand_in),
        "FAKE_SECRET": json.dumps(secret),
        "RAY_HEAD_IP": "127.0.0.1",
        "DEPTHTUNE_SECRET_ID": "depthtune/tracking",
    }
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)


def _node_environment(home: Path) -> dict[str, str]:
    """What a login shell on the node exports: ``~/.depthtune.env``, which ``~/.bashrc`` sources."""
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.startswith("[ -f ~/.depthtune.env ] && . ~/.depthtune.env"), bashrc
    out = subprocess.run(
        ["bash", "-c", ". ~/.depthtune.env && env -0"],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=30,
        check=True,
    )
    return dict(entry.split("=", 1) for entry in out.stdout.decode().split("\0") if "=" in entry)


def test_every_node_gets_the_ray_token_from_the_secret_with_owner_only_permissions(tmp_path):
    home = _node_home(tmp_path)
    secret = _secret()
    result = _run_setup(home, secret, tmp_path)
    assert result.returncode == 0, result.stderr
    assert secret["RAY_AUTH_TOKEN"] not in result.stdout + result.stderr, "the token is never printed"

    token_file = home / ".ray" / "auth_token"
    assert token_file.read_text() == secret["RAY_AUTH_TOKEN"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    environment = _node_environment(home)
    assert environment["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_TOKEN" not in environment, "the token stays in its file, out of every process's environment"
    assert environment["MLFLOW_TRACKING_PASSWORD"] == secret["MLFLOW_TRACKING_PASSWORD"]
    assert "DEPTHTUNE_DB_PASSWORD" not in environment, "the database password is the head's alone"

    # `ray up` on a running cluster reruns the setup: a token rotated in the secret replaces the
    # old one, and a file a looser umask once made is tightened
    token_file.chmod(0o644)
    rotated = _secret(RAY_AUTH_TOKEN=secrets.token_hex(32))
    result = _run_setup(home, rotated, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (home / ".bashrc").read_text().count(".depthtune.env") == 2, "hooked in once"
    assert token_file.read_text() == rotated["RAY_AUTH_TOKEN"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_a_secret_without_a_ray_token_stops_the_setup_by_name(tmp_path):
    home = _node_home(tmp_path)
    result = _run_setup(home, _secret(RAY_AUTH_TOKEN=None), tmp_path)
    assert result.returncode != 0
    assert "secret depthtune/tracking has no RAY_AUTH_TOKEN" in result.stderr
    assert not (home / ".ray" / "auth_token").exists()


@pytest.mark.slow
def test_a_head_started_with_the_nodes_environment_admits_only_drivers_with_the_token(tmp_path):
    home = _node_home(tmp_path)
    assert _run_setup(home, _secret(), tmp_path).returncode == 0
    # The node's own environment: its home (where the token file is) and what ~/.depthtune.env exports
    # for Ray; the session's token path is dropped, since Ray would read it before the home's file.
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    node_env = {**base, "HOME": str(home), "RAY_AUTH_MODE": _node_environment(home)["RAY_AUTH_MODE"]}
    cluster = LocalRayCluster(node_env, own_token=False)
    try:
        cluster.start_head()  # waits until a driver with the node's environment lists the head
        stranger_home = tmp_path / "stranger"
        stranger_home.mkdir()
        connect = (
            f"import ray; ray.init(address='{cluster.address}', logging_level='ERROR'); print(ray.nodes()[0]['Alive'])"
        )
        stranger = subprocess.run(
            [sys.executable, "-c", connect],
            env={**base, "HOME": str(stranger_home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert stranger.returncode != 0
        assert "InvalidAuthToken" in stranger.stderr, stranger.stderr[-2000:]
    finally:
        cluster.stop()
