"""How a sweep can end other than with a winner, as the command line reports it (a module of its
own so that the CLI can name it without importing Ray)."""

from __future__ import annotations

from pathlib import Path


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C or SIGTERM before every trial had ended: its run and the runs of
    unfinished trials are KILLED, nothing was evaluated or registered, and ``--resume`` goes on."""

    def __init__(self, name: str, storage: Path) -> None:
        super().__init__(
            f"sweep {name} was interrupted before all its trials ended: nothing was evaluated or registered"
        )
        self.name = name
        self.storage = storage
