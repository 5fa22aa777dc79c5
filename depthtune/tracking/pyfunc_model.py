"""MLflow "models from code" entry of a depthtune model: MLflow stores this file's text, not a
pickle, and rebuilds the model from ``weights.pt`` + ``model.json`` through DepthPredictor, so it
loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false and serves with ``mlflow models serve``. The
depthtune package travels with the model (its ``code/`` folder), so loading needs only torch and
mlflow installed.

Input: one RGB image, uint8 (H, W, 3), any H and W (the model's signature; MLflow refuses other
shapes and dtypes before ``predict`` runs). Output: float32 (H, W), depth in metres.
"""

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel, PythonModelContext

from depthtune.predictor import DepthPredictor


class DepthModel(PythonModel):
    """pyfunc face of DepthPredictor."""

    def load_context(self, context: PythonModelContext) -> None:
        self.predictor = DepthPredictor.from_files(context.artifacts["weights"], context.artifacts["config"])

    def predict(
        self, context: PythonModelContext, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Depth (H, W) in metres of one image (H, W, 3) that the signature has checked."""
        return self.predictor.predict(model_input)


mlflow.models.set_model(DepthModel())
