"""NYU Depth v2 data: the labelled-file reader, splits, the synthetic twin and the Dataset."""

from depthtune.data.dataset import EpochSampler, NYUDepthV2
from depthtune.data.nyu import NYUArrays, NYUFormatError, read_nyu, read_nyu_scenes
from depthtune.data.splits import Splits, make_splits
from depthtune.data.synth import generate_dataset

__all__ = [
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
