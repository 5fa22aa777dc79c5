"""Data path: (1) images/s of the training input pipeline (the train split of an NYU-sized file with
augmentation, through the DataLoader as ``depthtune.train`` builds it, batch 16) at num_workers 0, 1
and 2 for Net12 and FCRN in the paper configuration, next to the images/s one training step of that
model consumes on this machine (forward + loss + backward + SGD step, batch 16), as the headroom
loader/step; (2) the memory of the Ray node (driver, raylet, GCS, workers, object store in shm) while
1, 2 and 4 trials of ``depthtune.sweep.driver.run_sweep`` train at once on the same 1449-frame file: node
PSS, the increment per extra trial and how much of it is the dataset, and each trial worker's RSS
split into the shared dataset and its private memory. The file (a few dozen synthetic scenes tiled
to 1449 frames, in the labelled file's layout) is made once under data/.

    python benchmarks/data_path.py [--frames 1449] [--trials 1 2 4] [--skip-throughput] [--skip-memory]

The GPU consumer rate is not measured here: it comes from benchmarks/gpu_throughput.py, and the
training loop on a GPU (loader and step together) from benchmarks/gpu_loop.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import ray
import torch
from nyu_sized import nyu_sized_file
from proc_cpu import cpu_seconds, descendants, process_tree
from shipped import paper_settings
from torch.utils.data import DataLoader

import depthtune.sweep.driver
from depthtune.data import NYUArrays, NYUDepthV2, read_nyu
from depthtune.data.source import file_sha256
from depthtune.evaluation import data_splits
from depthtune.losses import loss_for_model
from depthtune.models import build, geometry
from depthtune.profiles import model_config
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.sweep.config import SweepConfig
from depthtune.train_config import TrainConfig

log = logging.getLogger("data_path")

THREADS = 2
BATCH = 16
WARM_UP_IMAGES = 2
MODELS = ("net12", "fcrn")
MB = 1e6
KB = 1024
# A copy must hold at least this much private memory in one anonymous mapping to be told apart from
# batch temporaries (adjacent ones merge into mappings of up to ~200 MB): only a big dataset shows copies.
COPY_FLOOR = 256 * KB * KB
BAR_MB = 50.0
GPU_BENCHMARK = "benchmarks/gpu_throughput.py"
TRIAL_TITLE = "ray::ImplicitFunc"  # the process title Ray gives a Tune function trial's actor
SPACE = {
    "lr": {"type": "loguniform", "low": 0.003, "high": 0.05},
    "momentum": {"type": "uniform", "low": 0.8, "high": 0.95},
    "step_size": {"type": "int", "low": 1, "high": 20},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}


# ------------------------------------------------------------------------------ (1) throughput


def tree_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes ``pids`` still alive (all their threads)."""
    return sum(filter(None, (cpu_seconds(pid) for pid in pids)))


def loader_rate(dataset: NYUDepthV2, workers: int, batches: int) -> tuple[float, float, tuple]:
    """Images/s and images per CPU-second of the training DataLoader as train.py builds it, after
    its start-up and prefetch; also returns one batch for the step timing."""
    warm_up = max(1, 2 * workers)  # start-up, and the batches the workers prefetched meanwhile
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = order * math.ceil((warm_up + batches) * BATCH / len(order))  # a permutation, as train.py's
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers, pin_memory=False)
    batches_iter = iter(loader)
    for _ in range(warm_up):
        batch = next(batches_iter)
    pids = descendants(os.getpid())
    cpu, started = tree_cpu_seconds(pids), time.perf_counter()
    for _ in range(batches):
        next(batches_iter)
    elapsed, cpu = time.perf_counter() - started, tree_cpu_seconds(pids) - cpu
    del batches_iter
    return batches * BATCH / elapsed, batches * BATCH / cpu, batch


