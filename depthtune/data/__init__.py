"""NYU Depth v2 data: the labelled-file reader, splits, the synthetic twin and the Dataset.

The names are imported on first use, so that ``depthtune.data.transforms`` (all a registered model
needs to predict) loads without h5py and scipy, which only the readers and the splits use."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depthtune.data.dataset import EpochSampler, NYUDepthV2
    from depthtune.data.device_batches import DeviceBatches
    from depthtune.data.nyu import NYUArrays, NYUFormatError, read_nyu, read_nyu_scenes
    from depthtune.data.splits import Splits, make_splits
    from depthtune.data.synth import generate_dataset

_MODULES = {
    "DeviceBatches": "device_batches",
    "EpochSampler": "dataset",
    "NYUDepthV2": "dataset",
    "NYUArrays": "nyu",
    "NYUFormatError": "nyu",
    "read_nyu": "nyu",
    "read_nyu_scenes": "nyu",
    "Splits": "splits",
    "make_splits": "splits",
    "generate_dataset": "synth",
}

__all__ = [
    "DeviceBatches",
    "EpochSampler",
    "NYUArrays",
    "NYUDepthV2",
    "NYUFormatError",
    "Splits",
    "generate_dataset",
    "make_splits",
    "read_nyu",
    "read_nyu_scenes",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` when it is first asked for."""
    if name not in _MODULES:
        raise AttributeError(f"module 'depthtune.data' has no attribute {name!r}")
    return getattr(import_module(f"depthtune.data.{_MODULES[name]}"), name)
