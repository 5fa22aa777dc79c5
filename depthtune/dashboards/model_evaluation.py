"""Registered models evaluated side by side on the same test split under the same protocol: the
Eigen metrics, error by depth range and near depth edges, predictions on a fixed set of test
images, and inference latency and size measured on this machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from scipy.ndimage import binary_dilation

from depthtune.data import NYUArrays, read_nyu
from depthtune.data.source import file_sha256
from depthtune.evaluation import data_splits, pick_device
from depthtune.metrics import EIGEN_PROTOCOL, EvalProtocol, MetricAccumulator, valid_mask
from depthtune.predictor import DepthPredictor
from depthtune.tracking.loading import check_exists, load_model, parse_reference
from depthtune.tracking.registry import PROTOCOL_TAG
from depthtune.train_config import TrainConfig

logger = logging.getLogger(__name__)

MODEL_FAMILIES = ("net12", "net3", "fcrn")
DEPTH_BINS = (("0-2 m", 0.0, 2.0), ("2-5 m", 2.0, 5.0), ("> 5 m", 5.0, float("inf")))
EDGE_STEP = 0.1  # |log-depth step| between neighbours that counts as a depth edge
EDGE_RADIUS = 4  # pixels around an edge counted as "near" it (a 9x9 neighbourhood)
SHOWN_IMAGES = 6


@dataclass
class ModelEntry:
    """A registered version with what it was evaluated under, the trial config that trained it and
    the sweep's model-size profile (``cpu``, ``paper``) and variant (``paper``, ``project``)."""

    label: str
    name: str
    version: str
    protocol: dict
    train_config: TrainConfig
    predictor: DepthPredictor
    profile: str = "unknown"
    variant: str = "unknown"

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.predictor.module.parameters())


@dataclass
class ModelResult:
    """One model's numbers on the test split and its predictions on the shown images."""

    metrics: dict[str, float]
    by_depth: dict[str, float]
    by_edges: dict[str, float]
    latency_ms: float
    predictions: list[np.ndarray] = field(default_factory=list)


def default_references(client: MlflowClient) -> list[str]:
    """The champions of net12, net3 and fcrn that exist."""
    found = []
    for name in MODEL_FAMILIES:
        try:
            client.get_model_version_by_alias(name, "champion")
        except mlflow.exceptions.MlflowException:
            continue
        found.append(f"{name}@champion")
    if not found:
        raise ValueError(
            f"no champion of {list(MODEL_FAMILIES)} is registered at {client.tracking_uri}; run a sweep first"
        )
    return found


def load_entry(client: MlflowClient, uri: str, reference: str) -> ModelEntry:
    """A registered model with its evaluation protocol and its training config (data path, split)."""
    name, alias, version = parse_reference(reference)
    check_exists(client, name, alias, version)
    found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    if PROTOCOL_TAG not in found.tags:
        raise ValueError(
            f"{reference} (version {found.version}) has no {PROTOCOL_TAG!r} tag: "
            "it was not registered by a depthtune sweep"
        )
    with tempfile.TemporaryDirectory() as directory:
        config_file = client.download_artifacts(found.run_id, "trial_config.json", directory)
        train_config = TrainConfig.from_dict(
            json.loads(Path(config_file).read_text()), where=f"{reference}: trial_config.json"
        )
    predictor = load_model(f"{name}/{found.version}", tracking_uri=uri, device=str(pick_device("auto")))
    label = f"{name} v{found.version}" + (f" (@{alias})" if alias else "")
    return ModelEntry(
        label,
        name,
        str(found.version),
        json.loads(found.tags[PROTOCOL_TAG]),
        train_config,
        predictor,
        found.tags.get("profile", "unknown"),
        found.tags.get("variant", "unknown"),
    )


def check_same_protocol(entries: list[ModelEntry]) -> dict:
    """The protocol all entries share; models evaluated differently are refused, by name."""
    protocols = {json.dumps(e.protocol, sort_keys=True) for e in entries}
    if len(protocols) > 1:
        listing = "; ".join(f"{e.label}: {json.dumps(e.protocol, sort_keys=True)}" for e in entries)
        raise ValueError(
            f"refusing to compare models evaluated under different protocols (split, crop, depth cap, data): {listing}"
        )
    return entries[0].protocol


