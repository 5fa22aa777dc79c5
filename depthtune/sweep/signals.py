"""How a sweep's driver treats signals: SIGTERM ends a sweep as Ctrl-C does, registering the winner is
never cut in half, and Tune adds no TensorBoard logger of its own."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

logger = logging.getLogger(__name__)


@contextmanager
def tune_file_loggers_only() -> Iterator[None]:
    """While Tune sets up a sweep, keep it from adding its TensorBoardX logger on its own: MLflow has
    every metric, and importing that logger slows every driver start (benchmarks/README.md). The CSV
    and JSON loggers, which Tune's results read, are passed explicitly."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """While a sweep runs, SIGTERM (a scheduler's or ``kill``'s stop) does what Ctrl-C does: Tune
    saves its state and ends the trials, or outside Tune's loop a KeyboardInterrupt unwinds, so the
    sweep's run ends KILLED instead of being left RUNNING by a process that vanished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the block runs (a warning says so): registering is the
    sweep's commit point, written whole, never a version without its alias; the sweep then ends
    normally. (Masking the signals in this thread would not do: Ray's and MLflow's threads would
    still take them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: received.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        logger.warning(
            "signal %d arrived while the winner was registered: registration completed, the sweep ends normally",
            received[0],
        )
