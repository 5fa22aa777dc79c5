"""MLflow writes that survive a tracking-server outage: a background thread sends them in order and
retries each one until the server answers again, so training neither waits for nor fails because
of the tracking server. Metrics carry the timestamp of the moment they were produced, so sending
one twice (a retry, or the driver filling in what a stopped trial could not send) stores it once.

MLflow's own asynchronous logging (``synchronous=False``) keeps training free too, but drops a batch
once the HTTP client's retries are spent (about 4 min by default), sends from 10 threads per process
unless told otherwise, and offers no bounded wait; measured side by side in
``benchmarks/logging_throughput.py`` (benchmarks/README.md, section 4)."""

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
        self._submitted = 0
        self._done = 0
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"mlflow-writer-{name}", daemon=True)
        self._thread.start()

    def submit(self, description: str, send: Callable[[], None]) -> int:
        """Queue ``send`` (one MLflow call, safe to repeat); returns at once with its mark for ``wait_for``."""
        with self._progress:
            self._submitted += 1
            mark = self._submitted
        self._queue.put(_Write(description, send))
        return mark

    @property
    def mark(self) -> int:
        """The mark of the newest write queued so far (0: none)."""
        with self._progress:
            return self._submitted

    def wait_for(self, mark: int, timeout: float | None = None) -> bool:
        """Wait until the writes up to ``mark`` are sent (or dropped); False if ``timeout`` ran out first."""
        with self._progress:
            if self._progress.wait_for(lambda: self._done >= mark, timeout):
                return True
            unsent = mark - self._done
        logger.warning("%s: %d MLflow writes still unsent after %.0f s", self.name, unsent, timeout)
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write queued so far is sent (or dropped); False if ``timeout`` ran out."""
        return self.wait_for(self.mark, timeout)

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
                if write is not None:
                    with self._progress:
                        self._done += 1
                        self._progress.notify_all()

    def _send(self, write: _Write) -> None:
        failures, first_failure = 0, None
        while True:
            try:
                write.send()
                if failures:
                    logger.info(
                        "%s: %s sent after %d retries (%.0f s)",
                        self.name,
                        write.description,
                        failures,
                        time.monotonic() - first_failure,
                    )
                return
            except Exception as exc:  # whatever the client raises: is_transient decides retry or drop
                if not is_transient(exc):
                    logger.error("%s: the tracking server rejected %s; dropped: %s", self.name, write.description, exc)
                    self.failed.append(write.description)
                    return
                failures += 1
                first_failure = first_failure or time.monotonic()
                if failures == 1:
                    logger.warning(
                        "%s: tracking server unreachable, %s kept for retry: %s", self.name, write.description, exc
                    )
                time.sleep(min(self.max_backoff, 0.5 * 2**failures))
