"""The sweep and demo configs shipped inside the package (package data), so that an installed
depthtune finds them from any folder: ``depthtune tune <model>`` and ``depthtune demo`` start from
them, and ``depthtune config <name>`` prints one to copy and edit."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED: tuple[str, ...] = ("net12", "net3", "fcrn", "demo")


def shipped_config(name: str) -> Path:
    """Path of the shipped ``<name>.yaml``, one of :data:`SHIPPED`. pip unpacks a wheel into
    files, so the resource is a real file that error messages and ``--config`` can name."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped config {name!r}; the shipped ones are {list(SHIPPED)}")
    return Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))
