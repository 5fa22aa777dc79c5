"""Registry and loading by name on a real mlflow server: champion/challenger aliases, loading in a
fresh process through depthtune.load_model and mlflow.pyfunc with pickle loading forbidden, and
what the logged model says of itself (signature, input example, test metrics, bundled code)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model

import depthtune
from conftest import TINY
from depthtune.models import build
from depthtune.predictor import DepthPredictor
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.loading import load_model, parse_reference
from depthtune.tracking.registry import example_image, log_depth_model, register_version, tracking_uri
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
    protocol, and one whose test score is the best of all but whose validation score is worse.
    Each run has, as a sweep's winner has, its selection metric at the step of the epoch whose
    weights are logged (1) and its test metrics after the last epoch (3). Last:
    the messages of the warnings that logging and registering raised."""
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (val_abs_rel, test_abs_rel, protocol) in enumerate(versions):
            torch.manual_seed(i)
            model = build("net12", **TINY["net12"]).eval()
            run = RunLogger.start(client, experiment, name=f"trial_{i}")
            test_metrics = {"abs_rel": test_abs_rel, "rmse": 1.0}
            run.log_epoch({"val_abs_rel": val_abs_rel}, step=1)
            run.log_epoch({f"test_{k}": v for k, v in test_metrics.items()}, step=3)
            logged = log_depth_model(model, run.run_id, server.uri, step=1)
            run.finish()
            registrations.append(
                register_version(
                    client,
                    server.uri,
                    logged,
                    "net12",
                    selection=("val_abs_rel", val_abs_rel),
                    test_metrics=test_metrics,
                    protocol=protocol,
                    tags={"sweep_run_id": "s", "data_sha256": "d"},
                )
            )
            models.append(model)
    return client, models, registrations, [str(w.message) for w in caught]


def test_champion_moves_only_when_beaten_under_the_same_protocol(registered):
    client, _, registrations, _ = registered
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
    _, models, _, _ = registered
    image = np.random.default_rng(1).integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    expected = DepthPredictor(models[1]).predict(image)
    for reference in ("net12@champion", "net12/2", "models:/net12@champion"):
        np.testing.assert_allclose(load_model(reference, tracking_uri=server.uri).predict(image), expected, rtol=1e-5)


def _save_image_and_expected_depth(registered, directory: Path, seed: int, shape: tuple[int, int, int]) -> None:
    """``image.npy`` and the champion's (v1's) depth of it, ``expected.npy``, for a fresh process to compare."""
    _, models, _, _ = registered
    image = np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8)
    np.save(directory / "image.npy", image)
    np.save(directory / "expected.npy", DepthPredictor(models[1]).predict(image))


@pytest.mark.parametrize("via", ["server", "sqlite-file"])
def test_fresh_process_loads_without_pickle(registered, server, tmp_path, via):
    """Only the package and the tracking URI: the server's, or the embedded store's file (no server)."""
    _save_image_and_expected_depth(registered, tmp_path, seed=2, shape=(120, 160, 3))
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


@pytest.fixture(scope="module")
def champion_files(registered, server, tmp_path_factory) -> Path:
    """The champion, version 2, as MLflow stores it."""
    with tracking_uri(server.uri):
        return Path(mlflow.artifacts.download_artifacts("models:/net12/2", dst_path=tmp_path_factory.mktemp("v2")))


def test_logging_raises_no_type_hint_warning(registered):
    messages = registered[3]
    assert not [m for m in messages if "type hint" in m], messages


def test_logged_model_has_a_tensor_signature_and_an_input_example(champion_files):
    model = Model.load(champion_files)
    assert [(s.type, s.shape) for s in model.signature.inputs.inputs] == [(np.dtype(np.uint8), (-1, -1, 3))]
    assert [(s.type, s.shape) for s in model.signature.outputs.inputs] == [(np.dtype(np.float32), (-1, -1))]
    example = model.load_input_example(champion_files)
    assert example.dtype == np.uint8
    np.testing.assert_array_equal(example, example_image())


