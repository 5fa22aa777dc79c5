"""The model registry: log a trained model as a pyfunc (weights + architecture JSON, no pickle),
register it as a new version of ``net12`` / ``net3`` / ``fcrn``, and move the ``champion`` alias
only when it beats the current champion on the validation metric it was selected on, under the
same protocol (else ``challenger``). Test metrics are recorded on every version for reporting and
never decide anything: choosing on them would spend the benchmark's test set on selection."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from depthtune.names import improves
from depthtune.predictor import save_model_files

logger = logging.getLogger(__name__)

PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
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


def log_depth_model(model: nn.Module, run_id: str, uri: str) -> str:
    """Log ``model`` into run ``run_id`` as a models-from-code pyfunc; returns its model URI."""
    with tempfile.TemporaryDirectory() as directory, tracking_uri(uri):
        weights, config = save_model_files(model, directory)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_FILE),
                artifacts={"weights": str(weights), "config": str(config)},
                pip_requirements=["depthtune", "torch", "numpy", "mlflow"],
            )
    return info.model_uri


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
    model_uri: str,
    name: str,
    *,
    selection: tuple[str, float],
    test_metrics: dict[str, float],
    protocol: dict[str, object],
    tags: dict[str, str],
) -> Registration:
    """New version of ``name``; ``champion`` moves to it only if it beats the champion on the
    validation metric ``selection`` names (e.g. ``("val_abs_rel", 0.21)``) under an identical
    protocol, which includes that metric's name, otherwise it becomes ``challenger``. The test
    metrics are tags (``test_<name>``) for reporting."""
    compare_on, new_value = selection
    protocol_json = json.dumps({**protocol, "selection_metric": compare_on}, sort_keys=True)
    all_tags = {
        **tags,
        PROTOCOL_TAG: protocol_json,
        compare_on: f"{new_value:.6g}",
        **{f"test_{k}": f"{v:.6g}" for k, v in test_metrics.items()},
    }
    with tracking_uri(uri):
        version = mlflow.register_model(model_uri, name, tags=all_tags).version
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
