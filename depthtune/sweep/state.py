"""The sweep's own state file (``depthtune_sweep.json`` in its folder under the storage path): its
MLflow coordinates, the Net12 a Net3 sweep pinned, whether its last run was interrupted, what it
registered once it finished and how often it was extended; beside it the settings it started
with (``sweep_config.json``). Plain JSON, rewritten atomically; ``--resume`` reads it, and a bare
``--resume`` only picks folders that hold one."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from depthtune.sweep.config import SweepConfig

STATE_FILE = "depthtune_sweep.json"
CONFIG_FILE = "sweep_config.json"


@dataclass(frozen=True)
class SweepState:
    """What a sweep's later drivers and its callbacks need to know: ``base_model`` is the pinned Net12
    of a Net3 sweep, ``registered`` the version a finished sweep registered (``name vN``; None again
    while an extension runs), ``extensions`` how many times ``--extend`` added trials to it."""

    parent_run_id: str
    tracking_uri: str = ""
    experiment_id: str = ""
    base_model: str | None = None
    interrupted: bool = False
    registered: str | None = None
    extensions: int = 0

    def but(self, **changes: Any) -> "SweepState":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def load_state(experiment_dir: Path) -> SweepState | None:
    """The sweep's state, or None for a folder that holds none."""
    path = Path(experiment_dir) / STATE_FILE
    if not path.is_file():
        return None
    known = {f.name for f in dataclasses.fields(SweepState)}
    return SweepState(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def save_state(experiment_dir: Path, state: SweepState) -> None:
    """Replace the state file in one step: a reader sees the old or the new, never half."""
    path = Path(experiment_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2))
    os.replace(tmp, path)


def save_config(experiment_dir: Path, config: SweepConfig) -> None:
    """The sweep's settings as it started, profile overrides already merged, for ``--extend``."""
    values = {**config.as_dict(), "profiles": {}}
    (Path(experiment_dir) / CONFIG_FILE).write_text(json.dumps(values, indent=2, sort_keys=True))


def load_config(experiment_dir: Path) -> SweepConfig:
    """The settings sweep ``experiment_dir`` started with."""
    path = Path(experiment_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the sweep predates --extend, or {experiment_dir} is no sweep")
    values = json.loads(path.read_text())
    return SweepConfig.from_dict(values, profile=values["profile"], where=str(path))


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
            state = load_state(self.experiment_dir)
            if state is not None:
                save_state(self.experiment_dir, state.but(interrupted=True))
            if callable(tune_handler):
                tune_handler(number, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, record_then_stop)
