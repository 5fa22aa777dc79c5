"""The data a run trained on, as an MLflow dataset input: the UI's "Datasets used" column and run
page show its name, digest and source, and its profile gives the split the run used."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from depthtune.data.splits import SPLIT_NAMES, Splits

DIGEST_CHARS = 36  # the width of MLflow's dataset digest column: the file's sha256, cut to fit


def log_dataset(client: MlflowClient, run_id: str, path: Path, sha256: str, splits: Splits) -> None:
    """Record ``path`` (sha256 ``sha256``) as run ``run_id``'s training input, with the frames of
    each split and where the split came from as its profile."""
    profile = {name: int(splits.get(name).size) for name in SPLIT_NAMES} | {"split": splits.source}
    dataset = Dataset(
        name=path.name,
        digest=sha256[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": str(path.resolve())}),
        profile=json.dumps(profile),
    )
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])])
