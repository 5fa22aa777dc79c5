"""Constant-depth baselines a learned model must beat: the training-set mean depth, and the
single constant with the lowest training abs rel (a weighted median, a stronger baseline)."""

from __future__ import annotations

import numpy as np
import torch

from depthtune.data import NYUArrays, Splits
from depthtune.metrics import EIGEN_PROTOCOL, EvalProtocol, MetricAccumulator, valid_mask


def _train_depths(arrays: NYUArrays, splits: Splits, protocol: EvalProtocol, stride: int = 16) -> np.ndarray:
    """Every ``stride``-th valid training pixel: plenty for a mean and a median, 16x less sorting."""
    values = []
    for frame in splits.train:
        gt = torch.tensor(arrays.depths[frame], dtype=torch.float32)
        values.append(gt[valid_mask(gt, protocol)].numpy()[::stride])
    return np.concatenate(values).astype(np.float64)


def best_abs_rel_constant(depths: np.ndarray) -> float:
    """argmin_c sum |c - y| / y: the median of y weighted by 1/y."""
    order = np.argsort(depths)
    weights = 1.0 / depths[order]
    cumulative = np.cumsum(weights)
    return float(depths[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def constant_baselines(
    arrays: NYUArrays, splits: Splits, split: str = "test", protocol: EvalProtocol = EIGEN_PROTOCOL
) -> dict[str, dict[str, float]]:
    """Metrics on ``split`` of predicting one constant depth everywhere, constants fit on train."""
    depths = _train_depths(arrays, splits, protocol)
    constants = {"train mean depth": float(depths.mean()), "best constant depth": best_abs_rel_constant(depths)}
    results = {}
    for name, value in constants.items():
        accumulator = MetricAccumulator(protocol)
        for frame in splits.get(split):
            gt = torch.tensor(arrays.depths[frame], dtype=torch.float32)[None]
            accumulator.update(torch.full_like(gt, value), gt)
        results[name] = {"depth_m": value, **accumulator.compute()}
    return results
