"""What a sweep run by gpu_sweep.sh did, read back from its own MLflow store as anyone would read it
(MlflowClient on the ``mlflow.db`` the sweep's local tracking server kept in its working folder):
trials per hour, each trial's training images/s, GPU utilisation and peak GPU memory; then the
registered winner loaded by name (``depthtune.load_model("<model>@champion")``) and run once.

    python benchmarks/gpu_sweep_report.py --workdir DIR --name NAME [--wall-seconds S] [--json PATH]

- trials/hour: the sweep's trials over three spans: from the first trial's start to the last one's end
  (training only), over the sweep's MLflow run (also the winner's test evaluation and registration),
  and over the command's wall time (``--wall-seconds``: also Ray's and the tracking server's start).
- images/s: the median over a trial's epochs of its ``images_per_second`` metric (the training pass
  of each epoch, the loader's waits included); the first epoch is given apart (start-up, cuDNN).
- GPU utilisation: the mean of the trial run's ``system/gpu_<i>_utilization_percentage`` samples
  (MLflow's system metrics, of the GPUs Ray gave the trial; with a fraction of a GPU per trial the
  trials sharing it see the same device figure), or the node's CPU when it logged no GPU metric.
- peak GPU memory: the largest ``gpu_peak_memory_gb`` a trial logged (its own process's
  ``torch.cuda.max_memory_allocated``, logged on CUDA only: "n/a" otherwise), and the largest
  ``system/gpu_<i>_memory_usage_megabytes`` (the whole device as NVML sees it, every trial on it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Run

import depthtune
from depthtune.serve.server import embedded_store
from depthtune.sweep.state import load_state
from depthtune.tracking.runs import SWEEP_TAG, TRIAL_TAG
from depthtune.tracking.system_metrics import PREFIX, mean_utilisation

PEAK_MEMORY = "gpu_peak_memory_gb"
HOUR_MS = 3600 * 1000


@dataclass
class Trial:
    """One trial's figures, as its MLflow run holds them."""

    trial_id: str
    run_id: str
    status: str
    epochs: int
    first_epoch_images_per_s: float | None
    images_per_s: float | None
    utilisation_device: str | None
    utilisation_percent: float | None
    utilisation_samples: int
    peak_memory_gb: float | None
    nvml_memory_gb: float | None


def history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """A metric's values by step."""
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def largest(client: MlflowClient, run_id: str, keys: list[str]) -> float | None:
    """The largest value any of ``keys`` took in the run, or None when it logged none of them."""
    values = [value for key in keys for value in history(client, run_id, key)]
    return max(values) if values else None


def trial_figures(client: MlflowClient, run: Run) -> Trial:
    """Images/s, utilisation and memory of one trial's run."""
    run_id = run.info.run_id
    logged = list(run.data.metrics)
    rates = history(client, run_id, "images_per_second")
    utilisation = mean_utilisation(client, run_id, logged)
    nvml = [k for k in logged if k.startswith(f"{PREFIX}gpu_") and k.endswith("_memory_usage_megabytes")]
    nvml_mb = largest(client, run_id, nvml)
    return Trial(
        trial_id=run.data.tags.get(TRIAL_TAG, "?"),
        run_id=run_id,
        status=run.info.status,
        epochs=len(rates),
        first_epoch_images_per_s=rates[0] if rates else None,
        images_per_s=statistics.median(rates[1:] or rates) if rates else None,
        utilisation_device=utilisation.device if utilisation else None,
        utilisation_percent=utilisation.mean_percent if utilisation else None,
        utilisation_samples=utilisation.samples if utilisation else 0,
        peak_memory_gb=largest(client, run_id, [PEAK_MEMORY]),
        nvml_memory_gb=nvml_mb / 1024 if nvml_mb is not None else None,
    )


def per_hour(count: int, milliseconds: float | None) -> float | None:
    """``count`` per hour over a span in milliseconds."""
    return count * HOUR_MS / milliseconds if milliseconds else None


def fmt(value: float | None, spec: str) -> str:
    """Format a figure, or 'n/a' when absent."""
    return "n/a" if value is None else format(value, spec)


