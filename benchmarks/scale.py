"""The platform at 16, 32 and 64 concurrent trials: one sweep per concurrency N (N trials, all at
once unless ``--at-once`` caps them) logging to one ``mlflow server`` with basic-auth on a private
PostgreSQL, as ``depthtune serve start`` runs it (``depthtune.serve.service.build_server``: 2
uvicorn workers, artifacts proxied), with a local Ray of N (or ``--at-once``) logical CPUs on this machine.

Trials are real but tiny: Net12 at width 0.125 and 64x80 input, ``num_workers`` 0, one torch thread,
``--epochs`` epochs of ``--frames`` synthetic frames, random search with the FIFO scheduler (every
trial trains every epoch) and ``max_failures`` 0 (a failure is not hidden by a retry). Everything
else is a sweep's default: each trial logs its run, parameters, config and dataset, one
``log_batch`` per epoch from its ``BackgroundWriter``, system metrics every 5 s and prediction grids.

Measured per N:

- arrival: afterwards, read from the tracking database, every trial run of the sweep must be
  FINISHED and hold, for every per-epoch metric, exactly one value per epoch (none missing, none
  repeated);
- driver CPU: CPU seconds of this process (the Tune driver: ``run_sweep`` runs here) over the
  sweep, divided by the results the trials reported (rows of their Tune ``progress.csv``); also
  over the training phase only (from the first trial's run creation to the last epoch's
  ``log_batch``, read from 1 s samples), without the sweep's start and its end (the winner's test
  evaluation, registration);
- tracking server requests/s and latency: the trials and the driver talk to the server through a
  small HTTP proxy in a separate process (one new upstream connection per request), which records
  each request's method, path, status and upstream time (request sent to response read, i.e. the
  server's latency as a client sees it, without the proxy's own hop). Requests/s = all requests
  during the sweep over its wall time, and the busiest 10 s;
- PostgreSQL connections: ``pg_stat_activity`` client backends (the sampler's own excluded), per
  database, sampled each second; ``max_connections``;
- memory: node memory in use (``total - available``, machine-wide: other work on a shared machine
  shows too) above what it was before Ray started, and the Ray worker processes' summed RSS and PSS
  (proportional set size: shared pages split between processes), sampled every second (the
  workers' every 5 s);
- CPU of the mlflow server and of PostgreSQL (their whole process trees) over the sweep;
- trials that errored (``error.txt`` in their Tune directory), and of those, the ones Ray's memory
  monitor killed: ``--memory-threshold`` (default 0.8 of node memory, Ray's own is 0.95) keeps a
  sweep that does not fit from pushing a shared machine into the kernel's OOM killer.

    python benchmarks/scale.py [--concurrency 16 32 64] [--at-once K] [--epochs 3] [--frames 20]
        [--memory-threshold 0.8] [--auth-cache-ttl 60] [--json out.json]
    # --auth-cache-ttl 0: basic-auth as MLflow defaults it
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import itertools
import json
import logging
import math
import multiprocessing
import multiprocessing.synchronize
import os
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import ray
from environment import environment

from depthtune.data import generate_dataset
from depthtune.names import EPOCH_METRICS
from depthtune.serve.auth import BasicAuth
from depthtune.serve.postgres import LocalPostgres
from depthtune.serve.processes import free_port
from depthtune.serve.server import TrackingServer
from depthtune.serve.service import ServiceConfig, build_server
from depthtune.sweep.config import SweepConfig
from depthtune.sweep.driver import run_sweep
from depthtune.tracking.runs import SWEEP_TAG

logger = logging.getLogger("scale")

ADMIN = "scale-admin"
DATABASE = "mlflow_scale"
MODEL_CFG = {"input_size": [64, 80], "width": 0.125}
SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.95},
    "step_size": {"type": "int", "low": 1, "high": 3},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}
# The sweep's baseline trial: a point inside SPACE at these epoch budgets (as the tests' sweeps).
PAPER_SETTINGS = {
    "lr": 0.01,
    "momentum": 0.9,
    "step_fraction": 0.34,
    "grad_weight": 1.0,
    "source": "scale benchmark: a point inside SPACE",
}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
SAMPLE_EVERY_S = 1.0
MEMORY_EVERY = 5
OBJECT_STORE_BYTES = 300 * 1024**2


class _Forward(BaseHTTPRequestHandler):
    """Forwards each request to the server (a new connection each time, so no upstream keep-alive
    goes stale) and appends ``(start, upstream seconds, method, path, status)`` to ``records``."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    records: list[tuple[float, float, str, str, int]] = []
    lock = threading.Lock()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        headers["Connection"] = "close"
        connection = http.client.HTTPConnection(*self.upstream, timeout=600)
        started = time.time()
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self._record(started, 502)
            self.send_error(502)
            return
        finally:
            connection.close()
        self._record(started, response.status)
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS | {"content-length", "date", "server"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (e.g. its trial was killed)
            self.close_connection = True

    def _record(self, started: float, status: int) -> None:
        with self.lock:
            self.records.append((started, time.time() - started, self.command, self.path.split("?")[0], status))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Quiet: every request is recorded, not printed."""


def _tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its live descendants (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """CPU seconds of the process tree under ``pid``: every live process's own time and that of
    the children it has reaped (PostgreSQL backends and server workers that ended)."""
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _worker_memory(driver_pid: int) -> tuple[int, float, float]:
    """(count, summed RSS GiB, summed PSS GiB) of the Ray worker processes under the driver."""
    count, rss, pss = 0, 0, 0
    for process in _tree(driver_pid):
        try:
            if not process.name().startswith("ray::") and not " ".join(process.cmdline()[:1]).startswith("ray::"):
                continue
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count, rss, pss = count + 1, rss + info.rss, pss + getattr(info, "pss", info.rss)
    return count, rss / 1024**3, pss / 1024**3


def monitor(
    upstream_port: int,
    proxy_port: int,
    pg: dict[str, Any],
    driver_pid: int,
    out: str,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    """The proxy and the 1 s sampler, in their own process (so that their CPU is not the driver's);
    writes every request and sample to ``out`` as JSON once ``stop`` is set."""
    _Forward.upstream = ("127.0.0.1", upstream_port)
    proxy = ThreadingHTTPServer(("127.0.0.1", proxy_port), _Forward)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    connection = psycopg2.connect(dbname="postgres", **pg)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("show max_connections")
        max_connections = int(cursor.fetchone()[0])
    samples: list[dict] = []
    workers, rss, pss = 0, 0.0, 0.0
    ready.set()
    while not stop.wait(SAMPLE_EVERY_S):
        with connection.cursor() as cursor:
            cursor.execute(
                "select coalesce(datname, ''), count(*) from pg_stat_activity "
                "where backend_type = 'client backend' and pid <> pg_backend_pid() group by 1"
            )
            by_database = dict(cursor.fetchall())
        memory = psutil.virtual_memory()
        if len(samples) % MEMORY_EVERY == 0:  # reading every worker's smaps costs CPU: each 5th sample
            workers, rss, pss = _worker_memory(driver_pid)
        try:
            driver_cpu = sum(psutil.Process(driver_pid).cpu_times()[:2])
        except psutil.NoSuchProcess:
            break
        samples.append(
            {
                "t": time.time(),
                "pg": by_database,
                "used_gib": (memory.total - memory.available) / 1024**3,
                "workers": workers,
                "worker_rss_gib": rss,
                "worker_pss_gib": pss,
                "driver_cpu": driver_cpu,
            }
        )
    proxy.shutdown()
    connection.close()
    with _Forward.lock:
        records = list(_Forward.records)
    own = psutil.Process().cpu_times()
    Path(out).write_text(
        json.dumps(
            {
                "max_connections": max_connections,
                "requests": records,
                "samples": samples,
                "monitor_cpu": own.user + own.system,
            }
        )
    )


@dataclass
class Arrival:
    """What the server holds for one sweep's trial runs."""

    runs: int
    most_at_once: int
    not_finished: int
    missing: int
    repeated: int
    values: int


def check_arrival(pg: LocalPostgres, database: str, sweep_run_id: str, epochs: int) -> Arrival:
    """Every trial run of the sweep, read from the tracking database itself: FINISHED, and exactly
    one value per epoch (steps 0..epochs-1) of each per-epoch metric; counts what is missing or
    repeated (a step stored twice, e.g. with two timestamps, or a step outside the epochs)."""
    connection = psycopg2.connect(dbname=database, host=pg.host, port=pg.port, user=pg.user, password=pg.password)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "select r.run_uuid, r.status, r.start_time, r.end_time from runs r join tags t "
                "on t.run_uuid = r.run_uuid where t.key = %s and t.value = %s",
                (SWEEP_TAG, sweep_run_id),
            )
            rows = cursor.fetchall()
            runs = {run: status for run, status, _, _ in rows}
            cursor.execute(
                "select run_uuid, key, step, count(*) from metrics where run_uuid = any(%s) and key = any(%s) "
                "group by run_uuid, key, step",
                (list(runs), list(EPOCH_METRICS)),
            )
            stored = cursor.fetchall()
    finally:
        connection.close()
    counts = {(run, key, step): count for run, key, step, count in stored}
    expected = {(run, key, step) for run in runs for key in EPOCH_METRICS for step in range(epochs)}
    # Runs open at once: +1 at each start, -1 at each end (an end before a start at the same ms).
    events = sorted([(start, 1) for _, _, start, _ in rows] + [(end, -1) for _, _, _, end in rows if end])
    open_runs = list(itertools.accumulate(change for _, change in events))
    return Arrival(
        runs=len(runs),
        most_at_once=max(open_runs, default=0),
        not_finished=sum(status != "FINISHED" for status in runs.values()),
        missing=len(expected - counts.keys()),
        repeated=sum(count - 1 for count in counts.values()) + len(counts.keys() - expected),
        values=sum(counts.values()),
    )


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def cpu_at(samples: list[dict], when: float) -> float:
    """Driver CPU seconds at ``when``, interpolated linearly between the 1 s samples."""
    times = [s["t"] for s in samples]
    if when <= times[0]:
        return samples[0]["driver_cpu"]
    for before, after in zip(samples, samples[1:]):
        if before["t"] <= when <= after["t"]:
            share = (when - before["t"]) / (after["t"] - before["t"])
            return before["driver_cpu"] + share * (after["driver_cpu"] - before["driver_cpu"])
    return samples[-1]["driver_cpu"]


def sweep_at(
    n: int, args: argparse.Namespace, data: Path, workdir: Path, server: TrackingServer, pg: LocalPostgres
) -> dict:
    """One sweep of ``n`` trials, ``--at-once`` of them at a time (default all), through a fresh proxy
    and a local Ray of that many CPUs; its figures."""
    at_once = args.at_once or n
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    proxy_port = free_port()
    out = workdir / f"monitor-{n}.json"
    pg_params = {"host": pg.host, "port": pg.port, "user": pg.user, "password": pg.password}
    upstream_port = server.port
    baseline_used = (psutil.virtual_memory().total - psutil.virtual_memory().available) / 1024**3
    ray.init(num_cpus=at_once, include_dashboard=False, log_to_driver=False, object_store_memory=OBJECT_STORE_BYTES)
    child = context.Process(
        target=monitor, args=(upstream_port, proxy_port, pg_params, os.getpid(), str(out), ready, stop)
    )
    child.start()
    if not ready.wait(120):
        raise RuntimeError("the proxy/sampler process did not start")
    config = SweepConfig.from_dict(
        {
            "model": "net12",
            "data": str(data),
            "name": f"scale-{n}",
            "num_samples": n,
            "max_concurrent": at_once,
            "cpus_per_trial": 1,
            "searcher": "random",
            "scheduler": "fifo",
            "max_failures": 0,
            "seed": n,
            "search_space": SPACE,
            "paper_settings": PAPER_SETTINGS,
            "storage_path": str(workdir / "ray_results"),
            "tracking_uri": f"http://127.0.0.1:{proxy_port}",
            "register_as": f"scale-{n}",
            "train": {"epochs": args.epochs, "batch_size": 8, "num_workers": 0, "model_cfg": MODEL_CFG},
        },
        profile="cpu",
    )
    driver = psutil.Process()
    server_pid, pg_pid = server.pid, pg.pid
    cpu_before = sum(driver.cpu_times()[:2])
    server_before, pg_before = tree_cpu(server_pid), tree_cpu(pg_pid)
    started = time.time()
    error = None
    try:
        run_sweep(config)
    except Exception as exc:  # the figures of a sweep that broke are what this benchmark is for
        logger.exception("sweep of %d trials failed", n)
        error = f"{type(exc).__name__}: {exc}"
    wall = time.time() - started
    driver_cpu = sum(driver.cpu_times()[:2]) - cpu_before
    server_cpu, pg_cpu = tree_cpu(server_pid) - server_before, tree_cpu(pg_pid) - pg_before
    stop.set()
    child.join(120)
    ray.shutdown()
    seen = json.loads(out.read_text())
    arrival = None
    state = workdir / "ray_results" / f"scale-{n}" / "depthtune_sweep.json"
    if state.is_file():  # the sweep's run id, written before any trial started
        sweep_run_id = json.loads(state.read_text())["parent_run_id"]
        arrival = check_arrival(pg, DATABASE, sweep_run_id, args.epochs)
    trials = workdir / "ray_results" / f"scale-{n}"
    errors = [path.read_text(errors="replace") for path in trials.glob("*/error.txt")]
    # Tune writes a row to the trial's progress.csv for each result it reports (after a header line).
    results = sum(max(0, len(path.read_text().splitlines()) - 1) for path in trials.glob("*/progress.csv"))
    failed = {"trials_errored": len(errors), "trials_out_of_memory": sum("low on memory" in text for text in errors)}
    return {
        "at_once": at_once,
        **summarize(n, args.epochs, wall, driver_cpu, server_cpu, pg_cpu, baseline_used, seen, arrival, error, results),
        **failed,
    }


def summarize(
    n: int,
    epochs: int,
    wall: float,
    driver_cpu: float,
    server_cpu: float,
    pg_cpu: float,
    baseline_used: float,
    seen: dict,
    arrival: Arrival | None,
    error: str | None,
    results: int,
) -> dict:
    """The figures of one sweep from its proxy records and samples; ``results``: what the trials reported."""
    requests, samples = seen["requests"], seen["samples"]
    latencies = [r[1] for r in requests]
    batches = [r for r in requests if r[3].endswith("/runs/log-batch")]
    creates = sorted(r[0] for r in requests if r[3].endswith("/runs/create"))
    per_second = Counter(int(r[0]) for r in requests)
    busiest = max((sum(per_second.get(s + i, 0) for i in range(10)) / 10 for s in per_second), default=0.0)
    phase_cpu = math.nan
    if len(creates) > 1 and batches and samples:
        phase_cpu = cpu_at(samples, max(r[0] + r[1] for r in batches)) - cpu_at(samples, creates[1])
    pg_total = [sum(s["pg"].values()) for s in samples]
    by_database: dict[str, int] = {}
    for sample in samples:
        for name, count in sample["pg"].items():
            by_database[name] = max(by_database.get(name, 0), count)
    return {
        "trials": n,
        "epochs": epochs,
        "wall_s": wall,
        "error": error,
        "runs": arrival.runs if arrival else 0,
        "runs_open_at_once_max": arrival.most_at_once if arrival else 0,
        "runs_not_finished": arrival.not_finished if arrival else None,
        "values_missing": arrival.missing if arrival else None,
        "values_repeated": arrival.repeated if arrival else None,
        "values": arrival.values if arrival else 0,
        "values_expected": n * epochs * len(EPOCH_METRICS),
        "driver_cpu_s": driver_cpu,
        "results_reported": results,
        "driver_cpu_per_result_s": driver_cpu / results if results else math.nan,
        "driver_cpu_training_phase_per_result_s": phase_cpu / results if results else math.nan,
        "requests": len(requests),
        "requests_per_s": len(requests) / wall,
        "requests_per_s_busiest_10s": busiest,
        "latency_p50_ms": 1000 * percentile(latencies, 0.5),
        "latency_p95_ms": 1000 * percentile(latencies, 0.95),
        "latency_max_ms": 1000 * max(latencies, default=math.nan),
        "log_batch_p95_ms": 1000 * percentile([r[1] for r in batches], 0.95),
        "http_errors": dict(Counter(f"{r[4]} {r[2]} {r[3]}" for r in requests if r[4] >= 400)),
        "pg_connections_max": max(pg_total, default=0),
        "pg_connections_max_by_database": by_database,
        "pg_max_connections": seen["max_connections"],
        "node_used_gib_above_baseline_max": max((s["used_gib"] for s in samples), default=math.nan) - baseline_used,
        "ray_workers_max": max((s["workers"] for s in samples), default=0),
        "worker_rss_gib_max": max((s["worker_rss_gib"] for s in samples), default=math.nan),
        "worker_pss_gib_max": max((s["worker_pss_gib"] for s in samples), default=math.nan),
        "server_cpu_s": server_cpu,
        "postgres_cpu_s": pg_cpu,
        "proxy_sampler_cpu_s": seen["monitor_cpu"],
    }


def print_table(row: dict) -> None:
    """One sweep's figures, a line each."""
    shape = f"{row['trials']} trials, {row['at_once']} at once, x {row['epochs']} epochs"
    print(f"\n=== {shape} ({row['wall_s']:.0f} s) ===")
    for key, value in row.items():
        if key not in ("trials", "at_once", "epochs"):
            print(f"  {key:<42} {value:.3f}" if isinstance(value, float) else f"  {key:<42} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument(
        "--at-once",
        type=int,
        help="trials running at a time (default: all of each sweep's N); sizes a sweep to the machine's memory",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20, help="synthetic frames (20: 7 rooms, split 14/3/3)")
    parser.add_argument(
        "--memory-threshold",
        type=float,
        default=0.8,
        help="node memory share above which Ray's memory monitor kills trial workers (Ray's default 0.95)",
    )
    parser.add_argument(
        "--auth-cache-ttl",
        type=int,
        default=BasicAuth.credential_cache_seconds,
        help="seconds basic-auth trusts a checked password (BasicAuth.credential_cache_seconds; 0: MLflow's default, "
        "no cache, as depthtune serve start had it before the 16-trial run here)",
    )
    parser.add_argument("--json", type=Path, help="write every sweep's figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="depthtune-scale-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o711)  # the postgres system user enters it for its data directory
        data = generate_dataset(workdir / f"synth{args.frames}.mat", args.frames, seed=3)
        pg = LocalPostgres(workdir / "pg", secrets.token_urlsafe(18))
        pg.start()
        token = workdir / "ray_auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        admin_password = secrets.token_urlsafe(18)
        env = {
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": admin_password,
            "RAY_AUTH_TOKEN_PATH": str(token),
            "OMP_NUM_THREADS": "1",
            "RAY_memory_usage_threshold": str(args.memory_threshold),
            "DO_NOT_TRACK": "true",
        }
        previous = os.getcwd()
        try:
            with environment(env):
                service = ServiceConfig(
                    backend_store_uri=pg.uri(DATABASE),
                    artifacts_destination=str(workdir / "artifacts"),
                    state_dir=workdir / "serve",
                    port=free_port(),
                    auth_database_uri=pg.uri("mlflow_scale_auth"),
                )
                pg.create_database(DATABASE)
                pg.create_database("mlflow_scale_auth")
                server = build_server(service, stop_with_parent=True)
                server.auth = dataclasses.replace(server.auth, credential_cache_seconds=args.auth_cache_ttl)
                with server:
                    os.chdir(workdir)
                    for n in args.concurrency:
                        row = sweep_at(n, args, data, workdir, server, pg)
                        row["auth_cache_ttl_s"] = args.auth_cache_ttl
                        print_table(row)
                        rows.append(row)
                        if args.json:
                            args.json.write_text(json.dumps(rows, indent=1))
        finally:
            os.chdir(previous)
            pg.stop()


if __name__ == "__main__":
    main()
