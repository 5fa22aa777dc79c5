"""System metrics of a run through MLflow's own monitor (CPU %, RAM, disk and network of the node;
GPU utilisation, memory and power on CUDA nodes, restricted to the GPUs the trial was given), and
the mean utilisation a dashboard shows per trial: the figure that says whether a GPU is starved."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

logger = logging.getLogger(__name__)

PREFIX = "system/"
CPU_UTILISATION = f"{PREFIX}cpu_utilization_percentage"


def monitor_system(
    run_id: str, uri: str, every_s: float, *, resume: bool, gpu_ids: list[int] | None = None
) -> SystemMetricsMonitor | None:
    """Start sampling the node every ``every_s`` seconds into run ``run_id`` (steps continue after a
    resumed run's last one); None when ``every_s`` is 0. On a GPU node only ``gpu_ids`` (the
    devices Ray gave the trial; none: a CPU trial) are sampled, not every GPU of the node."""
    if every_s <= 0:
        return None
    monitor = SystemMetricsMonitor(run_id, sampling_interval=every_s, resume_logging=resume, tracking_uri=uri)
    if gpu_ids is not None:
        for gpus in [m for m in monitor.monitors if isinstance(m, GPUMonitor)]:
            if gpu_ids:
                gpus.gpu_handles = [gpus.gpu_handles[i] for i in gpu_ids if i < len(gpus.gpu_handles)]
                gpus.num_gpus = len(gpus.gpu_handles)
            else:
                monitor.monitors.remove(gpus)
    monitor.start()
    return monitor


@dataclass(frozen=True)
class Utilisation:
    """A run's mean utilisation over its samples: of its GPUs when it had any, else of the node's CPUs."""

    device: str
    mean_percent: float
    samples: int


def mean_utilisation(client: MlflowClient, run_id: str, logged: list[str]) -> Utilisation | None:
    """The run's mean GPU utilisation (all its GPUs' samples pooled), or its node's mean CPU
    utilisation when it logged no GPU metric (from its second sample on); None without system
    metrics. ``logged``: the run's metric keys."""
    gpu_keys = [key for key in logged if key.startswith(f"{PREFIX}gpu_") and key.endswith("_utilization_percentage")]
    keys, device = (gpu_keys, "GPU") if gpu_keys else ([CPU_UTILISATION] if CPU_UTILISATION in logged else [], "CPU")
    # psutil's first CPU reading in a process has nothing to compare with and is 0: not a sample
    values = [
        metric.value
        for key in keys
        for metric in client.get_metric_history(run_id, key)
        if not (key == CPU_UTILISATION and metric.step == 0)
    ]
    if not values:
        return None
    return Utilisation(device, sum(values) / len(values), len(values))
