"""Let a trial's training thread finish before its process exits. Tune ends a stopped trial's actor
without waiting for the training thread (a daemon thread), and CPython before 3.14 ends a daemon
thread still inside torch's C++ code at exit by unwinding it, which aborts the process: SIGABRT and
pages of native stack on the sweep's console, and none of the trial's cleanup run."""

from __future__ import annotations

import atexit
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)


@contextmanager
def stop_at_process_exit(timeout: float) -> Iterator[threading.Event]:
    """An event that is set when the process starts to exit, which then waits up to ``timeout``
    seconds for the calling thread to end: the thread checks the event, and stops between two
    torch calls."""
    stop, thread = threading.Event(), threading.current_thread()

    def stop_and_wait() -> None:
        stop.set()
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("the training thread did not stop within %.0f s of the process's exit", timeout)

    atexit.register(stop_and_wait)
    try:
        yield stop
    finally:
        atexit.unregister(stop_and_wait)
