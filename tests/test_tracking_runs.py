"""Runs owned by depthtune on a real mlflow server: nesting, batched epochs, resume, statuses, and the
prediction grids trials log to them."""

import re

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from conftest import TINY
from depthtune.models import build
from depthtune.predictor import DepthPredictor
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.previews import GRID_KEY, HEADER, log_grid, prediction_grid
from depthtune.tracking.runs import EXPERIMENT_KIND, RunLogger, find_run, training_experiment


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mlflow")
    with TrackingServer(*embedded_store(directory), log_path=directory / "server.log") as running:
        yield running


def test_training_experiments_open_on_their_runs_in_the_ui(server):
    """A new experiment is created with the model-training kind; one made without it (by an earlier
    version, or by hand) gets the tag, keeping its id."""
    client = MlflowClient(server.uri)
    key, kind = EXPERIMENT_KIND
    created = training_experiment(client, "kind-new")
    assert client.get_experiment(created).tags[key] == kind
    untagged = client.create_experiment("kind-old")
    assert key not in client.get_experiment(untagged).tags
    assert training_experiment(client, "kind-old") == untagged
    assert client.get_experiment(untagged).tags[key] == kind
    assert training_experiment(client, "kind-new") == created


def test_child_run_nested_batched_and_resumed(server, tmp_path):
    client = MlflowClient(server.uri)
    experiment = client.create_experiment("runs-test")
    parent = RunLogger.start(client, experiment, name="sweep", params={"num_samples": 4})
    child = RunLogger.start(
        client, experiment, name="trial_0", parent_run_id=parent.run_id, params={"lr": 0.01}, tags={"trial_id": "t0"}
    )
    child.log_epoch({"val_loss": 0.5, "train_loss": 0.7, "nan_metric": float("nan")}, step=0)

    restored = RunLogger.resume(
        client, find_run(client, experiment, {"trial_id": "t0", "mlflow.parentRunId": parent.run_id})
    )
    assert restored.logged_steps("val_loss") == {0}
    assert client.get_run(restored.run_id).info.status == "RUNNING"
    restored.log_epoch({"val_loss": 0.4, "train_loss": 0.6}, step=1)
    restored.finish("KILLED")
    parent.finish()

    run = client.get_run(child.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.tags["trial_id"] == "t0"
    assert run.data.params == {"lr": "0.01"}
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "val_loss")] == [(0, 0.5), (1, 0.4)]
    assert "nan_metric" not in run.data.metrics
    assert len(client.search_runs([experiment])) == 2


def test_bad_status_is_refused(server):
    client = MlflowClient(server.uri)
    run = RunLogger.start(client, client.create_experiment("status-test"), name="r")
    with pytest.raises(ValueError, match="'DONE'"):
        run.finish("DONE")


def test_find_run_by_dotted_tags(server):
    client = MlflowClient(server.uri)
    experiment = client.create_experiment("find-test")
    run = RunLogger.start(client, experiment, name="r", tags={"depthtune.trial_id": "abc_00001"})
    RunLogger.start(client, experiment, name="other", tags={"depthtune.trial_id": "abc_00002"})
    assert find_run(client, experiment, {"depthtune.trial_id": "abc_00001"}) == run.run_id
    assert find_run(client, experiment, {"depthtune.trial_id": "abc_00003"}) is None


def test_prediction_grid_logged_as_a_stepped_image_and_a_lossless_png(server, tmp_path):
    client = MlflowClient(server.uri)
    run = RunLogger.start(client, client.create_experiment("grid-test"), name="trial")
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    log_grid(client, run.run_id, Image.fromarray(pixels), step=1)
    log_grid(client, run.run_id, Image.fromarray(pixels[::-1]), step=3)
    names = sorted(a.path for a in client.list_artifacts(run.run_id, "images"))
    pngs = [name for name in names if name.endswith(".png")]
    assert [re.match(rf"images/{GRID_KEY}\+step\+(\d+)\+", name).group(1) for name in pngs] == ["1", "3"]
    assert len(names) == 4  # beside each PNG, the small copy the UI's step slider shows
    assert client.get_run(run.run_id).data.tags["mlflow.loggedImages"] == "True"
    local = client.download_artifacts(run.run_id, pngs[0], str(tmp_path))
    with Image.open(local) as image:
        assert image.format == "PNG"
        assert np.array_equal(np.asarray(image), pixels)


def test_prediction_grid_has_a_row_per_frame_at_half_size(synthetic_arrays):
    predictor = DepthPredictor(build("net12", **TINY["net12"]))
    grid = prediction_grid(predictor, synthetic_arrays, [2, 0, 1], "epoch 4")
    height, width = synthetic_arrays.images.shape[1:3]
    assert grid.size == (3 * (width // 2), 3 * (height // 2) + HEADER)
    pixels = np.asarray(grid)[HEADER:]
    first_rgb = pixels[: height // 2, : width // 2]
    assert (
        np.abs(
            first_rgb.astype(int)
            - np.asarray(Image.fromarray(synthetic_arrays.images[2]).resize((width // 2, height // 2), Image.BILINEAR))
        ).max()
        == 0
    )
