"""Logging throughput: metrics per second that the tracking path sustains from concurrent trials
(default 8 processes, like 8 Tune trials, each with its own MLflow run under one sweep run), each
logging the per-epoch metrics dict a trial logs (``depthtune.names.EPOCH_METRICS``: epoch,
train_loss, val_loss, the nine val_* depth metrics, lr, epoch_seconds, images_per_second). Methods:

- depthtune: what ``run_trial`` does, each epoch queued on the trial's ``BackgroundWriter``, whose
  thread sends it as one ``RunLogger.log_epoch`` (one ``log_batch`` request, one at a time). With
  no training between epochs here, the queue is never empty: the rate is what the writer sustains;
- naive: one synchronous ``MlflowClient.log_metric`` call per value, from the trial itself.

Backends: the local default of a sweep (a ``TrackingServer`` in front of the embedded SQLite file,
``embedded_store``); the same file, once that server has stopped, opened by every trial itself
(``sqlite:///``); an ``mlflow server`` backed by a private PostgreSQL (``LocalPostgres``, its
default durable settings), skipped with the reason printed when the PostgreSQL programs or psycopg2
are missing. The trials start together at a barrier once connected; the rate is all values logged
over the time from that start to the last trial's last write. Afterwards every metric history of
every run is read back, so a path that loses values cannot win. "trial CPU" is what the trial
processes spent (all threads) per 1000 values; ``--cpu-by-role`` also samples /proc for the server
and PostgreSQL. Only ratios within one run mean much: the machine is shared, and the trials
compete with the server for the same cores.

    python benchmarks/logging_throughput.py [--trials 8] [--epochs 30] [--naive-epochs 5] [--cpu-by-role]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing.pool import Pool
from pathlib import Path

from mlflow import MlflowClient
from proc_cpu import TreeCPUSampler

from depthtune.names import EPOCH_METRICS
from depthtune.serve.postgres import LocalPostgres, find_postgres_bin
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.runs import RunLogger
from depthtune.tracking.writer import BackgroundWriter

logger = logging.getLogger("logging_throughput")

METHODS = {"depthtune": "log_epoch via BackgroundWriter", "naive": "log_metric per value"}
BARRIER_TIMEOUT_S = 120.0
FLUSH_TIMEOUT_S = 300.0
Store = Callable[[Path], AbstractContextManager[str]]  # a backend: given its folder, yields a tracking URI
_barrier: multiprocessing.synchronize.Barrier | None = None  # the trials' start line (set in each by _init_worker)


@dataclass(frozen=True)
class Job:
    """What one trial process logs: ``epochs`` epochs into ``run_id`` at ``uri`` by ``method``."""

    uri: str
    run_id: str
    method: str
    trial: int
    epochs: int


@dataclass
class Result:
    """One (backend, method) measurement."""

    backend: str
    method: str
    epochs: int
    values: int
    seconds: float
    missing: int
    trial_cpu: float
    cpu_by_role: dict[str, float]

    @property
    def rate(self) -> float:
        return self.values / self.seconds

    def per_kilo(self, cpu_seconds: float) -> float:
        """CPU seconds per 1000 values stored."""
        return 1000 * cpu_seconds / self.values


def epoch_metrics(trial: int, epoch: int) -> dict[str, float]:
    """Plausible values for every key a trial logs per epoch (distinct per trial and epoch)."""
    decay = 1.0 / (1.0 + 0.2 * epoch)
    values = {key: (0.05 + 0.01 * trial + 0.1 * index) * decay for index, key in enumerate(EPOCH_METRICS)}
    values.update(epoch=float(epoch), lr=0.01 * 0.5 ** (epoch // 5), epoch_seconds=4.0 + 0.01 * trial)
    values["images_per_second"] = 60.0 - trial
    return values


def _init_worker(barrier: multiprocessing.synchronize.Barrier) -> None:
    """Pool initializer: keep the shared start barrier."""
    global _barrier
    _barrier = barrier


def log_trial(job: Job) -> tuple[float, float, float]:
    """In a trial process: connect, wait for the others at the barrier, log every epoch; returns
    the wall-clock start and end and the CPU seconds this process (all its threads) used."""
    client = MlflowClient(job.uri)
    client.get_run(job.run_id)  # connection (or SQLite engine and schema check) before the clock starts
    _barrier.wait(timeout=BARRIER_TIMEOUT_S)
    started, cpu = time.time(), time.process_time()
    if job.method == "depthtune":
        log_through_writer(client, job)
    else:
        log_naively(client, job)
    return started, time.time(), time.process_time() - cpu


def log_through_writer(client: MlflowClient, job: Job) -> None:
    """As ``run_trial``: each epoch queued on the trial's writer, sent as one ``log_batch``."""
    run = RunLogger(client, job.run_id)
    writer = BackgroundWriter(f"trial {job.trial}")
    for epoch in range(job.epochs):
        metrics, stamp = epoch_metrics(job.trial, epoch), int(time.time() * 1000)
        writer.submit(f"epoch {epoch + 1} metrics", partial(run.log_epoch, metrics, step=epoch, timestamp_ms=stamp))
    if not writer.close(timeout=FLUSH_TIMEOUT_S) or writer.failed:
        logger.warning("trial %d: writes unsent or dropped: %s", job.trial, writer.failed)


