"""Depth from an RGB image with a trained model: the architecture from this package plus weights
loaded with ``torch.load(weights_only=True)``, never an unpickled object."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthtune.data.transforms import DepthTransform
from depthtune.metrics import to_frame
from depthtune.models import build, geometry

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "model.json"


def save_model_files(model: nn.Module, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write the weights (a state_dict) and a small JSON naming the architecture."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    torch.save(model.state_dict(), weights)
    config.write_text(json.dumps({"model_name": model.name, "model_config": model.config}, indent=2))
    return weights, config


class DepthPredictor:
    """``predict(rgb uint8 HxWx3) -> depth metres HxW``; ``module`` is the torch model underneath."""

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        shape = geometry(module.name, **module.config)
        self.transform = DepthTransform(shape.input_size, shape.output_size, output_region=shape.output_region)

    @classmethod
    def from_files(cls, weights: str | os.PathLike, config: str | os.PathLike, device: str = "cpu") -> "DepthPredictor":
        """Rebuild from ``weights.pt`` + ``model.json`` (as logged with a registered model)."""
        description = json.loads(Path(config).read_text())
        module = build(description["model_name"], **description["model_config"])
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return cls(module, device)

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Depth in metres at the image's own resolution."""
        image = np.asarray(rgb)
        x = self.transform.eval_input(image)[None].to(self.device)
        depth = torch.exp(self.module(x).float())
        return to_frame(depth, frame_shape=image.shape[:2], output_region=self.module.output_region)[0].cpu().numpy()
