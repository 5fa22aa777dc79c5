"""`depthtune serve start` checks an ``s3://`` artifact destination before it starts the server: it
writes a small object under it and deletes it again, so a wrong bucket or missing S3 permissions stop
the start (and so `ray up` on the cluster's head) instead of the first trial's upload. MLflow itself
starts on a wrong bucket without a word. A stand-in ``boto3`` module plays S3 here (no AWS account)."""

from __future__ import annotations

import sys
import types

import pytest

from depthtune.cli import main
from depthtune.serve.service import ARTIFACT_CHECK_KEY, check_artifact_store


class NoSuchBucket(Exception):
    """Stands in for botocore's ClientError with code NoSuchBucket."""


def fake_boto3(monkeypatch, buckets: set[str]) -> list[tuple]:
    """Install a ``boto3`` whose S3 client knows ``buckets``; returns the calls it receives."""
    calls: list[tuple] = []

    class S3:
        def __init__(self, endpoint_url):
            calls.append(("client", endpoint_url))

        def put_object(self, Bucket, Key, Body):
            calls.append(("put", Bucket, Key))
            if Bucket not in buckets:
                raise NoSuchBucket(f"An error occurred (NoSuchBucket) when calling the PutObject operation: {Bucket}")

        def delete_object(self, Bucket, Key):
            calls.append(("delete", Bucket, Key))

    module = types.ModuleType("boto3")
    module.client = lambda service, endpoint_url=None: S3(endpoint_url) if service == "s3" else pytest.fail(service)
    monkeypatch.setitem(sys.modules, "boto3", module)
    return calls


def test_a_writable_bucket_gets_a_test_object_under_the_destination_and_it_is_deleted(monkeypatch):
    calls = fake_boto3(monkeypatch, {"my-bucket"})
    check_artifact_store("s3://my-bucket/depthtune/mlflow-artifacts", env={})
    key = f"depthtune/mlflow-artifacts/{ARTIFACT_CHECK_KEY}"  # inside the prefix the head's IAM policy allows
    assert calls == [("client", None), ("put", "my-bucket", key), ("delete", "my-bucket", key)]


def test_the_check_uses_mlflows_s3_endpoint(monkeypatch):
    calls = fake_boto3(monkeypatch, {"b"})
    check_artifact_store("s3://b", env={"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert calls == [
        ("client", "http://127.0.0.1:9000"),
        ("put", "b", ARTIFACT_CHECK_KEY),
        ("delete", "b", ARTIFACT_CHECK_KEY),
    ]


def test_a_wrong_bucket_is_refused_by_name(monkeypatch):
    fake_boto3(monkeypatch, {"my-bucket"})
    with pytest.raises(ValueError, match=r"s3://YOUR-BUCKET/depthtune.*NoSuchBucket.*check the bucket name"):
        check_artifact_store("s3://YOUR-BUCKET/depthtune/mlflow-artifacts", env={})


def test_s3_without_boto3_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    with pytest.raises(ValueError, match=r"needs boto3"):
        check_artifact_store("s3://my-bucket/x", env={})


@pytest.mark.parametrize("destination", ["/srv/mlflow-artifacts", "file:///srv/a", "gs://bucket/a"])
def test_other_destinations_are_not_touched(monkeypatch, destination):
    calls = fake_boto3(monkeypatch, set())
    check_artifact_store(destination, env={})
    assert calls == []


def test_serve_start_with_a_wrong_bucket_fails_before_any_server_starts(monkeypatch, tmp_path, caplog):
    calls = fake_boto3(monkeypatch, {"my-bucket"})
    state_dir = tmp_path / "state"
    code = main(
        [
            "serve",
            "start",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination",
            "s3://wrong-bucket/depthtune/mlflow-artifacts",
            "--state-dir",
            str(state_dir),
            "--no-auth",
        ]
    )
    assert code == 2
    assert "s3://wrong-bucket/depthtune/mlflow-artifacts" in caplog.text and "NoSuchBucket" in caplog.text
    assert ("put", "wrong-bucket", f"depthtune/mlflow-artifacts/{ARTIFACT_CHECK_KEY}") in calls
    assert not (state_dir / "mlflow-server.pid").exists(), "no server was started"
