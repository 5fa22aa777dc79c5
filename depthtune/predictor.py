"""Depth from an RGB image with a trained model: the architecture from this package plus weights
loaded with ``torch.load(weights_only=True)``, never an unpickled object."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthtune.checkpoints import BASE_KEY, CheckpointError, build_on_base, load_weights
from depthtune.data.transforms import DepthTransform
from depthtune.metrics import to_frame
from depthtune.models import geometry, to_depth

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "model.json"


def save_model_files(model: nn.Module, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write the weights (a state_dict; a Net3's Net12 included, so the files stand alone) and a small
    JSON naming the architecture."""
    return write_model_files(directory, model.name, model.config, model.state_dict())


def write_model_files(
    directory: str | os.PathLike,
    model_name: str,
    model_config: dict[str, Any],
    weights: Mapping[str, torch.Tensor],
    base_model: str | None = None,
) -> tuple[Path, Path]:
    """Write ``weights`` and the JSON naming their architecture; ``base_model`` is the reference of the
    Net12 that a Net3's weights leave out (a trial's ``best_model/``, written from its checkpoint)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    torch.save(weights, path)
    base = {BASE_KEY: base_model} if base_model is not None else {}
    config.write_text(json.dumps({"model_name": model_name, "model_config": model_config, **base}, indent=2))
    return path, config


class DepthPredictor:
    """``predict(rgb uint8 HxWx3) -> depth metres HxW``; ``module`` is the torch model underneath."""

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        shape = geometry(module.name, **module.config)
        self.input_size = shape.input_size
        self.transform = DepthTransform(shape.input_size, shape.output_size, output_region=shape.output_region)

    @classmethod
    def from_files(
        cls, weights: str | os.PathLike, config: str | os.PathLike, device: str = "cpu", base: nn.Module | None = None
    ) -> "DepthPredictor":
        """Rebuild from ``weights.pt`` + ``model.json`` (as logged with a registered model); files
        that are not what they should be are errors naming the file and what is wrong. ``base`` is
        the Net12 of a Net3 whose files name it (``base_model``) instead of holding it."""
        try:
            description = json.loads(Path(config).read_text())
            name, model_config = description["model_name"], description["model_config"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{config}: not a depthtune model description ({exc!r}); expected JSON with "
                "'model_name' and 'model_config'"
            ) from None
        reference = description.get(BASE_KEY)
        module = build_on_base(name, model_config, reference, base, str(config))
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            RuntimeError,
        ) as exc:  # what torch.load raises on foreign bytes
            detail = (str(exc).splitlines() or [""])[0].split(". ")[0]
            raise ValueError(
                f"{weights}: not a weights file (a state dict saved by torch.save): {type(exc).__name__} {detail}"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"{weights}: holds a {type(state).__name__}, not a state dict of weights")
        try:
            load_weights(module, state, reference)
        except (RuntimeError, CheckpointError) as exc:
            raise ValueError(
                f"{weights}: the weights do not fit the {name} that {config} describes: {str(exc).splitlines()[0]}"
            ) from None
        return cls(module, device)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Depth in metres at the image's own resolution."""
        image = np.asarray(rgb)
        return self._depth(self.transform.eval_input(image)[None], image.shape[:2])[0]

    def predict_batch(self, rgb: np.ndarray) -> np.ndarray:
        """Depth (N, H, W) in metres for N same-sized images (N, H, W, 3) in one forward pass."""
        images = np.asarray(rgb)
        if images.ndim != 4:
            raise ValueError(f"expected same-sized RGB images as uint8 NxHxWx3, got {images.dtype} {images.shape}")
        return self._depth(torch.stack([self.transform.eval_input(image) for image in images]), images.shape[1:3])

    @torch.no_grad()
    def _depth(self, inputs: torch.Tensor, frame_shape: tuple[int, int]) -> np.ndarray:
        depth = to_depth(self.module(inputs.to(self.device)).float(), self.module.predicts)
        return to_frame(depth, frame_shape=frame_shape, output_region=self.module.output_region).cpu().numpy()