def load_by_name(model: str, uri: str, device: str) -> dict:
    """Load the sweep's registered winner by name as a user does and predict one 480x640 frame (noise:
    the load and the forward pass are what is checked)."""
    reference = f"{model}@champion"
    started = time.perf_counter()
    predictor = depthtune.load_model(reference, tracking_uri=uri, device=device)
    loaded = time.perf_counter() - started
    rgb = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    predictor.predict(rgb)  # the first call pays the device's start-up
    started = time.perf_counter()
    depth = predictor.predict(rgb)
    return {
        "reference": reference,
        "device": device,
        "load_seconds": loaded,
        "predict_seconds": time.perf_counter() - started,
        "depth_shape": list(depth.shape),
        "depth_range_m": [float(depth.min()), float(depth.max())],
    }


def main() -> int:
    """Read the sweep, print its trials and the load by name, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="the folder the sweep ran in (its mlflow.db)")
    parser.add_argument("--name", required=True, help="the sweep's name (--name of depthtune tune)")
    parser.add_argument("--storage-path", type=Path, help="Tune's storage (default: WORKDIR/ray_results)")
    parser.add_argument("--wall-seconds", type=float, help="the sweep command's wall time")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    experiment_dir = (args.storage_path or args.workdir / "ray_results") / args.name
    state = load_state(experiment_dir)
    if state is None:
        print(f"gpu_sweep_report: no sweep state in {experiment_dir}: the sweep did not start")
        return 1
    uri = embedded_store(args.workdir)[0]
    client = MlflowClient(uri)
    sweep = client.get_run(state.parent_run_id)
    model = sweep.data.params.get("model", "?")
    runs = client.search_runs([sweep.info.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{state.parent_run_id}'")
    trials = sorted((trial_figures(client, run) for run in runs), key=lambda t: t.trial_id)
    starts = [run.info.start_time for run in runs]
    ends = [run.info.end_time for run in runs if run.info.end_time]
    training_ms = max(ends) - min(starts) if starts and ends else None
    sweep_ms = sweep.info.end_time - sweep.info.start_time if sweep.info.end_time else None
    rates = {
        "training (first trial start to last trial end)": per_hour(len(trials), training_ms),
        "sweep run (with test evaluation and registration)": per_hour(len(trials), sweep_ms),
        "command wall time (with Ray and tracking server start)": per_hour(
            len(trials), args.wall_seconds * 1000 if args.wall_seconds else None
        ),
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU"
    print(
        f"\ngpu_sweep [{gpu}] sweep {args.name} ({model}, {len(trials)} trials, sweep run {state.parent_run_id} "
        f"{sweep.info.status}); tracking store {uri}"
    )
    for span, rate in rates.items():
        print(f"trials/hour over the {span}: {fmt(rate, '.1f')}")
    print(
        "\n| trial | status | epochs | images/s (median, epochs 2+) | images/s epoch 1 | mean utilisation "
        "| peak GPU memory, trial (GiB) | GPU memory in use, NVML (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for t in trials:
        utilisation = (
            f"{t.utilisation_device} {t.utilisation_percent:.0f}% ({t.utilisation_samples} samples)"
            if (t.utilisation_percent is not None)
            else "n/a"
        )
        print(
            f"| {t.trial_id} | {t.status} | {t.epochs} | {fmt(t.images_per_s, '.0f')} | "
            f"{fmt(t.first_epoch_images_per_s, '.0f')} | {utilisation} | {fmt(t.peak_memory_gb, '.2f')} | "
            f"{fmt(t.nvml_memory_gb, '.1f')} |"
        )
    loaded = load_by_name(model, uri, device)
    print(
        f"\nloaded {loaded['reference']} by name in {loaded['load_seconds']:.1f} s (depthtune.load_model, {device}); "
        f"one 480x640 frame -> depth {loaded['depth_shape'][0]}x{loaded['depth_shape'][1]}, "
        f"{loaded['depth_range_m'][0]:.2f}-{loaded['depth_range_m'][1]:.2f} m in {loaded['predict_seconds']:.3f} s"
    )
    if args.json:
        report = {
            "gpu": gpu,
            "torch": torch.__version__,
            "sweep": args.name,
            "model": model,
            "sweep_run_id": state.parent_run_id,
            "sweep_status": sweep.info.status,
            "tracking_uri": uri,
            "wall_seconds": args.wall_seconds,
            "trials_per_hour": rates,
            "trials": [asdict(t) for t in trials],
            "load_by_name": loaded,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
