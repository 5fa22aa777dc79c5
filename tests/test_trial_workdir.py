"""A trial's scratch directory: those left by trial processes that died are removed, live ones kept."""

import os
import subprocess
import sys

from depthtune.sweep.trial import WORKDIR_PREFIX, trial_workdir


def test_directories_of_dead_trial_processes_are_removed_live_ones_kept(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(finished.stdout)
    dead = tmp_path / f"{WORKDIR_PREFIX}abc_00001-pid{dead_pid}-x1y2"
    (dead / "checkpoints").mkdir(parents=True)
    live = tmp_path / f"{WORKDIR_PREFIX}abc_00002-pid{os.getpid()}-q9w8"
    live.mkdir()
    unrelated = tmp_path / f"{WORKDIR_PREFIX}notes"
    unrelated.mkdir()

    fresh = trial_workdir("abc_00001", scratch=tmp_path)

    assert not dead.exists()
    assert live.is_dir() and unrelated.is_dir()
    assert fresh.is_dir() and fresh.name.startswith(f"{WORKDIR_PREFIX}abc_00001-pid{os.getpid()}-")
    assert trial_workdir("abc_00001", scratch=tmp_path) != fresh and fresh.is_dir(), (
        "a live process's directory was removed"
    )
