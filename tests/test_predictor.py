"""Inference from saved weights: same depth as the evaluation pipeline, any image size."""

import numpy as np
import pytest
import torch

from conftest import TINY
from depthtune.data import NYUDepthV2
from depthtune.metrics import to_frame
from depthtune.models import build
from depthtune.predictor import DepthPredictor, save_model_files


def test_saved_model_predicts_like_the_evaluation_pipeline(tmp_path, synthetic_arrays):
    torch.manual_seed(0)
    model = build("net12", **TINY["net12"]).eval()
    predictor = DepthPredictor.from_files(*save_model_files(model, tmp_path))
    dataset = NYUDepthV2(synthetic_arrays, "test", "net12", train=False, model_cfg=TINY["net12"])
    image, _, _ = dataset[0]
    frame = int(dataset.indices[0])
    with torch.no_grad():
        expected = to_frame(torch.exp(model(image[None])), output_region=model.output_region)[0].numpy()
    got = predictor.predict(synthetic_arrays.images[frame])
    assert got.shape == (480, 640) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_any_image_size_comes_back_at_its_own_size(tmp_path):
    predictor = DepthPredictor.from_files(*save_model_files(build("fcrn", **TINY["fcrn"]), tmp_path))
    image = np.random.default_rng(0).integers(0, 255, size=(123, 201, 3), dtype=np.uint8)
    depth = predictor.predict(image)
    assert depth.shape == (123, 201) and np.isfinite(depth).all() and (depth > 0).all()


def test_bad_image_is_named(tmp_path):
    predictor = DepthPredictor.from_files(*save_model_files(build("net12", **TINY["net12"]), tmp_path))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        predictor.predict(np.zeros((10, 10), np.float32))


def test_a_batch_predicts_each_image_as_alone(tmp_path):
    torch.manual_seed(0)
    predictor = DepthPredictor.from_files(*save_model_files(build("net12", **TINY["net12"]), tmp_path))
    images = np.random.default_rng(1).integers(0, 255, size=(3, 96, 128, 3), dtype=np.uint8)
    batch = predictor.predict_batch(images)
    assert batch.shape == (3, 96, 128)
    for image, depth in zip(images, batch):
        np.testing.assert_allclose(depth, predictor.predict(image), rtol=1e-4)
    with pytest.raises(ValueError, match="NxHxWx3"):
        predictor.predict_batch(images[0])
