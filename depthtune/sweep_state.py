"""The sweep's own state file (``depthtune_sweep.json`` in its folder under the storage path): its
MLflow coordinates, the Net12 a Net3 sweep pinned, whether its last run was interrupted, and what
it registered once it finished. Plain JSON, rewritten atomically; ``--resume`` reads it, and a bare
``--resume`` only picks folders that hold one."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from ray.tune import Callback

STATE_FILE = "depthtune_sweep.json"
INTERRUPTED = "interrupted"


def load_state(experiment_dir: Path) -> dict[str, Any] | None:
    path = Path(experiment_dir) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def save_state(experiment_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file in one step: a reader sees the old or the new, never half."""
    path = Path(experiment_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


class InterruptWatch(Callback):
    """Records in the state file that Ctrl-C (or SIGTERM, which the driver turns into it) stopped
    the sweep. Ray Tune's own SIGINT handler ends a sweep gracefully, saving it for ``--resume``,
    and tells its caller nothing: this callback, set up after Tune installed that handler, wraps
    it. It keeps only the file's path, since a resumed sweep gets the first driver's pickled copy."""

    def __init__(self, experiment_dir: Path) -> None:
        self.experiment_dir = Path(experiment_dir)

    def setup(self, **info: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def record_then_stop(number: int, frame: Any) -> None:
            save_state(self.experiment_dir, {**(load_state(self.experiment_dir) or {}), INTERRUPTED: True})
            if callable(tune_handler):
                tune_handler(number, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, record_then_stop)
