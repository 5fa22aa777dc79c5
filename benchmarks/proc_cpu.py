"""The process tree under a process, from /proc: each process's parent and CPU seconds, the CPU
seconds used by each role in it (the benchmark itself, Ray's daemons, Ray workers, the local mlflow
server) and how the training process was scheduled (CPU time, time waiting for a CPU, preemptions),
sampled in a background thread so that the CPU of a time window known only afterwards (e.g.
between two epoch ends) can be attributed."""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from depthtune.serve.processes import process_stat

TICKS = os.sysconf("SC_CLK_TCK")
ROLES = (  # first match wins: PostgreSQL backends name their database (e.g. mlflow_cluster) on the command line
    ("postgres", "postgresql"),
    ("ray::", "ray worker (trial)"),
    ("--bare-child", "bare loop (own process)"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs_server"),
    ("mlflow", "mlflow server"),
    ("uvicorn", "mlflow server"),
    ("gunicorn", "mlflow server"),
    ("huey", "mlflow server"),
    ("dashboard", "ray dashboard/agents"),
    ("log_monitor", "ray log monitor"),
    ("runtime_env", "ray dashboard/agents"),
)


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of ``root`` and every live descendant, each parent before its children."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = process_stat(entry.name)
            if not fields:
                continue
            parent = int(fields[1])
            children[parent].append(int(entry.name))
    found, stack = [], [(root, 0)]
    while stack:
        pid, parent = stack.pop()
        found.append((pid, parent))
        stack.extend((child, pid) for child in children.get(pid, []))
    return found


def descendants(root: int) -> list[int]:
    """``root`` and every live descendant process."""
    return [pid for pid, _ in process_tree(root)]


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (its threads included), or None once it is gone."""
    fields = process_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else None


def scheduling(pid: int) -> dict[int, tuple[float, float, int]]:
    """Per thread of ``pid``: seconds on a CPU, seconds runnable but waiting for one
    (/proc/.../schedstat), and involuntary context switches (preemptions); empty once it is gone."""
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            run_ns, wait_ns, _ = (int(v) for v in (task / "schedstat").read_text().split())
            preempted = int((task / "status").read_text().split("nonvoluntary_ctxt_switches:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended
        threads[int(tid)] = (run_ns / 1e9, wait_ns / 1e9, preempted)
    return threads


TRAINING_ROLES = ("ray worker (trial)", "bare loop (own process)")


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "benchmark/driver process"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        command = ""
    return next((role for marker, role in ROLES if marker in command), "other")


class TreeCPUSampler:
    """Samples the CPU seconds of every process under this one (and itself) every ``period`` s."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self.root = os.getpid()
        self.times: list[float] = []
        self.samples: list[dict[int, tuple[str, float]]] = []
        self.training: list[dict[int, tuple[float, float, int]]] = []  # per thread id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-cpu-sampler", daemon=True)

    def __enter__(self) -> "TreeCPUSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            sample, training = {}, {}
            for pid in descendants(self.root):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    sample[pid] = (_role(pid, self.root), seconds)  # a forked raylet child becomes a worker
                    if sample[pid][0] in TRAINING_ROLES:
                        training.update(scheduling(pid))
            self.times.append(time.time())
            self.samples.append(sample)
            self.training.append(training)
            self._stop.wait(self.period)

    def _span(self, start: float, end: float) -> tuple[int, int] | None:
        """Indices of the first sample at or after ``start`` and the last at or before ``end``."""
        first = bisect.bisect_left(self.times, start)
        last = bisect.bisect_right(self.times, end) - 1
        return (first, last) if first < last else None

    def training_scheduling(self, start: float, end: float) -> tuple[float, float, float]:
        """Per second between the samples inside [``start``, ``end``], summed over the training
        processes (a trial's worker or the bare loop) and the threads alive at both samples: CPU
        seconds, seconds waiting for a CPU, preemptions."""
        span = self._span(start, end)
        if span is None:
            return 0.0, 0.0, 0.0
        before, after = self.training[span[0]], self.training[span[1]]
        seconds = self.times[span[1]] - self.times[span[0]]
        deltas = [tuple(b - a for a, b in zip(before[tid], values)) for tid, values in after.items() if tid in before]
        return tuple(sum(column) / seconds for column in zip(*deltas)) if deltas else (0.0, 0.0, 0.0)

    def by_role(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per second each role used between the samples inside [``start``, ``end``]
        (processes alive at both)."""
        span = self._span(start, end)
        if span is None:
            return {}
        first, last = self.samples[span[0]], self.samples[span[1]]
        seconds = self.times[span[1]] - self.times[span[0]]
        used: dict[str, float] = defaultdict(float)
        for pid, (role, cpu) in last.items():
            if pid in first:
                used[role] += (cpu - first[pid][1]) / seconds
        return dict(used)
