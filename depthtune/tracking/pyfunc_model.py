"""MLflow "models from code" entry of a depthtune model: MLflow stores this file's text, not a
pickle, and rebuilds the model from ``weights.pt`` + ``model.json`` through DepthPredictor, so it
loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false and serves with ``mlflow models serve``.

Input: one RGB image (H, W, 3) or a batch (N, H, W, 3) of values 0..255. Output: depth in metres,
(H, W) or (N, H, W).
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from depthtune.predictor import DepthPredictor


class DepthModel(PythonModel):
    """pyfunc face of DepthPredictor."""

    def load_context(self, context) -> None:
        self.predictor = DepthPredictor.from_files(context.artifacts["weights"], context.artifacts["config"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        images = np.asarray(model_input)
        if images.ndim == 3:
            return self.predictor.predict(images.astype(np.uint8))
        if images.ndim == 4:
            return np.stack([self.predictor.predict(image) for image in images.astype(np.uint8)])
        raise ValueError(f"expected an image (H, W, 3) or a batch (N, H, W, 3), got an array of shape {images.shape}")


mlflow.models.set_model(DepthModel())