def log_naively(client: MlflowClient, job: Job) -> None:
    """One synchronous ``log_metric`` request per value."""
    for epoch in range(job.epochs):
        stamp = int(time.time() * 1000)
        for key, value in epoch_metrics(job.trial, epoch).items():
            client.log_metric(job.run_id, key, value, timestamp=stamp, step=epoch, synchronous=True)


def missing_values(client: MlflowClient, run_ids: list[str], epochs: int) -> int:
    """Values absent from the stored metric histories of ``run_ids`` (every key, every epoch)."""
    missing = 0
    for run_id in run_ids:
        for key in EPOCH_METRICS:
            steps = {metric.step for metric in client.get_metric_history(run_id, key)}
            missing += len(set(range(epochs)) - steps)
    return missing


@dataclass(frozen=True)
class Sweep:
    """Where one backend's trials log: the backend's name, a client, the experiment and its sweep run."""

    backend: str
    client: MlflowClient
    experiment_id: str
    parent_id: str


def measure(pool: Pool, sweep: Sweep, method: str, trials: int, epochs: int, sampler: TreeCPUSampler | None) -> Result:
    """Run ``trials`` concurrent trials logging ``epochs`` epochs by ``method``; check what arrived."""
    client = sweep.client
    run_ids = [
        RunLogger.start(
            client, sweep.experiment_id, name=f"{method}-trial-{trial}", parent_run_id=sweep.parent_id
        ).run_id
        for trial in range(trials)
    ]
    jobs = [Job(client.tracking_uri, run_id, method, trial, epochs) for trial, run_id in enumerate(run_ids)]
    times = pool.map(log_trial, jobs, chunksize=1)
    start, end, trial_cpu = min(t[0] for t in times), max(t[1] for t in times), sum(t[2] for t in times)
    roles = cpu_by_role(sampler, start, end, trial_cpu) if sampler else {}
    values = trials * epochs * len(EPOCH_METRICS)
    missing = missing_values(client, run_ids, epochs)
    return Result(sweep.backend, method, epochs, values, end - start, missing, trial_cpu, roles)


def cpu_by_role(sampler: TreeCPUSampler, start: float, end: float, trial_cpu: float) -> dict[str, float]:
    """CPU seconds of each process role between ``start`` and ``end``. The sampler counts the trial
    processes (forked from this script) with PostgreSQL as "other"; their own measure ``trial_cpu``
    is moved out of it."""
    used = sampler.by_role(start, end)
    used["postgresql/other"] = max(0.0, used.pop("other", 0.0) - trial_cpu)
    used["trial processes"] = trial_cpu
    return {role: seconds for role, seconds in sorted(used.items(), key=lambda kv: -kv[1]) if seconds > 0.005}


@contextmanager
def server_over_sqlite(directory: Path) -> Iterator[str]:
    """A sweep's local default: ``mlflow server`` in front of ``mlflow.db`` in ``directory``."""
    backend, artifacts = embedded_store(directory)
    server = TrackingServer(backend, artifacts, log_path=directory / "mlflow-server.log")
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@contextmanager
def direct_sqlite(directory: Path) -> Iterator[str]:
    """The embedded SQLite file opened by every trial itself."""
    yield embedded_store(directory)[0]


@contextmanager
def server_over_postgres(directory: Path) -> Iterator[str]:
    """``mlflow server`` backed by a private PostgreSQL on free 127.0.0.1 ports (durable settings)."""
    postgres = LocalPostgres(directory / "cluster", secrets.token_urlsafe(18))
    postgres.start()
    try:
        store = postgres.create_database("logbench")  # not "mlflow...": proc_cpu would count its backends as the server
        server = TrackingServer(store, directory / "mlruns", log_path=directory / "mlflow-server.log")
        server.start()
        try:
            yield server.uri
        finally:
            server.stop()
    finally:
        postgres.stop()


BACKENDS: dict[str, tuple[Store, str]] = {  # name: (store, its folder; both SQLite backends use the same file)
    "mlflow server + sqlite": (server_over_sqlite, "embedded"),
    "sqlite:/// direct": (direct_sqlite, "embedded"),
    "mlflow server + postgresql": (server_over_postgres, "postgresql"),
}


