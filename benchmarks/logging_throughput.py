"""Logging throughput and outage survival of three ways a trial can log its epochs to MLflow.

Throughput: metrics per second that the tracking path sustains from concurrent trials
(default 8 processes, like 8 Tune trials, each with its own MLflow run under one sweep run), each
logging the per-epoch metrics dict a trial logs (``depthtune.names.EPOCH_METRICS``: epoch,
train_loss, val_loss, the nine val_* depth metrics, lr, epoch_seconds, images_per_second). Methods:

- depthtune: what ``run_trial`` does, each epoch queued on the trial's ``BackgroundWriter``, whose
  thread sends it as one ``RunLogger.log_epoch`` (one ``log_batch`` request, one at a time). With
  no training between epochs here, the queue is never empty: the rate is what the writer sustains;
- mlflow-async: MLflow's own asynchronous logging, the same batch per epoch through
  ``MlflowClient.log_batch(..., synchronous=False)`` (what ``mlflow.log_metrics(..., synchronous=False)``
  or ``MLFLOW_ENABLE_ASYNC_LOGGING=true`` does too): the store's ``AsyncLoggingQueue`` hands each
  batch to a pool of ``MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE`` sender threads (``--async-threads``,
  default 1: one request in flight per trial, as the writer; MLflow's own default, 10, makes 8
  trials overload a one-worker server, which rejects requests: see benchmarks/README.md); the trial
  waits for every returned ``RunOperations`` at its end;
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
compete with the server for the same cores. "trial thread ms/epoch" is the time the trial's own
thread spent in its per-epoch logging calls (what training would wait for).

Outage: one trial process per method and per client retry setting logs an epoch every
``--epoch-seconds`` (a sleep standing for training) to one ``mlflow server`` over SQLite on a free
127.0.0.1 port, which is stopped (by its process group) ``--outage-after`` s in, for
``--outage-seconds`` s plus its restart, and started again on the same port. Per path: how long the
training thread stalled in a logging call, what it raised, which values never arrived (every
history is read back) and how long after the restart every epoch logged before it was stored
(val_loss's history polled each second). Twice at
once: with MLflow's default HTTP retries (7, backoff 2 s doubling, capped at 120 s: about 4 min
before a request fails) and with a budget shorter than the outage (2 retries, factor 1: a few
seconds), which is what any outage longer than the default budget looks like to the client.

    python benchmarks/logging_throughput.py [--trials 8] [--epochs 30] [--naive-epochs 5] [--cpu-by-role]
        [--async-threads 1] [--outage-seconds 10] (0: no outage part)
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
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

from environment import environment
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.utils.async_logging.run_operations import RunOperations
from proc_cpu import TreeCPUSampler

from depthtune.names import EPOCH_METRICS
from depthtune.serve.postgres import LocalPostgres, find_postgres_bin
from depthtune.serve.server import TrackingServer, embedded_store
from depthtune.tracking.runs import RunLogger
from depthtune.tracking.writer import BackgroundWriter

logger = logging.getLogger("logging_throughput")

METHODS = {
    "depthtune": "log_epoch via BackgroundWriter",
    "mlflow-async": "log_batch(synchronous=False)",
    "naive": "log_metric per value",
}
# The client's HTTP retries in an outage trial (MLflow reads them at every request). The short budget
# is shorter than the outage, as the default one (about 4 min) is for any outage longer than that.
RETRY_BUDGETS = {
    "default (7 retries, ~4 min)": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"},
    "short (2 retries, ~3 s)": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"},
}
QUIET_IN_OUTAGE = {  # per-request warnings of an outage trial; what they report is counted instead
    "urllib3": logging.ERROR,
    "depthtune.tracking.writer": logging.ERROR,
    "mlflow.utils.async_logging": logging.CRITICAL,
}
BARRIER_TIMEOUT_S = 120.0
FLUSH_TIMEOUT_S = 300.0
OUTAGE_TIMEOUT_S = 900.0
TAIL_S = 5.0  # outage trials train this long after the server is back
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


@dataclass(frozen=True)
class TrialTimes:
    """One trial's wall-clock start and end, the CPU seconds its process used and the seconds its
    own thread spent in per-epoch logging calls."""

    started: float
    ended: float
    cpu: float
    blocked: float


@dataclass
class Result:
    """One (backend, method) measurement."""

    backend: str
    method: str
    trials: int
    epochs: int
    values: int
    seconds: float
    missing: int
    trial_cpu: float
    blocked: float
    cpu_by_role: dict[str, float]

    @property
    def rate(self) -> float:
        return self.values / self.seconds

    @property
    def blocked_ms_per_epoch(self) -> float:
        """Milliseconds a trial's own thread spent logging one epoch, averaged over all trials."""
        return 1000 * self.blocked / (self.trials * self.epochs)

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