def test_pyfunc_predicts_depth_and_refuses_what_the_signature_does_not_allow(registered, champion_files, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the model's code/ first on it
    _, models, _, _ = registered
    pyfunc = mlflow.pyfunc.load_model(str(champion_files))
    image = np.random.default_rng(4).integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    depth = pyfunc.predict(image)
    assert depth.dtype == np.float32 and depth.shape == (30, 40)
    np.testing.assert_allclose(depth, DepthPredictor(models[1]).predict(image), rtol=1e-5)
    with pytest.raises(MlflowException, match=r"Shape of input \(1, 30, 40, 3\) does not match"):
        pyfunc.predict(image[None])
    with pytest.raises(MlflowException, match="dtype of input float32 does not match expected dtype uint8"):
        pyfunc.predict(image.astype(np.float32))


def test_logged_model_carries_the_test_metrics(registered, champion_files):
    """On the logged model at the step the run has them, beside the metrics of the epoch whose weights
    were logged, and the run's history gains no second point."""
    client = registered[0]
    model = client.get_logged_model(Model.load(champion_files).model_id)
    assert {m.key: (m.value, m.step) for m in model.metrics} == {
        "val_abs_rel": (0.25, 1),
        "test_abs_rel": (0.27, 3),
        "test_rmse": (1.0, 3),
    }
    assert [(m.step, m.value) for m in client.get_metric_history(model.source_run_id, "test_abs_rel")] == [(3, 0.27)]


def test_model_bundles_the_package_code_and_does_not_require_depthtune(champion_files):
    assert Model.load(champion_files).flavors["python_function"]["code"] == "code"
    bundled = champion_files / "code" / "depthtune"
    for module in ("__init__.py", "metrics.py", "data/transforms.py", "models/eigen.py", "tracking/pyfunc_model.py"):
        assert (bundled / module).is_file(), module
    assert (bundled / "predictor.py").read_text() == (Path(depthtune.__file__).parent / "predictor.py").read_text()
    assert not list(bundled.rglob("__pycache__"))
    requirements = (champion_files / "requirements.txt").read_text().split()
    assert [r.split("==")[0] for r in requirements] == ["torch", "numpy", "mlflow"]


def test_pyfunc_loads_with_the_bundled_code_alone(registered, server, tmp_path):
    """A fresh process in which depthtune is importable only from the model's code/ folder, and the
    packages that only depthtune's training needs (h5py, ray, optuna, plotly) not at all."""
    _save_image_and_expected_depth(registered, tmp_path, seed=5, shape=(48, 64, 3))
    script = textwrap.dedent(
        f"""
        import os, sys
        from importlib.abc import MetaPathFinder
        from importlib.machinery import PathFinder

        class OnlyTheModelsCode(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                code = [p for p in sys.path if os.path.basename(p) == "code"] if name == "depthtune" else []
                spec = PathFinder.find_spec(name, code) if code else None
                if spec is None and name in {{"depthtune", "h5py", "ray", "optuna", "plotly"}}:
                    raise ModuleNotFoundError(f"{{name}} is blocked", name=name)
                return spec

        sys.meta_path.insert(0, OnlyTheModelsCode())
        try:
            import depthtune
            raise AssertionError(f"depthtune is importable before the model is loaded: {{depthtune.__file__}}")
        except ModuleNotFoundError:
            pass
        import numpy as np, mlflow
        depth = mlflow.pyfunc.load_model("models:/net12@champion").predict(np.load({str(tmp_path / "image.npy")!r}))
        np.testing.assert_allclose(depth, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-5)
        print("LOADED", depth.dtype, depth.shape, sys.modules["depthtune"].__file__)
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED float32 (48, 64) " in out.stdout and "/code/depthtune/__init__.py" in out.stdout, out.stdout


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
