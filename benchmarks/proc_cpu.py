"""The process tree under a process, from /proc: each process's parent and CPU seconds, and the CPU
seconds used by each role in it (the benchmark itself, Ray's daemons, Ray workers, the local mlflow
server), sampled in a background thread so that the CPU of a time window known only afterwards (e.g.
between two epoch ends) can be attributed."""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

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
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
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
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


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
            sample = {}
            for pid in descendants(self.root):
                seconds = cpu_seconds(pid)
                if seconds is not None:
                    sample[pid] = (_role(pid, self.root), seconds)  # a forked raylet child becomes a worker
            self.times.append(time.time())
            self.samples.append(sample)
            self._stop.wait(self.period)

    def _at(self, when: float) -> dict[int, tuple[str, float]]:
        index = min(bisect.bisect_left(self.times, when), len(self.times) - 1)
        return self.samples[index]

    def by_role(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each role used between wall-clock times ``start`` and ``end``."""
        first, last = self._at(start), self._at(end)
        used: dict[str, float] = defaultdict(float)
        for pid, (role, seconds) in last.items():
            used[role] += seconds - first.get(pid, (role, 0.0))[1]
        return dict(used)
