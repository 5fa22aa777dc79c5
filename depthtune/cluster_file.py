"""The Ray cluster file (``ray_cluster.yaml``) as settings: its node types, whether a sweep's trials fit
on them (caught before a ``ray up``, not by a sweep waiting forever for resources no node offers), and
its ``fake_multinode`` twin, which runs the same autoscaling on one machine (docs/cluster.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthtune.config import read_yaml
from depthtune.sweep.config import SweepConfig

# The custom resource that stands in for GPUs on a machine without them (as tests/test_cluster.py).
GPU_STAND_IN = "fake_gpu"
# Ray's FakeMultiNodeProvider tags its head with this type name, whatever the cluster file calls it.
FAKE_HEAD_TYPE = "ray.head.default"


@dataclass(frozen=True)
class NodeType:
    """One entry of ``available_node_types``: what a node offers and how many the autoscaler may start."""

    name: str
    resources: dict[str, float]
    min_workers: int
    max_workers: int

    def describe(self) -> str:
        offered = ", ".join(f"{key} {value:g}" for key, value in self.resources.items()) or "nothing"
        return f"{self.name} ({offered}; max_workers {self.max_workers})"


@dataclass(frozen=True)
class ClusterFile:
    """The autoscaling part of a ``ray up`` file: node types, the head's type, worker limits."""

    path: Path
    name: str
    max_workers: int
    idle_timeout_minutes: float
    upscaling_speed: float
    head_type: str
    node_types: dict[str, NodeType]

    @classmethod
    def read(cls, path: str | Path) -> ClusterFile:
        """Read ``path``; a missing key or a head type not among the node types is an error naming it."""
        values = read_yaml(path)
        where = str(path)
        missing = [key for key in ("available_node_types", "head_node_type", "max_workers") if key not in values]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        types = {}
        for name, spec in values["available_node_types"].items():
            resources = spec.get("resources") or {}
            if not all(isinstance(amount, (int, float)) and amount >= 0 for amount in resources.values()):
                raise ValueError(f"{where}: available_node_types.{name}.resources={resources!r}: expected amounts >= 0")
            types[name] = NodeType(
                name,
                {key: float(amount) for key, amount in resources.items()},
                int(spec.get("min_workers", 0)),
                int(spec.get("max_workers", values["max_workers"])),
            )
        if values["head_node_type"] not in types:
            raise ValueError(f"{where}: head_node_type {values['head_node_type']!r} is not in available_node_types")
        return cls(
            Path(path),
            str(values.get("cluster_name", "default")),
            int(values["max_workers"]),
            float(values.get("idle_timeout_minutes", 5)),
            float(values.get("upscaling_speed", 1.0)),
            values["head_node_type"],
            types,
        )

    @property
    def head(self) -> NodeType:
        return self.node_types[self.head_type]

    @property
    def worker_types(self) -> list[NodeType]:
        """The types the autoscaler may start (none when the cluster's max_workers is 0)."""
        if self.max_workers <= 0:
            return []
        return [t for name, t in self.node_types.items() if name != self.head_type and t.max_workers > 0]


def trial_resources(config: SweepConfig) -> dict[str, float]:
    """What Ray Tune asks of a node for one trial of ``config`` (depthtune.sweep.driver.fit)."""
    asked = {"CPU": float(config.cpus_per_trial), "GPU": float(config.gpus_per_trial), **config.resources_per_trial}
    return {key: float(amount) for key, amount in asked.items() if amount > 0}


def trials_per_node(node: NodeType, asked: dict[str, float]) -> int:
    """How many trials asking ``asked`` one node of type ``node`` holds at once."""
    return int(min(node.resources.get(key, 0.0) // amount for key, amount in asked.items())) if asked else 0


def check_trials_fit(cluster: ClusterFile, asked: dict[str, float], where: str) -> dict[str, int]:
    """Trials per node of each type that holds one (the head counts: it is always there); a
    ValueError naming what a trial asks and what each type offers when none does (Tune would wait forever)."""
    candidates = [cluster.head, *cluster.worker_types]
    fits = {node.name: trials_per_node(node, asked) for node in candidates}
    fits = {name: count for name, count in fits.items() if count > 0}
    if not fits:
        wanted = ", ".join(f"{key} {value:g}" for key, value in asked.items())
        offered = "; ".join(node.describe() for node in candidates)
        raise ValueError(
            f"{where}: a trial asks for {wanted}, which no node type of {cluster.path} offers, so its trials "
            f"would never be scheduled. Node types: {offered}. Change the sweep's cpus_per_trial / "
            "gpus_per_trial / resources_per_trial or the cluster file's node types"
        )
    return fits


def _stand_in(resources: dict[str, float], gpu_stand_in: str | None) -> dict[str, float]:
    """``resources`` with GPUs offered as the custom resource ``gpu_stand_in`` instead (None: as they are)."""
    if gpu_stand_in is None or "GPU" not in resources:
        return dict(resources)
    gpus = resources["GPU"]
    return {**{k: v for k, v in resources.items() if k != "GPU"}, **({gpu_stand_in: gpus} if gpus else {})}


def fake_multinode_config(
    cluster: ClusterFile,
    gcs_address: str,
    idle_timeout_minutes: float | None = None,
    gpu_stand_in: str | None = GPU_STAND_IN,
    object_store_bytes: int | None = 200 * 1024**2,
) -> dict[str, Any]:
    """The autoscaling config of ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` for
    ``cluster``: the same worker types, limits and upscaling speed, every node a raylet on this
    machine (Ray's ``fake_multinode`` provider), GPUs stood in by ``gpu_stand_in``, the idle timeout
    shortened if given. Complete, as ``ray up`` would write it: the autoscaler fills in no defaults."""
    object_store = {"object_store_memory": object_store_bytes} if object_store_bytes else {}
    types: dict[str, Any] = {
        FAKE_HEAD_TYPE: {
            "resources": _stand_in(cluster.head.resources, gpu_stand_in),
            "node_config": {},
            "max_workers": 0,
        }
    }
    for node in cluster.worker_types:
        types[node.name] = {
            "resources": {**_stand_in(node.resources, gpu_stand_in), **object_store},
            "node_config": {},
            "min_workers": node.min_workers,
            "max_workers": node.max_workers,
        }
    return {
        "cluster_name": f"{cluster.name}-fake",
        "max_workers": cluster.max_workers,
        "upscaling_speed": cluster.upscaling_speed,
        "idle_timeout_minutes": cluster.idle_timeout_minutes if idle_timeout_minutes is None else idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            # Start as many raylets as the autoscaler asks for at once (otherwise one per request).
            "launch_multiple": True,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "docker": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
        **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }
