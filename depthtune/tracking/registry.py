"""The model registry: log a trained model as a pyfunc (weights + architecture JSON, no pickle),
register it as a new version of ``net12`` / ``net3`` / ``fcrn``, and move the ``champion`` alias
only when it beats the current champion on the validation metric it was selected on, under the
same protocol (else ``challenger``). Test metrics are recorded on every version for reporting and
never decide anything: choosing on them would spend the benchmark's test set on selection.

The logged model carries a tensor signature and an input example, bundles the depthtune package
(its ``code/`` folder) and requires only torch, numpy and mlflow: ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` work where depthtune is not installed."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import Schema, TensorSpec
from torch import nn

from depthtune.names import improves
from depthtune.predictor import save_model_files

logger = logging.getLogger(__name__)

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# One image (H, W, 3) of any size in, its depth (H, W) in metres out. A batch (N, H, W, 3) is refused
# by MLflow's enforcement: the rank is part of a tensor signature, and a single image is the common call.
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
)
CHAMPION, CHALLENGER = "champion", "challenger"
PROTOCOL_TAG = "eval_protocol"


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore what was there, including the
    ``MLFLOW_TRACKING_URI`` environment variable that ``set_tracking_uri`` also sets (child
    processes, e.g. a later sweep driver, would otherwise inherit the block's URI)."""
    previous, previous_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def example_image(height: int = 48, width: int = 64) -> np.ndarray:
    """A small uint8 RGB colour ramp (4:3, as NYU's frames): the input example stored with the model."""
    rows, cols = np.meshgrid(np.linspace(0, 255, height), np.linspace(0, 255, width), indexing="ij")
    return np.stack([rows, cols, (rows + cols) / 2], axis=-1).astype(np.uint8)


def pip_requirements() -> list[str]:
    """The versions that logged the model. depthtune is not one (it is on no index): it travels in ``code/``."""
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"mlflow=={mlflow.__version__}",
    ]


def log_depth_model(model: nn.Module, run_id: str, uri: str, step: int = 0) -> ModelInfo:
    """Log ``model`` into run ``run_id`` as a models-from-code pyfunc with the depthtune package
    bundled; returns what MLflow says of it (``model_uri``, ``model_id``, ``run_id``). ``step`` is
    the epoch whose weights these are: MLflow attaches the run's metrics at that step to the model."""
    with tempfile.TemporaryDirectory() as directory, tracking_uri(uri):
        weights, config = save_model_files(model, directory)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                step=step,
                python_model=str(PYFUNC_FILE),
                artifacts={"weights": str(weights), "config": str(config)},
                code_paths=[str(PACKAGE_DIR)],
                signature=SIGNATURE,
                input_example=example_image(),
                pip_requirements=pip_requirements(),
            )
    return info


def log_model_metrics(client: MlflowClient, model: ModelInfo, metrics: dict[str, float]) -> None:
    """Put ``metrics`` on the logged model (its page in the MLflow UI lists them). MLflow also writes
    them into the model's run: one the run already has is sent at that point's step and time, which
    the run stores once, so its history gains no second point."""
    now, batch = int(time.time() * 1000), []
    for key, value in metrics.items():
        logged = [m for m in client.get_metric_history(model.run_id, key) if m.value == value]
        step, timestamp = (logged[-1].step, logged[-1].timestamp) if logged else (0, now)
        batch.append(Metric(key, value, timestamp, step, model_id=model.model_id))
    client.log_batch(model.run_id, metrics=batch)


@dataclass
class Registration:
    """A registered version and the alias it got."""

    name: str
    version: str
    alias: str
    previous_champion: str | None
    reason: str


def register_version(
    client: MlflowClient,
    uri: str,
    model: ModelInfo,
    name: str,
    *,
    selection: tuple[str, float],
    test_metrics: dict[str, float],
    protocol: dict[str, object],
    tags: dict[str, str],
) -> Registration:
    """New version of ``name`` from the logged ``model``; ``champion`` moves to it only if it beats the champion on the
    validation metric ``selection`` names (e.g. ``("val_abs_rel", 0.21)``) under an identical
    protocol, which includes that metric's name, otherwise it becomes ``challenger``. The test
    metrics, for reporting, are tags (``test_<name>``) of the version and metrics of its logged model."""
    compare_on, new_value = selection
    protocol_json = json.dumps({**protocol, "selection_metric": compare_on}, sort_keys=True)
    all_tags = {
        **tags,
        PROTOCOL_TAG: protocol_json,
        compare_on: f"{new_value:.6g}",
        **{f"test_{k}": f"{v:.6g}" for k, v in test_metrics.items()},
    }
    with tracking_uri(uri):
        version = mlflow.register_model(model.model_uri, name, tags=all_tags).version
    log_model_metrics(client, model, {f"test_{k}": float(v) for k, v in test_metrics.items()})
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is None:
        alias, reason = CHAMPION, "first version with this name"
    elif champion.tags.get(PROTOCOL_TAG) != protocol_json:
        alias, reason = (
            CHALLENGER,
            f"champion v{champion.version} was evaluated under another protocol ({champion.tags.get(PROTOCOL_TAG)})",
        )
    else:
        old_value = float(champion.tags[compare_on])
        won = improves(compare_on, new_value, old_value)
        alias = CHAMPION if won else CHALLENGER
        reason = f"{compare_on} {new_value:.4f} vs champion v{champion.version} {old_value:.4f}"
    client.set_registered_model_alias(name, alias, str(version))
    logger.info("registered %s v%s as %s (%s)", name, version, alias, reason)
    return Registration(name, str(version), alias, str(champion.version) if champion else None, reason)
