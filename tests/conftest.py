"""Shared fixtures: a small synthetic file in the NYU layout and tiny model configurations."""

from __future__ import annotations

import pytest
import torch

from depthtune.data import generate_dataset, read_nyu

TINY = {
    "net12": {"input_size": (64, 80), "width": 0.125},
    "net3": {"width": 0.125},
    "fcrn": {"input_size": (64, 80), "width": 0.125, "blocks": (1, 1, 1, 1)},
}

SEARCH_SPACE = {
    "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
    "momentum": {"type": "uniform", "low": 0.5, "high": 0.95},
    "step_size": {"type": "int", "low": 2, "high": 8},
    "grad_weight": {"type": "uniform", "low": 0.0, "high": 2.0},
}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests are many small ops on a 2-core machine: one intra-op thread is faster and deterministic."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory):
    """20 synthetic scenes written in the NYU labelled-file layout (split 16/2/2)."""
    return generate_dataset(tmp_path_factory.mktemp("data") / "synth20.mat", 20, seed=3)


@pytest.fixture(scope="session")
def synthetic_arrays(synthetic_file):
    return read_nyu(synthetic_file)