def postgres_problem() -> str | None:
    """Why the PostgreSQL backend cannot run here, or None."""
    if find_postgres_bin() is None:
        return (
            "PostgreSQL server programs (initdb, postgres, pg_ctl) not found: apt-get install postgresql, "
            "or set DEPTHTUNE_PG_BIN"
        )
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed: pip install -e '.[dev]'"
    return None


def run_backend(
    pool: Pool,
    backend: str,
    store: Store,
    directory: Path,
    trials: int,
    epochs: dict[str, int],
    sampler: TreeCPUSampler | None,
) -> list[Result]:
    """Both methods against ``backend``'s store in ``directory``, under one experiment and sweep run."""
    started = time.monotonic()
    with store(directory) as uri:
        client = MlflowClient(uri)
        artifacts = (directory / "mlruns").as_uri()
        experiment_id = client.create_experiment(f"logging-throughput {backend}", artifact_location=artifacts)
        sweep = Sweep(backend, client, experiment_id, RunLogger.start(client, experiment_id, name="sweep").run_id)
        logger.info("%s ready in %.1f s (start-up, schema)", backend, time.monotonic() - started)
        results = []
        for method in METHODS:
            results.append(measure(pool, sweep, method, trials, epochs[method], sampler))
            logger.info("%s, %s: %.0f metrics/s", backend, method, results[-1].rate)
        return results


def report(results: list[Result], trials: int) -> None:
    """The table of rates and, per backend, the ratio depthtune path / naive; CPU by role if sampled."""
    print(
        f"\n{trials} concurrent trials, {len(EPOCH_METRICS)} metrics per epoch; rate = values stored / wall time; "
        "trial CPU = CPU s the trial processes spent per 1000 values"
    )
    print(
        f"{'backend':<26} {'method':<44} {'epochs':>6} {'values':>7} {'seconds':>8} {'metrics/s':>10} "
        f"{'trial CPU':>10}  arrived"
    )
    for r in results:
        arrived = "all" if r.missing == 0 else f"NO: {r.missing} missing"
        method = f"{r.method} ({METHODS[r.method]})"
        print(
            f"{r.backend:<26} {method:<44} {r.epochs:>6} {r.values:>7} {r.seconds:>8.2f} "
            f"{r.rate:>10.0f} {r.per_kilo(r.trial_cpu):>10.2f}  {arrived}"
        )
    for backend in dict.fromkeys(r.backend for r in results):
        rates = {r.method: r.rate for r in results if r.backend == backend}
        print(f"{backend}: depthtune / naive = {rates['depthtune'] / rates['naive']:.1f}x")
    if results[0].cpu_by_role:
        print("CPU seconds per 1000 values by process role; cores this benchmark's processes kept busy")
        for r in results:
            roles = ", ".join(f"{role} {r.per_kilo(seconds):.2f}" for role, seconds in r.cpu_by_role.items())
            cores = sum(r.cpu_by_role.values()) / r.seconds
            print(f"  {r.backend:<26} {r.method:<9}: {roles}; {cores:.2f} of {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="concurrent trial processes")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial, depthtune path")
    parser.add_argument("--naive-epochs", type=int, default=5, help="epochs per trial, one log_metric per value")
    parser.add_argument("--cpu-by-role", action="store_true", help="sample /proc: CPU of server, trials, PostgreSQL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    backends = dict(BACKENDS)
    skipped = postgres_problem()
    if skipped:
        del backends["mlflow server + postgresql"]
        print(f"mlflow server + postgresql: SKIPPED, {skipped}")
    print(f"load average at start (shared machine): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    epochs = {"depthtune": args.epochs, "naive": args.naive_epochs}
    fork = multiprocessing.get_context("fork")
    # forked before any MLflow connection or SQLite engine exists in this process, so none is shared
    with ExitStack() as stack:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="depthtune-logbench-"))
        pool = stack.enter_context(fork.Pool(args.trials, _init_worker, (fork.Barrier(args.trials),)))
        sampler = stack.enter_context(TreeCPUSampler()) if args.cpu_by_role else None
        os.chmod(root, 0o711)  # when we are root, PostgreSQL runs as `postgres` and must pass through it
        results = []
        for name, (store, folder) in backends.items():
            directory = Path(root) / folder
            directory.mkdir(mode=0o711, exist_ok=True)
            results += run_backend(pool, name, store, directory, args.trials, epochs, sampler)
    report(results, args.trials)
    if skipped:
        print(f"mlflow server + postgresql: SKIPPED, {skipped}")


if __name__ == "__main__":
    main()
