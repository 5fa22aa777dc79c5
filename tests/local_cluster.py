"""A real multi-node Ray cluster on one machine for the cluster tests: a head and worker nodes, each
started by its own ``ray start --block`` (separate GCS/raylet processes, each node with its own
resources), stopped by the PIDs this harness started, never by name."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def write_ray_token(directory: Path) -> Path:
    """Write a new Ray auth token (256 random bits, as ``ray get-auth-token --generate`` makes)
    to ``directory/auth_token``, readable by its owner only. Pointed to by ``RAY_AUTH_TOKEN_PATH``,
    which Ray reads before ``~/.ray/auth_token``: a token left in the home directory is never
    picked up, and Ray never writes one there."""
    path = Path(directory) / "auth_token"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_hex(32))
    return path


def _listen_port(given: set[int]) -> int:
    """A free port between Ray's worker ports (10002-19999) and the kernel's ephemeral range
    (32768+; a port there can be taken by an outgoing connection in the seconds before the raylet
    binds it), and not in ``given``: a port handed to a node may not be bound yet. Checked on every
    address, since Ray's agents listen on the machine's IP, not only on 127.0.0.1."""
    while True:
        port = random.randrange(20000, 32000)
        if port in given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        given.add(port)
        return port


def _node_ports(given: set[int]) -> list[str]:
    """Ports every node of one machine must not share (Ray's defaults are fixed numbers)."""
    names = (
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    )
    return [arg for name in names for arg in (f"--{name}", str(_listen_port(given)))]


@dataclass
class RayNode:
    """One node: the ``ray start --block`` process that owns its raylet (and, on the head, the GCS)."""

    name: str
    process: subprocess.Popen
    log: Path

    def processes(self) -> list[psutil.Process]:
        try:
            return [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def raylet_pid(self) -> int:
        for process in self.processes():
            try:
                if process.name() == "raylet":
                    return process.pid
            except psutil.NoSuchProcess:
                continue
        raise RuntimeError(f"node {self.name} has no raylet process; log: {self.log}")

    def kill_raylet(self) -> int:
        """SIGKILL this node's raylet, as a machine or its raylet dying would; returns its PID."""
        pid = self.raylet_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the node's process group, then SIGKILL whatever of its processes is left (a node
        drains for up to 30 s on SIGTERM; nothing here needs that)."""
        processes = self.processes()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _, alive = psutil.wait_procs(processes, timeout=timeout)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=timeout)


@dataclass
class LocalRayCluster:
    """Head (no CPUs: the driver and services only) plus workers with CPUs and custom resources.
    With ``own_token`` the cluster runs with token authentication and a token of its own, which
    ``env`` carries to every node and to drivers started with it; without it, ``env`` alone says
    how Ray authenticates (as a cluster node's environment and home directory do)."""

    env: dict[str, str]
    own_token: bool = True
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dtray-", dir="/tmp")))
    nodes: list[RayNode] = field(default_factory=list)
    ports_given: set[int] = field(default_factory=set)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = _listen_port(self.ports_given)
        if self.own_token:
            self.env = {
                **self.env,
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(write_ray_token(self.temp_dir)),
            }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.temp_dir / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--block",
                    "--disable-usage-stats",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--object-store-memory",
                    str(200 * 1024**2),
                    "--node-name",
                    name,
                    *_node_ports(self.ports_given),
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        node = RayNode(name, process, log)
        self.nodes.append(node)
        return node

    def start_head(self, extra_args: tuple[str, ...] = (), cpus: int = 0) -> RayNode:
        """Start the head (by default no CPUs or GPUs of its own: trials go to workers) and wait until it is up."""
        node = self._start(
            "head",
            [
                "--head",
                "--port",
                str(self.port),
                "--num-cpus",
                str(cpus),
                "--num-gpus",
                "0",
                "--include-dashboard",
                "false",
                "--temp-dir",
                str(self.temp_dir / "ray"),
                *extra_args,
            ],
        )
        self.wait_for_nodes(1)
        return node

    def add_worker(self, name: str, cpus: int, resources: dict[str, float]) -> RayNode:
        """Start a worker node and wait until it has joined: nodes started at once on one machine
        race for the same socket names in the session directory."""
        node = self._start(
            name,
            [
                "--address",
                self.address,
                "--num-cpus",
                str(cpus),
                "--num-gpus",
                "0",
                "--resources",
                json.dumps(resources),
            ],
        )
        self.wait_for_nodes(len(self.nodes))
        return node

    def alive_nodes(self) -> dict[str, str]:
        """Name -> node id of the nodes the cluster's GCS sees alive (asked from a fresh process)."""
        script = (
            "import json, ray; ray.init(address='%s', logging_level='ERROR');"
            "print(json.dumps({n['NodeName']: n['NodeID'] for n in ray.nodes() if n['Alive']}))"
        ) % self.address
        out = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"could not list the cluster's nodes: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _check_alive(self) -> None:
        for node in self.nodes:
            if node.process.poll() is not None:
                raise RuntimeError(f"ray node {node.name} exited ({node.process.returncode}); log: {node.log}")

    def _gcs_listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not self._gcs_listening():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the head's GCS did not listen on {self.address} in {timeout:.0f} s; log: {self.nodes[0].log}"
                )
            time.sleep(0.5)
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                nodes = self.alive_nodes()
            except RuntimeError:
                nodes = {}
            if len(nodes) >= count:
                return nodes
            time.sleep(1)
        raise TimeoutError(f"the cluster did not reach {count} nodes in {timeout:.0f} s; logs in {self.temp_dir}")

    def stop(self) -> None:
        """Workers first, then the head; every process this harness started is gone afterwards, and
        so is the token (the logs stay in ``temp_dir`` for a failed run's diagnosis)."""
        for node in reversed(self.nodes):
            node.stop()
        if self.own_token:
            Path(self.env["RAY_AUTH_TOKEN_PATH"]).unlink(missing_ok=True)
