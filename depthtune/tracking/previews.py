"""Prediction grids for a trial's MLflow run: for a fixed set of validation frames, one row each of
RGB, ground truth and the model's prediction, the two depth maps on the row's own colour scale."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from mlflow import MlflowClient
from PIL import Image, ImageDraw

from depthtune.data import NYUArrays
from depthtune.predictor import DepthPredictor

COLUMNS = ("RGB", "ground truth", "prediction")
HEADER = 18
GRID_KEY = "predictions"  # the image key of a run's prediction grids, one per logged epoch


def colorize(depth: np.ndarray, low: float, high: float, colormap: str = "magma_r") -> np.ndarray:
    """Depth (H, W) in metres -> RGB uint8 on [low, high]; invalid (<= 0 or NaN) pixels black."""
    valid = np.isfinite(depth) & (depth > 0)
    scaled = np.clip((np.nan_to_num(depth) - low) / max(high - low, 1e-6), 0.0, 1.0)
    rgb = (colormaps[colormap](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    return np.asarray(
        Image.fromarray(image).resize((image.shape[1] // factor, image.shape[0] // factor), Image.BILINEAR)
    )


def _subsample(depth: np.ndarray, factor: int) -> np.ndarray:
    """Every ``factor``-th pixel (no blending of valid depths with invalid zeros), at ``_shrink``'s size."""
    height, width = depth.shape[0] // factor, depth.shape[1] // factor
    return depth[: height * factor : factor, : width * factor : factor]


def prediction_grid(
    predictor: DepthPredictor, arrays: NYUArrays, indices: list[int], title: str, shrink: int = 2
) -> Image.Image:
    """One row per frame in ``indices``: RGB | ground truth | prediction, each ``1/shrink`` size. The
    frames go through the model as one batch and are coloured at the shrunk size: the grid is made
    beside a trial's training."""
    predicted = predictor.predict_batch(arrays.images[list(indices)])
    rows = []
    for index, prediction in zip(indices, predicted):
        truth = arrays.depths[index]
        valid = truth[np.isfinite(truth) & (truth > 0)]
        low, high = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 10.0)
        depths = [colorize(_subsample(depth, shrink), low, high) for depth in (truth, prediction)]
        rows.append(np.concatenate([_shrink(arrays.images[index], shrink), *depths], axis=1))
    grid = np.concatenate(rows, axis=0)
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    canvas.paste(Image.fromarray(grid), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    column_width = grid.shape[1] // len(COLUMNS)
    for i, name in enumerate(COLUMNS):
        draw.text((i * column_width + 4, 3), f"{name}  ({title})" if i == 0 else name, fill="black")
    return canvas


def log_grid(client: MlflowClient, run_id: str, grid: Image.Image, step: int) -> None:
    """Log ``grid`` as the image ``predictions`` at ``step`` (the epoch's metric step) of run
    ``run_id``: MLflow's UI shows a run's grids with a step slider, and keeps each as a PNG artifact
    under ``images/``."""
    client.log_image(run_id, grid, key=GRID_KEY, step=step, synchronous=True)
