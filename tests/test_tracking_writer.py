"""The background writer against a real ``mlflow server``: writes queued while the server is down
are sent, in order and once, when it comes back; writes the server rejects are dropped, not retried."""

from __future__ import annotations

import threading
import time

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.runs import RunLogger
from depthtune.tracking.writer import BackgroundWriter, is_transient


def test_transient_errors_are_retried_and_rejections_are_not():
    assert is_transient(MlflowException("API request to http://127.0.0.1:1/api failed with exception ConnectionError"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}))
    assert not is_transient(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}))
    assert not is_transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}))
    assert not is_transient(ValueError("a bug, not an outage"))


def test_wait_for_a_mark_waits_for_the_writes_up_to_it_only():
    release, sent = threading.Event(), []
    writer = BackgroundWriter("marks")
    first = writer.submit("first", lambda: sent.append("first"))
    second = writer.submit("second", lambda: (release.wait(10), sent.append("second")))
    assert (first, second, writer.mark) == (1, 2, 2)
    assert writer.wait_for(first, timeout=5) and sent == ["first"]
    assert not writer.flush(timeout=0.2), "the second write is held back"
    release.set()
    assert writer.close(timeout=5) and sent == ["first", "second"]
    assert writer.wait_for(second, timeout=0), "close returns once every write is sent"


def test_writes_queued_during_an_outage_arrive_once_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the writer's own retries, not the client's
    server = TrackingServer(*embedded_store(tmp_path), log_path=tmp_path / "server.log").start()
    try:
        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("outage")
        run = RunLogger.start(client, experiment_id, name="trial")
        writer = BackgroundWriter("test", max_backoff=1.0)
        run.log_epoch({"val_loss": 1.0}, step=0)
        server.stop()
        stamps = {step: 1_700_000_000_000 + step for step in range(1, 4)}
        marks = [
            writer.submit(
                f"epoch {step}", lambda step=step: run.log_epoch({"val_loss": 1.0 / (step + 1)}, step, stamps[step])
            )
            for step in range(1, 4)
        ]
        time.sleep(3)
        assert not writer.wait_for(marks[0], timeout=0), "nothing can be sent while the server is down"
        server.start()  # same port
        assert writer.flush(timeout=300)
        run.log_epoch({"val_loss": 0.5}, step=1, timestamp_ms=stamps[1])  # the driver filling in the same epoch again
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "val_loss"))
        assert history == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
        writer.submit("a write to a run that does not exist", lambda: client.set_tag("0" * 32, "k", "v"))
        assert writer.close(timeout=60)
        assert writer.failed == ["a write to a run that does not exist"]
    finally:
        server.stop()