def step_rate(model_name: str, cfg: dict, batch: tuple, steps: int) -> float:
    """Images/s of train.py's training step (forward, loss, backward, SGD with momentum) on CPU."""
    defaults = TrainConfig()
    model = build(model_name, **cfg).train()
    loss_fn = loss_for_model(model_name, grad_weight=defaults.grad_weight)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=defaults.lr,
        momentum=defaults.momentum,
        weight_decay=defaults.weight_decay,
    )

    def step(size: int) -> None:
        image, target, mask = (tensor[:size] for tensor in batch)
        loss = loss_fn(model(image).float(), target, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(WARM_UP_IMAGES)  # momentum buffers, kernel set-up; a batch-16 step takes most of a minute here
    started = time.perf_counter()
    for _ in range(steps):
        step(BATCH)
    return steps * BATCH / (time.perf_counter() - started)


def throughput(arrays: NYUArrays, workers: list[int], batches: int, steps: int) -> None:
    """Print loader images/s per worker count, the step's images/s and the headroom, per model."""
    torch.set_num_threads(THREADS)
    splits = data_splits(TrainConfig(), arrays.scenes)
    print(
        f"\n(1) Training input pipeline vs training step: paper configuration, train split ({len(splits.train)} "
        f"frames) with augmentation, batch {BATCH}, torch threads {THREADS}, {batches} timed loader batches "
        f"per setting, {steps} timed step(s); load average before: {load_average()}"
    )
    cols = " ".join(f"nw={w:<4d}" for w in workers)
    print(
        f"{'model':6} {'input':8} {'step img/s':>10} | loader img/s {cols}| headroom loader/step {cols}| "
        f"loader img per CPU-s {cols}"
    )
    per_core: dict[str, tuple[float, int]] = {}
    for name in MODELS:
        cfg = model_config("paper", name)
        shape = geometry(name, **cfg)
        dataset = NYUDepthV2(arrays, "train", name, train=True, model_cfg=cfg, splits=splits)
        rates, cores = [], []
        for w in workers:
            log.info("%s: loader with num_workers=%d", name, w)
            rate, per_cpu, batch = loader_rate(dataset, w, batches)
            rates.append(rate)
            cores.append(per_cpu)
        log.info("%s: training step", name)
        step = step_rate(name, cfg, batch, steps)
        best = max(range(len(workers)), key=cores.__getitem__)
        per_core[name] = (cores[best], workers[best])
        print(
            f"{name:6} {shape.input_size[0]}x{shape.input_size[1]:<4} {step:10.2f} | {'':12} "
            f"{' '.join(f'{r:<7.1f}' for r in rates)}| {'':20} {' '.join(f'{r / step:<7.0f}' for r in rates)}| "
            f"{'':20} {' '.join(f'{c:<7.1f}' for c in cores)}"
        )
    print(
        f"load average after: {load_average()}. headroom = loader img/s / step img/s, each measured alone "
        "(in training they share the cores)."
    )
    print(
        f"GPU: no GPU here, so no GPU consumer rate is invented; it must come from {GPU_BENCHMARK}. "
        "Loader cores a GPU needs = GPU step img/s / loader img per CPU-second (best measured above):"
    )
    for name in MODELS:
        rate, w = per_core[name]
        print(
            f"  {name}: GPU step img/s ____ (from {GPU_BENCHMARK}) / {rate:.1f} img per CPU-s (nw={w}) "
            "= ____ cores of this CPU"
        )


def load_average() -> str:
    """The 1-minute load average (this machine is shared: other work slows every rate)."""
    return Path("/proc/loadavg").read_text().split()[0]


# ---------------------------------------------------------------------------------- (2) memory


@dataclass
class ProcessMemory:
    """One process's memory in bytes (from smaps_rollup); for trials also their object-store (plasma,
    in shm) mappings and ``copies``: private memory in anonymous mappings big enough to be a copy of
    a dataset array."""

    pid: int
    role: str
    rss: int
    pss: int
    uss: int
    pss_anon: int
    pss_shmem: int
    store_rss: int = 0
    copies: list[int] = field(default_factory=list)


@dataclass
class Sample:
    """The node at one instant: every process, MemTotal-MemAvailable and /dev/shm in use."""

    processes: list[ProcessMemory]
    used: int
    shm_used: int

    def role(self, *roles: str) -> list[ProcessMemory]:
        """The processes with one of ``roles``."""
        return [p for p in self.processes if p.role in roles]

    @property
    def trials(self) -> int:
        """Trial workers alive."""
        return len(self.role("trial"))

    @property
    def pss(self) -> int:
        """Node PSS: every page once, shared pages split between the processes mapping them."""
        return sum(p.pss for p in self.processes)


def rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        values[key] = int(value.split()[0]) * KB
    return values


def store_and_copies(pid: int, copy_size: int) -> tuple[int, list[int]]:
    """Rss of a process's object-store (plasma) mappings, and the private memory of each anonymous
    mapping holding at least ``copy_size`` private bytes: glibc gives every allocation over 32 MiB
    its own mapping, so a copy of a dataset array shows up as one (never in the heap or an arena)."""
    store_rss, copies = 0, []
    path, private = "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines() + ["0-0 ---p 0 0:0 0"]:
        head = line.split(maxsplit=5)
        if "-" in head[0] and not head[0].endswith(":"):
            if not path and private >= copy_size:
                copies.append(private)
            path, private = (head[5] if len(head) > 5 else ""), 0
        elif head[0] == "Rss:" and "plasma" in path:
            store_rss += int(head[1]) * KB
        elif head[0] in ("Private_Clean:", "Private_Dirty:"):
            private += int(head[1]) * KB
    return store_rss, copies


def meminfo_used() -> int:
    """MemTotal - MemAvailable in bytes."""
    info = {line.split(":")[0]: int(line.split()[1]) * KB for line in Path("/proc/meminfo").read_text().splitlines()}
    return info["MemTotal"] - info["MemAvailable"]


def shm_used() -> int:
    """Bytes in use on /dev/shm (unlinked but open files included, as Ray's object store)."""
    stat = os.statvfs("/dev/shm")
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def classify(pid: int, parent_role: str | None) -> str:
    """driver, trial, trial child (a DataLoader worker), or ray (raylet, GCS, agents, idle workers)."""
    if pid == os.getpid():
        return "driver"
    if parent_role in ("trial", "trial child"):
        return "trial child"
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    return "trial" if title.startswith(TRIAL_TITLE) else "ray"


def sample(exclude: set[int], copy_size: int) -> Sample:
    """Every process of this driver's tree (the local Ray node), minus the ``exclude`` subtrees."""
    skip = {pid for root in exclude for pid in descendants(root)}
    roles: dict[int, str] = {}
    processes = []
    for pid, ppid in process_tree(os.getpid()):
        if pid in skip:
            continue
        try:
            roles[pid] = role = classify(pid, roles.get(ppid))
            values = rollup(pid)
            memory = ProcessMemory(
                pid,
                role,
                values["Rss"],
                values["Pss"],
                values["Private_Clean"] + values["Private_Dirty"],
                values["Pss_Anon"],
                values["Pss_Shmem"],
            )
            if role in ("trial", "trial child"):
                memory.store_rss, memory.copies = store_and_copies(pid, copy_size)
        except (OSError, KeyError, ValueError, IndexError):
            continue  # the process ended while it was read
        processes.append(memory)
    return Sample(processes, meminfo_used(), shm_used())


class Sampler(threading.Thread):
    """Samples the node every ``interval`` seconds until stopped."""

    def __init__(self, exclude: set[int], copy_size: int, interval: float) -> None:
        """``exclude``: roots of process subtrees left out (the MLflow server)."""
        super().__init__(daemon=True)
        self.exclude, self.copy_size, self.interval = exclude, copy_size, interval
        self.samples: list[Sample] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        """Append a sample every ``interval`` seconds until ``stopped`` is set."""
        while not self.stopped.wait(self.interval):
            self.samples.append(sample(self.exclude, self.copy_size))


@dataclass
class MemoryRow:
    """A sweep of ``trials`` concurrent trials: its peak sample (the largest node PSS among the samples
    that saw all trials alive), the memory in use before Ray started, and each trial's peak USS."""

    trials: int
    peak: Sample
    base_used: int
    base_shm: int
    seconds: float
    concurrent_samples: int
    trial_peaks_uss: list[int]

    @property
    def store(self) -> int:
        """PSS of shm pages summed over the node: every object-store page mapped, counted once."""
        return sum(p.pss_shmem for p in self.peak.processes)

    @property
    def copies(self) -> list[int]:
        """Private bytes of each trial mapping (trials and their children) big enough to be a dataset copy."""
        return [c for p in self.peak.role("trial", "trial child") for c in p.copies]

    @property
    def driver_anon(self) -> int:
        """The driver's own memory: its copy of the arrays, Tune, the MLflow client."""
        return sum(p.pss_anon for p in self.peak.role("driver"))


def copy_floor(arrays: NYUArrays) -> int:
    """Private bytes one mapping must hold to count as a copy: a quarter of the smaller array, at least COPY_FLOOR."""
    return max(min(arrays.images.nbytes, arrays.depths.nbytes) // 4, COPY_FLOOR)


def sweep_config(data: Path, trials: int, cpus: float, epochs: int, workdir: Path, uri: str) -> SweepConfig:
    """A random-search, FIFO sweep of ``trials`` tiny Net12 trials of ``cpus`` CPUs each, all at once."""
    return SweepConfig.from_dict(
        {
            "model": "net12",
            "name": f"data-path-{trials}",
            "data": str(data),
            "num_samples": trials,
            "max_concurrent": trials,
            "cpus_per_trial": cpus,
            "searcher": "random",
            "scheduler": "fifo",
            "grace_period": 1,
            "seed": 0,
            "storage_path": str(workdir / "ray_results"),
            "tracking_uri": uri,
            "search_space": SPACE,
            "paper_settings": paper_settings("net12"),
            "train": {"epochs": epochs, "batch_size": BATCH, "model_cfg": model_config("cpu", "net12")},
        },
        profile="cpu",
    )


def measure_sweep(
    arrays: NYUArrays, digest: str, config: SweepConfig, workdir: Path, server_pid: int, interval: float
) -> MemoryRow:
    """Run one sweep on a fresh Ray node, sampling the node meanwhile. run_sweep runs unchanged except
    that its ``read_nyu`` and ``file_sha256`` of the file return what this script read and hashed from
    that same file once (about a minute per sweep); trials get the arrays through the object store."""
    trials = config.num_samples
    copy_size = copy_floor(arrays)
    console = workdir / f"sweep_{trials}.log"
    base_used, base_shm = meminfo_used(), shm_used()
    started = time.perf_counter()
    ray.init(num_cpus=THREADS, include_dashboard=False, log_to_driver=False)
    sampler = Sampler({server_pid}, copy_size, interval)
    try:
        sampler.start()
        with (
            mock.patch.object(depthtune.sweep.driver, "read_nyu", lambda path: arrays),
            mock.patch.object(depthtune.sweep.driver, "file_sha256", lambda path: digest),
            open(console, "w") as out,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            depthtune.sweep.driver.run_sweep(config)
    finally:
        sampler.stopped.set()
        sampler.join()
        ray.shutdown()
    concurrent = [s for s in sampler.samples if s.trials == trials]
    if not concurrent:
        raise RuntimeError(
            f"no sample saw {trials} trials at once (most: "
            f"{max((s.trials for s in sampler.samples), default=0)}); Tune's output: {console}"
        )
    peaks: dict[int, int] = {}
    for each in sampler.samples:
        for p in each.role("trial"):
            peaks[p.pid] = max(peaks.get(p.pid, 0), p.uss)
    return MemoryRow(
        trials,
        max(concurrent, key=lambda s: s.pss),
        base_used,
        base_shm,
        time.perf_counter() - started,
        len(concurrent),
        sorted(peaks.values()),
    )


def memory(arrays: NYUArrays, data: Path, counts: list[int], epochs: int, interval: float) -> bool:
    """Print the node's memory for each number of concurrent trials; returns whether the bar is met."""
    workdir = Path(tempfile.mkdtemp(prefix="data_path-"))
    log.info("memory: sweeps, MLflow store and Tune's output in %s (removed when all went well)", workdir)
    cpus = THREADS / max(counts)  # the most trials must all fit at once
    digest = file_sha256(data)
    rows = []
    backend, artifacts = embedded_store(workdir)
    with TrackingServer(backend, artifacts, log_path=workdir / "mlflow-server.log") as server:
        for trials in counts:
            log.info("memory: sweep of %d concurrent trial(s)", trials)
            config = sweep_config(data, trials, cpus, epochs, workdir, server.uri)
            rows.append(measure_sweep(arrays, digest, config, workdir, server.pid, interval))
    shutil.rmtree(workdir, ignore_errors=True)
    dataset = arrays.images.nbytes + arrays.depths.nbytes
    print(
        f"\n(2) Node memory while n trials train at once: run_sweep of n tiny Net12 trials ('cpu' profile, "
        f"{epochs} epoch(s), cpus_per_trial {cpus:g} on {THREADS} CPUs), each on a fresh Ray node; dataset "
        f"{len(arrays)} frames = {dataset / MB:.0f} MB in memory. MB = 1e6 bytes; load average now: {load_average()}"
    )
    print(
        "Node (driver + raylet, GCS, agents, workers and their children; the MLflow server is left out), at the "
        "sample with the largest node PSS among those that saw all n trials alive:"
    )
    print(
        f"{'n':>2} {'samples':>7} | {'node PSS':>8} | {'+ per extra trial':>17} {'of it dataset':>13} | "
        f"{'store (shm)':>11} {'driver anon':>11} {'other Ray':>9} {'trials':>6} | {'used delta':>10} {'shm delta':>9}"
    )
    first, met = rows[0], True
    for row in rows:
        extra = dataset_extra = ""
        if row.trials > first.trials:
            step = row.trials - first.trials
            extra = f"{(row.peak.pss - row.driver_anon - first.peak.pss + first.driver_anon) / step / MB:17.0f}"
            per_dataset = (row.store - first.store + sum(row.copies) - sum(first.copies)) / step / MB
            met &= per_dataset < BAR_MB
            dataset_extra = f"{per_dataset:13.1f}"
        peak = row.peak
        print(
            f"{row.trials:2d} {row.concurrent_samples:7d} | {peak.pss / MB:8.0f} | {extra:>17} {dataset_extra:>13} | "
            f"{row.store / MB:11.0f} {row.driver_anon / MB:11.0f} {sum(p.pss for p in peak.role('ray')) / MB:9.0f} "
            f"{sum(p.pss for p in peak.role('trial', 'trial child')) / MB:6.0f} | "
            f"{(peak.used - row.base_used) / MB:10.0f} {(peak.shm_used - row.base_shm) / MB:9.0f}"
        )
    print(
        "Trial workers at that sample (mean over the n workers): RSS = dataset pages mapped from the object store "
        "(shared) + private (USS) + other shared (libraries):"
    )
    print(
        f"{'n':>2} | {'RSS':>5} = {'dataset':>7} + {'private':>7} + {'other':>5} | {'peak private over life':>22} | "
        f"copies (mappings with >= {copy_floor(arrays) / MB:.0f} MB private, where a copy would live)"
    )
    for row in rows:
        workers = row.peak.role("trial")
        rss, shared = statistics.mean(p.rss for p in workers), statistics.mean(p.store_rss for p in workers)
        private = statistics.mean(p.uss for p in workers)
        print(
            f"{row.trials:2d} | {rss / MB:5.0f} = {shared / MB:7.0f} + {private / MB:7.0f} + "
            f"{(rss - shared - private) / MB:5.0f} | {' '.join(f'{u / MB:.0f}' for u in row.trial_peaks_uss):>22} | "
            f"{', '.join(f'{c / MB:.0f} MB' for c in row.copies) or 'none'}"
        )
    print(
        "+ per extra trial: node PSS less the driver's anonymous memory, added per trial beyond the first row; of it "
        "dataset: the change in object-store pages plus private copies. store: shm pages mapped in the node, each "
        "once. driver anon: its own copy of the arrays, Tune, MLflow client. used/shm delta: MemTotal-MemAvailable "
        "and /dev/shm in use minus their values before Ray started (other work on this machine moves both)."
    )
    print("    " + "; ".join(f"n={row.trials}: sweep {row.seconds:.0f} s" for row in rows))
    print(f"Bar: each extra trial adds < {BAR_MB:.0f} MB for the dataset: {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    """Make or reuse the file, read it once, then run the throughput and memory measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1449, help="frames of the NYU-sized file")
    parser.add_argument("--scenes", type=int, default=32, help="synthetic scenes tiled to --frames")
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2, 4], help="concurrent trials per sweep")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial in the memory sweeps")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers to time")
    parser.add_argument("--batches", type=int, default=12, help="timed loader batches per setting")
    parser.add_argument("--steps", type=int, default=1, help="timed training steps (batch 16) per model")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between memory samples")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    data = nyu_sized_file(args.frames, args.scenes, workers=THREADS)
    started = time.perf_counter()
    arrays = read_nyu(data)
    log.info("read %s in %.0f s", data, time.perf_counter() - started)
    print(
        f"data: {data} ({len(arrays)} frames, images {arrays.images.nbytes / MB:.0f} MB + depths "
        f"{arrays.depths.nbytes / MB:.0f} MB in memory; read in {time.perf_counter() - started:.0f} s)"
    )
    if not args.skip_throughput:
        throughput(arrays, args.workers, args.batches, args.steps)
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give back what the paper-size steps left in malloc's arenas
    if not args.skip_memory:
        memory(arrays, data, args.trials, args.epochs, args.interval)
    log.info("done in %.0f s after the file was ready", time.perf_counter() - started)


if __name__ == "__main__":
    main()