def test_data(entry: ModelEntry, protocol: dict, data: str | None = None) -> tuple[NYUArrays, list[int]]:
    """The test frames the protocol names, from ``data`` or the file the model was trained on;
    the file must be the one the protocol's sha256 recorded."""
    path = Path(data or entry.train_config.data or "")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} (from {entry.label}'s training config) does not exist; pass --data")
    if protocol.get("data_sha256") and file_sha256(path) != protocol["data_sha256"]:
        raise ValueError(
            f"data file {path} is not the file the models were evaluated on (sha256 differs from the protocol's)"
        )
    arrays = read_nyu(path)
    splits = data_splits(entry.train_config, arrays.scenes)
    if len(splits.test) != protocol.get("test_frames", len(splits.test)):
        raise ValueError(
            f"the split gives {len(splits.test)} test frames; the protocol recorded {protocol['test_frames']}"
        )
    return arrays, list(splits.test)


def edge_mask(depth: np.ndarray) -> np.ndarray:
    """Pixels within EDGE_RADIUS of a depth discontinuity (|log-depth step| > EDGE_STEP)."""
    log_depth = np.log(np.where(depth > 0, depth, np.nan))
    edges = np.zeros(depth.shape, dtype=bool)
    step_y = np.abs(np.diff(log_depth, axis=0)) > EDGE_STEP
    step_x = np.abs(np.diff(log_depth, axis=1)) > EDGE_STEP
    edges[:-1] |= step_y
    edges[1:] |= step_y
    edges[:, :-1] |= step_x
    edges[:, 1:] |= step_x
    return binary_dilation(edges, structure=np.ones((2 * EDGE_RADIUS + 1,) * 2, dtype=bool))


class _PooledAbsRel:
    """abs rel pooled over the pixels of several images, per named group."""

    def __init__(self, groups: list[str]) -> None:
        self.sums = dict.fromkeys(groups, 0.0)
        self.counts = dict.fromkeys(groups, 0)

    def add(self, group: str, error: np.ndarray) -> None:
        self.sums[group] += float(error.sum())
        self.counts[group] += int(error.size)

    def result(self) -> dict[str, float]:
        return {g: (self.sums[g] / self.counts[g] if self.counts[g] else float("nan")) for g in self.sums}


def _latency_ms(predictor: DepthPredictor, image: np.ndarray, repeats: int = 10) -> float:
    for _ in range(2):
        predictor.predict(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def evaluate_entry(
    entry: ModelEntry, arrays: NYUArrays, test: list[int], shown: list[int], protocol: EvalProtocol = EIGEN_PROTOCOL
) -> ModelResult:
    """Every number the dashboard shows for one model, from one pass over the test frames; the
    metrics table under ``protocol``, the breakdowns over its valid pixels."""
    accumulator = MetricAccumulator(protocol)
    by_depth = _PooledAbsRel([label for label, _, _ in DEPTH_BINS])
    by_edges = _PooledAbsRel(["near edges", "elsewhere"])
    predictions = []
    for index in test:
        truth = arrays.depths[index]
        predicted = entry.predictor.predict(arrays.images[index])
        accumulator.update(torch.from_numpy(predicted)[None], torch.from_numpy(truth)[None])
        valid = valid_mask(torch.from_numpy(truth)[None], protocol)[0].numpy()
        clamped = np.clip(predicted, protocol.min_depth, protocol.max_depth)
        error = np.abs(clamped - truth) / np.where(valid, truth, 1.0)
        for label, low, high in DEPTH_BINS:
            by_depth.add(label, error[valid & (truth >= low) & (truth < high)])
        near = edge_mask(truth)
        by_edges.add("near edges", error[valid & near])
        by_edges.add("elsewhere", error[valid & ~near])
        if index in shown:
            predictions.append(predicted)
    return ModelResult(
        metrics=accumulator.compute(),
        by_depth=by_depth.result(),
        by_edges=by_edges.result(),
        latency_ms=_latency_ms(entry.predictor, arrays.images[test[0]]),
        predictions=predictions,
    )


def device_description() -> str:
    """The machine the latency was measured on."""
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