class WriterPath:
    """depthtune: each epoch queued on a ``BackgroundWriter``, sent as one ``RunLogger.log_epoch``."""

    def __init__(self, client: MlflowClient, run_id: str, name: str) -> None:
        self.run = RunLogger(client, run_id)
        self.writer = BackgroundWriter(name)

    def log(self, epoch: int, metrics: dict[str, float], stamp: int) -> None:
        self.writer.submit(f"epoch {epoch + 1} metrics", partial(self.run.log_epoch, metrics, epoch, stamp))

    def finish(self, timeout: float) -> list[str]:
        """Wait (at most ``timeout`` s) for the queue; the writes dropped or left unsent."""
        flushed = self.writer.close(timeout)
        return self.writer.failed + ([] if flushed else [f"writes unsent after {timeout:.0f} s"])


class AsyncPath:
    """MLflow's own: each epoch as one ``log_batch(..., synchronous=False)``."""

    def __init__(self, client: MlflowClient, run_id: str, name: str) -> None:
        self.client, self.run_id = client, run_id
        self.operations: list[RunOperations] = []

    def log(self, epoch: int, metrics: dict[str, float], stamp: int) -> None:
        batch = [Metric(key, float(value), stamp, epoch) for key, value in metrics.items() if math.isfinite(value)]
        self.operations.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))

    def finish(self, timeout: float) -> list[str]:
        """Wait for every batch; the failures they reported. ``RunOperations.wait`` takes no timeout:
        it returns once each batch is stored or its HTTP retries are spent."""
        failures = []
        for operation in self.operations:
            try:
                operation.wait()
            except MlflowException as exc:
                failures.append(str(exc))
        return failures


class NaivePath:
    """One synchronous ``log_metric`` request per value, on the trial's own thread."""

    def __init__(self, client: MlflowClient, run_id: str, name: str) -> None:
        self.client, self.run_id = client, run_id

    def log(self, epoch: int, metrics: dict[str, float], stamp: int) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, value, timestamp=stamp, step=epoch, synchronous=True)

    def finish(self, timeout: float) -> list[str]:
        """Nothing is queued: every value was sent (or raised) in ``log``."""
        return []


PATHS: dict[str, Callable[[MlflowClient, str, str], WriterPath | AsyncPath | NaivePath]] = {
    "depthtune": WriterPath,
    "mlflow-async": AsyncPath,
    "naive": NaivePath,
}


def _init_worker(barrier: multiprocessing.synchronize.Barrier) -> None:
    """Pool initializer: keep the shared start barrier."""
    global _barrier
    _barrier = barrier


def log_trial(job: Job) -> TrialTimes:
    """In a trial process: connect, wait for the others at the barrier, log every epoch, wait for
    whatever the method queued."""
    client = MlflowClient(job.uri)
    client.get_run(job.run_id)  # connection (or SQLite engine and schema check) before the clock starts
    path = PATHS[job.method](client, job.run_id, f"trial {job.trial}")
    _barrier.wait(timeout=BARRIER_TIMEOUT_S)
    started, cpu, blocked = time.time(), time.process_time(), 0.0
    for epoch in range(job.epochs):
        metrics, stamp = epoch_metrics(job.trial, epoch), int(time.time() * 1000)
        call = time.perf_counter()
        path.log(epoch, metrics, stamp)
        blocked += time.perf_counter() - call
    problems = path.finish(FLUSH_TIMEOUT_S)
    if problems:
        logger.warning(
            "trial %d (%s): %d writes unsent or dropped, first: %s", job.trial, job.method, len(problems), problems[0]
        )
    return TrialTimes(started, time.time(), time.process_time() - cpu, blocked)


