"""Checkpoints written off the training thread. At a checkpointed epoch the training thread only
copies the state into host buffers (pinned and reused from one checkpoint to the next on CUDA, the
copies queued on the device's stream so it never waits for them); one background thread then writes
the file, runs each epoch's publish step (a trial's report to Tune, which copies the directory into
the sweep's storage) and prunes old checkpoints, all in epoch order. A paper Net12 checkpoint takes
seconds to write and copy (benchmarks/README.md, section 1), which the GPU no longer waits for."""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from depthtune.checkpoints import save_checkpoint

logger = logging.getLogger(__name__)

Publish = Callable[[Path | None], None]
# An epoch's publish steps may lag the training thread by this many epochs before it waits for them.
MAX_PENDING = 2


def checkpoint_directory(root: Path, epoch: int) -> Path:
    """Where the checkpoint of ``epoch`` (0-based) is written."""
    return root / f"epoch_{epoch:03d}"


def prune_checkpoints(root: Path, keep: int, best_epoch: int) -> None:
    """Keep the newest ``keep`` epoch directories and the best one."""
    for directory in sorted(root.glob("epoch_*"))[:-keep]:
        if directory != checkpoint_directory(root, best_epoch):
            shutil.rmtree(directory, ignore_errors=True)


class HostCopy:
    """Copies a checkpoint state's tensors into host buffers kept from one checkpoint to the next
    (pinned when the tensor is on CUDA, so the copy is asynchronous); everything else is copied as
    containers of immutable values, so the snapshot does not change as training goes on."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def copy(self, state: Any, path: tuple[Any, ...] = ()) -> Any:
        """A snapshot of ``state``; the buffers of the previous snapshot are overwritten."""
        if isinstance(state, torch.Tensor):
            buffer = self._buffers.get(path)
            if buffer is None or buffer.shape != state.shape or buffer.dtype != state.dtype:
                buffer = torch.empty_like(state, device="cpu", pin_memory=state.is_cuda)
                self._buffers[path] = buffer
            return buffer.copy_(state, non_blocking=state.is_cuda)
        if isinstance(state, dict):
            return {key: self.copy(value, (*path, key)) for key, value in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self.copy(value, (*path, index)) for index, value in enumerate(state))
        return state


@dataclass
class _Write:
    directory: Path
    state: dict[str, Any]
    copied: torch.cuda.Event | None


@dataclass
class _Publish:
    directory: Path | None
    publish: Publish | None
    best_epoch: int


class CheckpointPipeline:
    """The background writer of one run's checkpoints under ``root``, keeping ``keep`` of them and
    the best. A failure in the background (a full disk, a publish step's error, or Tune's SystemExit
    when it stops the trial) is raised on the training thread at its next call."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root, self.keep = Path(root), keep
        self._host = HostCopy()
        self._jobs: queue.Queue[_Write | _Publish | None] = queue.Queue(maxsize=2 * MAX_PENDING)
        self._written = threading.Event()
        self._written.set()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="depthtune-checkpoints", daemon=True)
        self._thread.start()

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        """Snapshot ``state`` and queue its write; returns the directory it will be in. Waits only
        for the previous checkpoint's write, whose buffers the snapshot reuses."""
        self._written.wait()
        self._raise_failure()
        self._written.clear()
        snapshot = self._host.copy(state)
        copied = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            copied = torch.cuda.Event()
            copied.record()
        directory = checkpoint_directory(self.root, epoch)
        self._put(_Write(directory, snapshot, copied))
        return directory

    def publish(self, directory: Path | None, publish: Publish | None, best_epoch: int) -> None:
        """Queue an epoch's publish step (after its checkpoint, if any, is written), then the pruning."""
        self._put(_Publish(directory, publish, best_epoch))

    def close(self) -> None:
        """Wait for everything queued, then raise the first failure of the background thread."""
        self._jobs.put(None)
        self._thread.join()
        self._raise_failure()

    def _put(self, job: _Write | _Publish | None) -> None:
        self._raise_failure()
        self._jobs.put(job)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _run(self) -> None:
        failed = False
        while (job := self._jobs.get()) is not None:
            if failed:
                self._written.set()
                continue
            try:
                self._do(job)
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, SystemExit included
                logger.debug("checkpoint pipeline stopped by %r", exc)
                self._failure, failed = exc, True
                self._written.set()

    def _do(self, job: _Write | _Publish) -> None:
        if isinstance(job, _Write):
            if job.copied is not None:
                job.copied.synchronize()
            save_checkpoint(job.directory, job.state)
            self._written.set()
            return
        if job.publish is not None:
            job.publish(job.directory)
        prune_checkpoints(self.root, self.keep, job.best_epoch)
