"""A process that exits while a daemon thread is inside torch aborts (CPython before 3.14 unwinds
the thread through torch's C++ code); ``stop_at_process_exit`` lets the thread stop between two torch
calls and finish its cleanup first, as a trial's training thread does when Tune ends its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = r"""
import sys, threading, time
import torch
from depthtune.sweep.process_exit import stop_at_process_exit

guarded, marker = sys.argv[1] == "guarded", sys.argv[2]
torch.set_num_threads(1)
images, conv = torch.randn(4, 32, 96, 128), torch.nn.Conv2d(32, 32, 3, padding=1)
started = threading.Event()


def convolve_until(stop):
    with torch.no_grad():
        while not stop.is_set():
            torch.nn.functional.max_pool2d(conv(images), 2)
            started.set()


def work():
    if guarded:
        with stop_at_process_exit(timeout=30) as stop:
            convolve_until(stop)
    else:
        convolve_until(threading.Event())
    open(marker, "w").write("cleaned up")


threading.Thread(target=work, daemon=True).start()
started.wait()
time.sleep(0.5)
"""


def _exit_with_a_busy_thread(guarded: bool, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    marker = tmp_path / f"{'guarded' if guarded else 'bare'}.done"
    mode = "guarded" if guarded else "bare"
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode, str(marker)], capture_output=True, text=True, timeout=120
    )
    return out, marker


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="CPython 3.14 no longer unwinds daemon threads at exit")
def test_exiting_under_a_busy_torch_thread_aborts_without_the_guard(tmp_path: Path) -> None:
    out, marker = _exit_with_a_busy_thread(guarded=False, tmp_path=tmp_path)
    assert out.returncode == -6 and not marker.exists(), (out.returncode, out.stderr[-2000:])


def test_the_guarded_thread_stops_between_torch_calls_and_cleans_up(tmp_path: Path) -> None:
    out, marker = _exit_with_a_busy_thread(guarded=True, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert marker.read_text() == "cleaned up"
