"""A real mlflow server in front of the embedded SQLite store: starts, logs, stops by PID; and the
process-group helpers that stop it, on a real process."""

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from depthtune.serve.processes import process_group_members, process_start_time, process_stat, stop_process_group
from depthtune.serve.server import TrackingServer, embedded_store


@pytest.mark.parametrize("proxy", [False, True], ids=["direct-artifacts", "proxied-artifacts"])
def test_server_on_embedded_store_is_what_mlflow_ui_reads(tmp_path, proxy):
    backend, artifacts = embedded_store(tmp_path)
    assert backend == f"sqlite:///{tmp_path.resolve()}/mlflow.db" and artifacts == tmp_path.resolve() / "mlruns"
    with TrackingServer(backend, artifacts, proxy_artifacts=proxy, log_path=tmp_path / "server.log") as server:
        pid = server.pid
        client = MlflowClient(server.uri)
        experiment = client.create_experiment("probe")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "x", 1.0)
        (tmp_path / "note.txt").write_text("hi")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        client.set_terminated(run.info.run_id)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # Read back without a server, straight from the files a bare `mlflow ui` would open.
    direct = MlflowClient(backend)
    (found,) = direct.search_runs([direct.get_experiment_by_name("probe").experiment_id])
    assert found.data.metrics == {"x": 1.0} and found.info.status == "FINISHED"
    assert (artifacts / experiment).is_dir() and list(artifacts.rglob("note.txt"))


def test_server_that_cannot_start_names_its_log(tmp_path):
    server = TrackingServer("notascheme://x", tmp_path / "a", log_path=tmp_path / "server.log", startup_timeout=60)
    with pytest.raises((RuntimeError, TimeoutError), match="server.log"):
        server.start()
    assert server.pid is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_process_group_found_and_stopped_even_with_parentheses_in_its_name():
    """The command name in /proc/<pid>/stat may hold ') ': the fields after it are still read right."""
    rename = "import ctypes, time; ctypes.CDLL(None).prctl(15, b'x) y (z', 0, 0, 0); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", rename], stdout=subprocess.PIPE, start_new_session=True)
    try:
        child.stdout.readline()  # renamed
        assert process_stat(child.pid)[0] in "RS" and process_group_members(child.pid) == [child.pid]
        started = process_start_time(child.pid)
        assert isinstance(started, int) and started == process_start_time(child.pid)
        stop_process_group(child.pid, timeout=10, leader=child)
        assert child.returncode is not None and process_group_members(child.pid) == []
        assert process_stat(child.pid) is None and process_start_time(child.pid) is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
