"""A trial whose worker Ray's memory monitor kills fails alone, as any other dead trial does, instead of
ending the whole sweep.

Ray's memory monitor kills a worker with SIGKILL when its node runs low on memory. For a task Ray
reports that as ``OutOfMemoryError``; Tune's actor manager (Ray 2.60) only expects ``RayActorError``
(the actor died) or ``RayTaskError`` (the trial raised) from a trial's task, and for anything else
raises ``RuntimeError: Caught unexpected exception`` out of ``Tuner.fit()``: one trial killed for
memory ended every trial of the sweep. The killed trial's actor is dead all the same, so while a sweep
runs, such an error is handed to Tune as the actor death it is: Tune then fails that trial (error file,
ERROR status) or restarts it from its last checkpoint within the sweep's ``max_failures``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ray.air.execution._internal.actor_manager import RayActorManager
from ray.exceptions import OutOfMemoryError, RayActorError


class TrialKilledForMemory(RayActorError):
    """The trial's worker was killed by Ray's memory monitor; the message is Ray's, with the node's
    memory figures and the processes that held the most."""

    def __init__(self, cause: OutOfMemoryError) -> None:
        super().__init__(error_msg=f"the trial's worker was killed by Ray's memory monitor: {cause}")


@contextmanager
def memory_kills_fail_one_trial() -> Iterator[None]:
    """While the block runs (a sweep's ``Tuner.fit()``), Tune treats a trial killed for memory as a
    trial whose actor died."""
    original = RayActorManager._actor_task_failed

    def actor_task_failed(self: RayActorManager, tracked_actor_task: Any, exception: Exception) -> None:
        if isinstance(exception, OutOfMemoryError):
            exception = TrialKilledForMemory(exception)
        original(self, tracked_actor_task, exception)

    RayActorManager._actor_task_failed = actor_task_failed
    try:
        yield
    finally:
        RayActorManager._actor_task_failed = original
