"""Constant-depth baselines."""

import numpy as np
import pytest

from depthtune.baselines import best_abs_rel_constant, constant_baselines
from depthtune.data import make_splits


def test_best_constant_minimises_abs_rel_against_brute_force():
    depths = np.random.default_rng(0).uniform(0.7, 10.0, size=501)
    candidates = np.linspace(0.7, 10.0, 4001)
    brute = candidates[np.argmin([np.mean(np.abs(c - depths) / depths) for c in candidates])]
    best = best_abs_rel_constant(depths)
    assert np.mean(np.abs(best - depths) / depths) <= np.mean(np.abs(brute - depths) / depths) + 1e-9


def test_constant_baselines_on_synthetic_data(synthetic_arrays):
    splits = make_splits(synthetic_arrays.scenes, seed=0)
    rows = constant_baselines(synthetic_arrays, splits)
    assert set(rows) == {"train mean depth", "best constant depth"}
    for metrics in rows.values():
        assert 0.7 <= metrics["depth_m"] <= 10.0
        assert 0.0 < metrics["abs_rel"] < 1.5
        assert metrics["si_log"] == pytest.approx(rows["train mean depth"]["si_log"])