def missing_values(client: MlflowClient, run_id: str, epochs: int) -> int:
    """Values absent from the stored metric histories of ``run_id`` (every key, every epoch)."""
    missing = 0
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
    start, end = min(t.started for t in times), max(t.ended for t in times)
    trial_cpu, blocked = sum(t.cpu for t in times), sum(t.blocked for t in times)
    roles = cpu_by_role(sampler, start, end, trial_cpu) if sampler else {}
    values = trials * epochs * len(EPOCH_METRICS)
    missing = sum(missing_values(client, run_id, epochs) for run_id in run_ids)
    return Result(sweep.backend, method, trials, epochs, values, end - start, missing, trial_cpu, blocked, roles)


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
    """Every method against ``backend``'s store in ``directory``, under one experiment and sweep run."""
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


@dataclass(frozen=True)
class OutageJob:
    """One outage trial: epochs of ``epoch_seconds`` each from ``start_at`` (wall clock) until
    ``tail_epochs`` after the file ``back`` appears (the server is back), logged into ``run_id`` by
    ``method`` with the client's HTTP retries set to ``budget``."""

    uri: str
    run_id: str
    method: str
    budget: str
    trial: int
    epoch_seconds: float
    start_at: float
    back: Path
    tail_epochs: int


@dataclass(frozen=True)
class OutageTrial:
    """What one outage trial's training thread saw: per epoch, when its logging call started (wall
    clock), how long it took and whether it raised; what ``finish`` reported afterwards."""

    calls: list[tuple[float, float, bool]]
    problems: list[str]


def log_through_outage(job: OutageJob) -> OutageTrial:
    """In a trial process: train (sleep) and log each epoch, carrying on when a logging call raises
    (a real trial would have crashed), then wait for whatever the method queued."""
    for name, level in QUIET_IN_OUTAGE.items():
        logging.getLogger(name).setLevel(level)
    with environment(RETRY_BUDGETS[job.budget]):
        client = MlflowClient(job.uri)
        client.get_run(job.run_id)
        path = PATHS[job.method](client, job.run_id, f"{job.method}, {job.budget}")
        time.sleep(max(0.0, job.start_at - time.time()))
        calls: list[tuple[float, float, bool]] = []
        tail = None
        while tail is None or len(calls) < tail:
            epoch = len(calls)
            if tail is None and job.back.exists():
                tail = epoch + job.tail_epochs
            time.sleep(job.epoch_seconds)  # the epoch's training
            metrics, stamp = epoch_metrics(job.trial, epoch), time.time()
            call, raised = time.perf_counter(), False
            try:
                path.log(epoch, metrics, int(stamp * 1000))
            except MlflowException:
                raised = True
            calls.append((stamp, time.perf_counter() - call, raised))
        return OutageTrial(calls, path.finish(FLUSH_TIMEOUT_S))


@dataclass(frozen=True)
class OutageResult:
    """One (retry budget, method) case of the outage: what its trial saw and what the store holds."""

    budget: str
    method: str
    trial: OutageTrial
    started: float  # wall clock: training began
    down: tuple[float, float]  # wall clock: server stopped, server answering again
    missing: int
    caught_up: float | None  # wall clock: first poll holding every epoch logged before the restart; None: never

    @property
    def during(self) -> list[tuple[float, float, bool]]:
        """The logging calls made while the server was down."""
        return [call for call in self.trial.calls if self.down[0] <= call[0] < self.down[1]]


