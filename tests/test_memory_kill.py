"""A trial killed by Ray's memory monitor fails alone: the sweep's other trials run on and Tune's
``fit()`` returns. On a real Ray node (started by PID on its own ports) whose memory monitor is set
to kill a little above what the machine uses now, one trial allocates memory until the monitor kills
its worker; then two more trials run. Without ``memory_kills_fail_one_trial`` Ray 2.60's Tune raises
out of ``fit()`` on that kill (the driver below shows it still does, so the guard is still needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from local_cluster import LocalRayCluster

# The kill threshold is machine-wide, so a test running beside this one could push it over and have
# the steady trials killed too: scripts/test.sh runs this test by itself.
pytestmark = [pytest.mark.slow, pytest.mark.alone]

GIB = 1024**3
# The kill threshold sits this far above the memory in use when the test starts: room for other
# processes on the machine to grow meanwhile, while the allocating trial crosses it within seconds.
MARGIN_BYTES = 3 * GIB
# The allocating trial stops here if the monitor never kills it (then the test fails, saying so).
HOG_LIMIT_BYTES = 6 * GIB

DRIVER = r"""
import json, sys, time
import numpy as np
from ray import tune
from ray.tune import FailureConfig, RunConfig, TuneConfig

from depthtune.sweep.memory_kills import memory_kills_fail_one_trial

guarded, storage, limit = sys.argv[1] == "guarded", sys.argv[2], int(sys.argv[3])


def trial(config):
    if config["role"] == "hog":
        held = []
        while sum(block.nbytes for block in held) < limit:
            held.append(np.ones(128 * 1024**2, dtype=np.uint8))
            time.sleep(0.05)
        time.sleep(60)
        tune.report({"step": 0, "survived": 1})
        return
    for step in range(3):
        tune.report({"step": step})
        time.sleep(0.2)


tuner = tune.Tuner(
    tune.with_resources(trial, {"cpu": 1}),
    param_space={"role": tune.grid_search(["hog", "steady", "steady"])},
    tune_config=TuneConfig(max_concurrent_trials=1),
    run_config=RunConfig(storage_path=storage, name="memory-kill", failure_config=FailureConfig(max_failures=0)),
)
try:
    if guarded:
        with memory_kills_fail_one_trial():
            grid = tuner.fit()
    else:
        grid = tuner.fit()
except Exception as error:
    print(json.dumps({"raised": f"{type(error).__name__}: {error}"[:400]}))
    sys.exit(0)
# The role is read from the trial's folder name: a trial killed before it reported has no config.
print(json.dumps({"trials": [
    {"role": "hog" if "role=hog" in r.path else "steady", "error": str(r.error)[:400] if r.error else None,
     "steps": len(r.metrics_dataframe) if r.metrics_dataframe is not None else 0}
    for r in grid
]}))
"""


@pytest.fixture(scope="module")
def tight_node(tmp_path_factory: pytest.TempPathFactory) -> LocalRayCluster:
    """A 1-CPU head whose memory monitor kills at MARGIN_BYTES above today's use."""
    memory = psutil.virtual_memory()
    threshold = (memory.total - memory.available + MARGIN_BYTES) / memory.total
    if threshold > 0.95 or memory.available < HOG_LIMIT_BYTES + GIB:
        pytest.skip(f"this machine has {memory.available / GIB:.1f} GiB available; the test needs about 7")
    env = {**os.environ, "RAY_memory_usage_threshold": f"{threshold:.4f}", "RAY_memory_monitor_refresh_ms": "100"}
    cluster = LocalRayCluster(env)
    try:
        cluster.start_head(cpus=1)
        yield cluster
    finally:
        cluster.stop()


def run_driver(cluster: LocalRayCluster, guarded: bool, storage: Path) -> dict:
    mode = "guarded" if guarded else "bare"
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, mode, str(storage), str(HOG_LIMIT_BYTES)],
        env={**cluster.env, "RAY_ADDRESS": cluster.address},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_memory_kill_fails_only_that_trial(tight_node: LocalRayCluster, tmp_path: Path) -> None:
    bare = run_driver(tight_node, guarded=False, storage=tmp_path / "bare")
    assert "Caught unexpected exception" in bare.get("raised", ""), bare

    guarded = run_driver(tight_node, guarded=True, storage=tmp_path / "guarded")
    hog = [t for t in guarded["trials"] if t["role"] == "hog"]
    steady = [t for t in guarded["trials"] if t["role"] == "steady"]
    assert len(hog) == 1 and "killed by Ray's memory monitor" in (hog[0]["error"] or ""), guarded
    assert [(t["error"], t["steps"]) for t in steady] == [(None, 3), (None, 3)], guarded
