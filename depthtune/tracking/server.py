"""A real ``mlflow server`` started and stopped by depthtune: in front of the embedded SQLite file
(so many concurrent trials never open the database themselves) or, on a cluster head, in front
of PostgreSQL. It runs in its own process group and is stopped by that group, never by name; on
Linux it is also told to stop when the process that started it dies (a killed sweep driver leaves
no server behind)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


@dataclass
class TrackingServer:
    """``mlflow server`` on ``host:port`` with a backend store and an artifact store: proxied
    through the server (``proxy_artifacts``, for clients on other machines) or, for the embedded
    store, a folder that clients read and write directly."""

    backend_store_uri: str
    artifact_root: str | os.PathLike
    proxy_artifacts: bool = False
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    startup_timeout: float = 90.0
    extra_args: tuple[str, ...] = ()
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

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

    def start(self) -> "TrackingServer":
        """Start the server and wait until ``/health`` answers; errors carry the server's log."""
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            *self._artifact_args(),
            "--host", self.host, "--port", str(self.port), "--workers", "1",
            *self.extra_args,
        ]
        log_path = self.log_path or Path(os.devnull)
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_stop_with_parent
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"mlflow server exited at start (command {' '.join(command)}); log: {log_path}")
            if self.healthy():
                logger.info("mlflow server %s up (pid %d, store %s)", self.uri, self.pid, self.backend_store_uri)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server on {self.uri} did not answer /health in {self.startup_timeout:.0f} s; log: {log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's process group (the server and its workers), politely then firmly."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        logger.info("mlflow server %s stopped", self.uri)

    def __enter__(self) -> "TrackingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
