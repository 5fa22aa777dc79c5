"""A killed sweep driver leaves no local tracking server behind. The other faults (a trial's node
dies and the trial resumes from its checkpoint into its own MLflow run elsewhere, the driver is
killed and resumed, the tracking server is down for 30 s) are tested together on the multi-node
cluster: tests/test_cluster.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_driver_leaves_no_local_tracking_server_behind(tmp_path):
    """A sweep driver without a tracking URI starts its own mlflow server; SIGKILL the driver and the
    server's whole process group goes too. (Killing and resuming the driver itself is tested on the
    multi-node cluster, tests/test_cluster.py.)"""
    script = (
        "import sys, time; from depthtune.serve.server import TrackingServer, embedded_store;"
        "server = TrackingServer(*embedded_store(sys.argv[1])).start(); print(server.pid, flush=True); time.sleep(600)"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    server_pid = None
    try:
        server_pid = int(driver.stdout.readline())
        assert _group_alive(server_pid)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_alive(server_pid), "the dead driver's mlflow server is still running"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        if server_pid and _group_alive(server_pid):
            os.killpg(server_pid, signal.SIGKILL)