def outage(pool: Pool, directory: Path, epoch_seconds: float, after: float, seconds: float) -> list[OutageResult]:
    """Every (retry budget, method) trial at once against one ``mlflow server`` over SQLite, which is
    stopped ``after`` s into training and started again on the same port ``seconds`` s later; the
    trials train TAIL_S more once it answers. While they run, val_loss's history of every run is
    polled each second, for when each caught up."""
    cases = [(budget, method) for budget in RETRY_BUDGETS for method in METHODS]
    backend, artifacts = embedded_store(directory)
    server = TrackingServer(backend, artifacts, log_path=directory / "mlflow-server.log")
    server.start()
    try:
        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("logging-outage", artifact_location=artifacts.as_uri())
        run_ids = [RunLogger.start(client, experiment_id, name=f"{m}, {b}").run_id for b, m in cases]
        start_at, back = time.time() + 3.0, directory / "server-back"
        tail = math.ceil(TAIL_S / epoch_seconds)
        jobs = [
            OutageJob(server.uri, run_id, method, budget, trial, epoch_seconds, start_at, back, tail)
            for trial, ((budget, method), run_id) in enumerate(zip(cases, run_ids))
        ]
        pending = pool.map_async(log_through_outage, jobs, chunksize=1)
        time.sleep(max(0.0, start_at + after - time.time()))
        logger.info("outage: stopping the server (pid %s) %.1f s into training", server.pid, time.time() - start_at)
        server.stop()
        stopped = time.time()
        time.sleep(seconds)
        server.start()
        down = (stopped, time.time())
        back.touch()
        logger.info("outage: server back after %.1f s (restart included), pid %s", down[1] - down[0], server.pid)
        polls: list[tuple[float, list[set[int]]]] = []
        deadline = time.monotonic() + OUTAGE_TIMEOUT_S
        while not pending.ready() and time.monotonic() < deadline:
            polls.append((time.time(), [{m.step for m in client.get_metric_history(r, "val_loss")} for r in run_ids]))
            time.sleep(1.0)
        trials = pending.get(timeout=max(1.0, deadline - time.monotonic()))
        polls.append((time.time(), [{m.step for m in client.get_metric_history(r, "val_loss")} for r in run_ids]))
        results = []
        for index, ((budget, method), run_id, trial) in enumerate(zip(cases, run_ids, trials)):
            before = {epoch for epoch, call in enumerate(trial.calls) if call[0] < down[1]}
            caught_up = next((at for at, steps in polls if before <= steps[index]), None)
            missing = missing_values(client, run_id, len(trial.calls))
            results.append(OutageResult(budget, method, trial, start_at, down, missing, caught_up))
        return results
    finally:
        server.stop()


def report_outage(results: list[OutageResult], epoch_seconds: float) -> None:
    """The outage table: per retry budget and method, what the training thread and the store saw."""
    down, start_at = results[0].down, results[0].started
    print(
        f"\nOutage: mlflow server stopped {down[0] - start_at:.1f} s into training, answering again "
        f"{down[1] - down[0]:.1f} s later (restart included); epochs of {epoch_seconds} s training, "
        f"{len(EPOCH_METRICS)} metrics each, until {TAIL_S:.0f} s after the restart; stall = time in logging calls"
    )
    print(
        f"{'client HTTP retries':<28} {'method':<13} {'epochs':>6} {'while down':>10} {'longest stall s':>15} "
        f"{'total stall s':>13} {'raised':>6} {'values lost':>11}  backlog stored"
    )
    for r in results:
        stalls = [seconds for _, seconds, _ in r.trial.calls]
        raised = sum(raised for _, _, raised in r.trial.calls)
        stored = "never" if r.caught_up is None else f"{r.caught_up - r.down[1]:.1f} s after restart"
        if r.trial.problems:
            stored += f"; {len(r.trial.problems)} writes reported failed"
        print(
            f"{r.budget:<28} {r.method:<13} {len(r.trial.calls):>6} {len(r.during):>10} {max(stalls):>15.3f} "
            f"{sum(stalls):>13.3f} "
            f"{raised:>6} {r.missing:>11}  {stored}"
        )


