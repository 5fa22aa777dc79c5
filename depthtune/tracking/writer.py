"""MLflow writes that survive a tracking-server outage: a background thread sends them in order and
retries each one until the server answers again, so training neither waits for nor fails because
of the tracking server. Metrics carry the timestamp of the moment they were produced, so sending
one twice (a retry, or the driver filling in what a stopped trial could not send) stores it once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlflow.exceptions import MlflowException, RestException

logger = logging.getLogger(__name__)


def is_transient(exc: Exception) -> bool:
    """Worth retrying: the server was unreachable, overloaded or failed; a 4xx answer (bad request,
    refused credentials, missing run) would fail the same way again, except 429 (throttled)."""
    if isinstance(exc, RestException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(exc, (MlflowException, OSError, ConnectionError, TimeoutError))


@dataclass
class _Write:
    description: str
    send: Callable[[], None]


class BackgroundWriter:
    """An ordered queue of MLflow writes sent by one daemon thread. A write that fails transiently
    is retried (backoff up to ``max_backoff`` s) until it succeeds; one the server rejects is
    logged and dropped. ``flush`` waits until everything queued so far has been sent."""

    def __init__(self, name: str, max_backoff: float = 10.0) -> None:
        self.name = name
        self.max_backoff = max_backoff
        self.failed: list[str] = []
        self._queue: queue.Queue[_Write | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"mlflow-writer-{name}", daemon=True)
        self._thread.start()

    def submit(self, description: str, send: Callable[[], None]) -> None:
        """Queue ``send`` (one MLflow call, safe to repeat); returns at once."""
        self._queue.put(_Write(description, send))

    @property
    def pending(self) -> int:
        """Writes queued or in flight."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write queued so far is sent (or dropped); False if ``timeout`` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if deadline is not None and time.monotonic() >= deadline:
                logger.warning("%s: %d MLflow writes still unsent after %.0f s", self.name, self.pending, timeout)
                return False
            time.sleep(0.05)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread; returns whether everything was sent."""
        flushed = self.flush(timeout)
        self._queue.put(None)
        return flushed

    def _run(self) -> None:
        while True:
            write = self._queue.get()
            try:
                if write is None:
                    return
                self._send(write)
            finally:
                self._queue.task_done()

    def _send(self, write: _Write) -> None:
        failures, first_failure = 0, None
        while True:
            try:
                write.send()
                if failures:
                    logger.info("%s: %s sent after %d retries (%.0f s)", self.name, write.description, failures, time.monotonic() - first_failure)
                return
            except Exception as exc:  # whatever the client raises: is_transient decides retry or drop
                if not is_transient(exc):
                    logger.error("%s: the tracking server rejected %s; dropped: %s", self.name, write.description, exc)
                    self.failed.append(write.description)
                    return
                failures += 1
                first_failure = first_failure or time.monotonic()
                if failures == 1:
                    logger.warning("%s: tracking server unreachable, %s kept for retry: %s", self.name, write.description, exc)
                time.sleep(min(self.max_backoff, 0.5 * 2**failures))
