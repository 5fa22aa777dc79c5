"""Registry and loading by name on a real mlflow server: champion/challenger aliases, loading in a
fresh process through depthtune.load_model and mlflow.pyfunc with pickle loading forbidden."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from conftest import TINY
from depthtune.models import build
from depthtune.predictor import DepthPredictor
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.loading import load_model, parse_reference
from depthtune.tracking.registry import log_depth_model, register_version
from depthtune.tracking.runs import RunLogger

PROTOCOL = {"split": "random(seed=0)", "crop": "eigen", "max_depth": 10.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("registry")
    with TrackingServer(*embedded_store(directory), log_path=directory / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def registered(server):
    """Versions 1..5 of net12 by validation abs rel: better, better, worse, one under another
    protocol, and one whose test score is the best of all but whose validation score is worse."""
    client = MlflowClient(server.uri)
    experiment = client.create_experiment("registry-test")
    models, registrations = [], []
    versions = [
        (0.30, 0.31, PROTOCOL),
        (0.25, 0.27, PROTOCOL),
        (0.40, 0.41, PROTOCOL),
        (0.10, 0.11, {**PROTOCOL, "split": "splits.mat"}),
        (0.26, 0.05, PROTOCOL),
    ]
    for i, (val_abs_rel, test_abs_rel, protocol) in enumerate(versions):
        torch.manual_seed(i)
        model = build("net12", **TINY["net12"]).eval()
        run = RunLogger.start(client, experiment, name=f"trial_{i}")
        model_uri = log_depth_model(model, run.run_id, server.uri)
        run.finish()
        registrations.append(
            register_version(
                client,
                server.uri,
                model_uri,
                "net12",
                selection=("val_abs_rel", val_abs_rel),
                test_metrics={"abs_rel": test_abs_rel, "rmse": 1.0},
                protocol=protocol,
                tags={"sweep_run_id": "s", "data_sha256": "d"},
            )
        )
        models.append(model)
    return client, models, registrations


def test_champion_moves_only_when_beaten_under_the_same_protocol(registered):
    client, _, registrations = registered
    assert [(r.version, r.alias) for r in registrations] == [
        ("1", "champion"),
        ("2", "champion"),
        ("3", "challenger"),
        ("4", "challenger"),
        ("5", "challenger"),
    ]
    assert "another protocol" in registrations[3].reason
    # the best test score does not make a champion: selection is on validation, test is reported
    assert registrations[4].reason == "val_abs_rel 0.2600 vs champion v2 0.2500"
    assert client.get_model_version_by_alias("net12", "champion").version == "2"
    tags = client.get_model_version("net12", "2").tags
    assert tags["val_abs_rel"] == "0.25" and tags["test_abs_rel"] == "0.27" and tags["sweep_run_id"] == "s"
    assert json.loads(tags["eval_protocol"]) == {**PROTOCOL, "selection_metric": "val_abs_rel"}


def test_load_by_name_alias_version_and_uri(registered, server):
    _, models, _ = registered
    image = np.random.default_rng(1).integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    expected = DepthPredictor(models[1]).predict(image)
    for reference in ("net12@champion", "net12/2", "models:/net12@champion"):
        np.testing.assert_allclose(load_model(reference, tracking_uri=server.uri).predict(image), expected, rtol=1e-5)


@pytest.mark.parametrize("via", ["server", "sqlite-file"])
def test_fresh_process_loads_without_pickle(registered, server, tmp_path, via):
    """Only the package and the tracking URI: the server's, or the embedded store's file (no server)."""
    _, models, _ = registered
    image = np.random.default_rng(2).integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "expected.npy", DepthPredictor(models[1]).predict(image))
    script = textwrap.dedent(
        f"""
        import numpy as np, mlflow, depthtune
        image = np.load({str(tmp_path / "image.npy")!r})
        expected = np.load({str(tmp_path / "expected.npy")!r})
        ours = depthtune.load_model("net12@champion")
        np.testing.assert_allclose(ours.predict(image), expected, rtol=1e-5)
        assert type(ours.module).__name__ == "Net12"
        theirs = mlflow.pyfunc.load_model("models:/net12@champion")
        np.testing.assert_allclose(theirs.predict(image), expected, rtol=1e-5)
        print("LOADED")
        """
    )
    uri = server.uri if via == "server" else server.backend_store_uri
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0 and "LOADED" in out.stdout, out.stderr[-3000:]


def test_unknown_names_and_aliases_list_what_exists(registered, server):
    with pytest.raises(ValueError, match=r"no registered model 'unet'; registered models: \['net12'\]"):
        load_model("unet@champion", tracking_uri=server.uri)
    with pytest.raises(ValueError, match="no alias 'best'; its aliases: .*'challenger': '5', 'champion': '2'"):
        load_model("net12@best", tracking_uri=server.uri)
    with pytest.raises(ValueError, match=r"no version 9; versions: \[1, 2, 3, 4, 5\]"):
        load_model("net12/9", tracking_uri=server.uri)


@pytest.mark.parametrize(
    "reference, parsed",
    [
        ("fcrn@champion", ("fcrn", "champion", None)),
        ("fcrn/3", ("fcrn", None, "3")),
        ("models:/net3@challenger", ("net3", "challenger", None)),
    ],
)
def test_parse_reference(reference, parsed):
    assert parse_reference(reference) == parsed


def test_bad_reference_is_named():
    with pytest.raises(ValueError, match="'fcrn:3'"):
        parse_reference("fcrn:3")


def test_predict_command_writes_npy_and_png(registered, server, tmp_path):
    from PIL import Image

    image = np.random.default_rng(3).integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "room.png")

    def predict(model: str, out: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "depthtune.cli", "predict", str(tmp_path / "room.png")]
        return subprocess.run(
            [*command, "--model", model, "--out", str(out)],
            env={**os.environ, "MLFLOW_TRACKING_URI": server.uri},
            capture_output=True,
            text=True,
            timeout=300,
        )

    for name in ("depth.npy", "depth.png"):
        out = predict("net12@champion", tmp_path / name)
        assert out.returncode == 0, out.stderr[-2000:]
    depth = np.load(tmp_path / "depth.npy")
    assert depth.shape == (60, 80) and (depth > 0).all()
    millimetres = np.asarray(Image.open(tmp_path / "depth.png"))
    np.testing.assert_allclose(millimetres, np.clip(depth * 1000, 0, 65535).astype(np.uint16), atol=1)
    bad = predict("net12@gold", tmp_path / "x.npy")
    assert bad.returncode == 2 and "no alias 'gold'" in bad.stderr