def report(results: list[Result], trials: int) -> None:
    """The table of rates and, per backend, the ratios of the methods; CPU by role if sampled."""
    print(
        f"\n{trials} concurrent trials, {len(EPOCH_METRICS)} metrics per epoch; rate = values stored / wall time "
        "(until every queued value is stored); trial thread ms/epoch = time a trial's own thread spent in its "
        "logging calls; trial CPU = CPU s the trial processes spent per 1000 values"
    )
    print(
        f"{'backend':<26} {'method':<43} {'epochs':>6} {'values':>7} {'seconds':>8} {'metrics/s':>10} "
        f"{'thread ms/epoch':>15} {'trial CPU':>10}  arrived"
    )
    for r in results:
        arrived = "all" if r.missing == 0 else f"NO: {r.missing} missing"
        method = f"{r.method} ({METHODS[r.method]})"
        print(
            f"{r.backend:<26} {method:<43} {r.epochs:>6} {r.values:>7} {r.seconds:>8.2f} {r.rate:>10.0f} "
            f"{r.blocked_ms_per_epoch:>15.2f} {r.per_kilo(r.trial_cpu):>10.2f}  {arrived}"
        )
    for backend in dict.fromkeys(r.backend for r in results):
        rates = {r.method: r.rate for r in results if r.backend == backend}
        print(
            f"{backend}: depthtune / naive = {rates['depthtune'] / rates['naive']:.1f}x, "
            f"mlflow-async / naive = {rates['mlflow-async'] / rates['naive']:.1f}x, "
            f"mlflow-async / depthtune = {rates['mlflow-async'] / rates['depthtune']:.2f}x"
        )
    if results[0].cpu_by_role:
        print("CPU seconds per 1000 values by process role; cores this benchmark's processes kept busy")
        for r in results:
            roles = ", ".join(f"{role} {r.per_kilo(seconds):.2f}" for role, seconds in r.cpu_by_role.items())
            cores = sum(r.cpu_by_role.values()) / r.seconds
            print(f"  {r.backend:<26} {r.method:<12}: {roles}; {cores:.2f} of {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="concurrent trial processes")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per trial, depthtune and mlflow-async paths")
    parser.add_argument("--naive-epochs", type=int, default=5, help="epochs per trial, one log_metric per value")
    parser.add_argument("--cpu-by-role", action="store_true", help="sample /proc: CPU of server, trials, PostgreSQL")
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="server down this long, plus its restart")
    parser.add_argument("--outage-after", type=float, default=5.0, help="seconds of training before the outage")
    parser.add_argument("--epoch-seconds", type=float, default=0.5, help="training time per epoch in the outage part")
    parser.add_argument(
        "--async-threads", type=int, default=1, help="mlflow-async sender threads per trial (MLflow's default: 10)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    backends = dict(BACKENDS)
    skipped = postgres_problem()
    if skipped:
        del backends["mlflow server + postgresql"]
        print(f"mlflow server + postgresql: SKIPPED, {skipped}")
    print(f"load average at start (shared machine): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    epochs = {"depthtune": args.epochs, "mlflow-async": args.epochs, "naive": args.naive_epochs}
    os.environ["MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE"] = str(args.async_threads)  # inherited by the trials
    print(f"mlflow-async: {args.async_threads} sender threads per trial (MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE)")
    fork = multiprocessing.get_context("fork")
    # forked before any MLflow connection or SQLite engine exists in this process, so none is shared
    with ExitStack() as stack:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="depthtune-logbench-"))
        pool = stack.enter_context(fork.Pool(args.trials, _init_worker, (fork.Barrier(args.trials),)))
        outage_pool = stack.enter_context(fork.Pool(len(RETRY_BUDGETS) * len(METHODS))) if args.outage_seconds else None
        sampler = stack.enter_context(TreeCPUSampler()) if args.cpu_by_role else None
        os.chmod(root, 0o711)  # when we are root, PostgreSQL runs as `postgres` and must pass through it
        results = []
        for name, (store, folder) in backends.items():
            directory = Path(root) / folder
            directory.mkdir(mode=0o711, exist_ok=True)
            results += run_backend(pool, name, store, directory, args.trials, epochs, sampler)
        outage_results = []
        if outage_pool is not None:
            directory = Path(root) / "outage"
            directory.mkdir()
            outage_results = outage(outage_pool, directory, args.epoch_seconds, args.outage_after, args.outage_seconds)
    report(results, args.trials)
    if outage_results:
        report_outage(outage_results, args.epoch_seconds)
    if skipped:
        print(f"mlflow server + postgresql: SKIPPED, {skipped}")


if __name__ == "__main__":
    main()
