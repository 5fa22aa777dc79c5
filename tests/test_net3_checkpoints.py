"""Net3 checkpoints and trial artifacts without their frozen Net12: only the scale-3 weights and the
pinned reference of the Net12, which loading resolves; resume refuses another Net12; the model
registered by name stays self-contained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depthtune.checkpoints import (
    BASE_KEY,
    BASE_PREFIX,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from depthtune.evaluation import data_splits, evaluate, evaluation_loader
from depthtune.models import build
from depthtune.predictor import DepthPredictor, save_model_files, write_model_files
from depthtune.profiles import model_config
from depthtune.tracking.lineage import load_checkpoint_model, resolve_base_model
from depthtune.train import train
from depthtune.train_config import TrainConfig

NET12_CFG = model_config("cpu", "net12")
NET3_CFG = model_config("cpu", "net3")


def _config(model: str, **overrides) -> TrainConfig:
    values = dict(
        model=model,
        model_cfg=NET12_CFG if model == "net12" else NET3_CFG,
        epochs=1,
        batch_size=6,
        lr=0.01,
        step_size=1,
        gamma=0.5,
        seed=11,
    )
    return TrainConfig.from_dict({**values, **overrides})


def _base(reference: Path | str) -> torch.nn.Module:
    return resolve_base_model(str(reference), None, expected="net12").module()


@pytest.fixture(scope="module")
def net12_checkpoint(tmp_path_factory, synthetic_arrays) -> str:
    """A trained cpu-profile Net12's best checkpoint, pinned as a Net3 run pins it (its absolute path)."""
    result = train(_config("net12"), tmp_path_factory.mktemp("net12"), arrays=synthetic_arrays)
    return str(result.best_checkpoint.resolve())


@pytest.fixture(scope="module")
def net3_run(tmp_path_factory, synthetic_arrays, net12_checkpoint):
    """An uninterrupted 3-epoch Net3 run on that Net12."""
    config = _config("net3", epochs=3, net12_checkpoint=net12_checkpoint)
    return train(config, tmp_path_factory.mktemp("net3"), arrays=synthetic_arrays, net12=_base(net12_checkpoint))


def test_net3_checkpoint_holds_scale_3_and_the_reference_of_its_net12(tmp_path, net3_run, net12_checkpoint):
    state = load_checkpoint(net3_run.last_checkpoint)
    assert state[BASE_KEY] == net12_checkpoint
    assert state["model"] and not any(key.startswith(BASE_PREFIX) for key in state["model"])
    full = load_checkpoint_model(net3_run.last_checkpoint, expected="net3").state_dict()
    assert {key for key in full if not key.startswith(BASE_PREFIX)} == set(state["model"])
    slim_bytes = (net3_run.last_checkpoint / "checkpoint.pt").stat().st_size
    full_bytes = save_checkpoint(tmp_path, {**state, "model": full}).stat().st_size
    assert slim_bytes * 20 < full_bytes, (slim_bytes, full_bytes)


def test_resumed_net3_equals_the_uninterrupted_run(tmp_path, synthetic_arrays, net3_run, net12_checkpoint):
    config = _config("net3", epochs=3, net12_checkpoint=net12_checkpoint)
    first = train(
        _config("net3", epochs=1, net12_checkpoint=net12_checkpoint),
        tmp_path,
        arrays=synthetic_arrays,
        net12=_base(net12_checkpoint),
    )
    resumed = train(
        config, tmp_path, arrays=synthetic_arrays, resume_from=first.last_checkpoint, net12=_base(net12_checkpoint)
    )
    a, b = load_checkpoint(net3_run.last_checkpoint)["model"], load_checkpoint(resumed.last_checkpoint)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ("epoch_seconds", "images_per_second")
    assert [{k: v for k, v in h.items() if k not in timing} for h in net3_run.history] == [
        {k: v for k, v in h.items() if k not in timing} for h in resumed.history
    ]


def test_resume_refuses_a_net3_of_another_net12(tmp_path, synthetic_arrays, net3_run, net12_checkpoint):
    other = str(tmp_path / "other-net12")
    with pytest.raises(CheckpointError, match=f"{net12_checkpoint}.*{other}"):
        train(
            _config("net3", epochs=4, net12_checkpoint=other),
            tmp_path / "resumed",
            arrays=synthetic_arrays,
            resume_from=net3_run.last_checkpoint,
            net12=_base(net12_checkpoint),
        )
    with pytest.raises(CheckpointError, match=f"without the Net12 they refine, '{net12_checkpoint}'"):
        train(
            _config("net3", epochs=4, net12_checkpoint=net12_checkpoint),
            tmp_path / "resumed",
            arrays=synthetic_arrays,
            resume_from=net3_run.last_checkpoint,
        )


def test_loading_a_net3_checkpoint_needs_its_net12(net3_run, net12_checkpoint):
    with pytest.raises(CheckpointError, match=f"without the Net12 they refine, '{net12_checkpoint}'"):
        model_from_checkpoint(net3_run.best_checkpoint, expected="net3")
    narrower = build("net12", **{**NET12_CFG, "width": 0.125})
    with pytest.raises(CheckpointError, match=r"the base given is a net12 with config \{.*'width': 0.125"):
        model_from_checkpoint(net3_run.best_checkpoint, base=narrower)


def test_resolving_loader_rebuilds_the_trained_net3(synthetic_arrays, net3_run, net12_checkpoint):
    """The Net3 loaded from its slim checkpoint and the local Net12 checkpoint is the one training
    validated (the same metrics as that epoch's) and the one a full state dict rebuilds."""
    loaded = load_checkpoint_model(net3_run.best_checkpoint, expected="net3")
    config = _config("net3", net12_checkpoint=net12_checkpoint)
    loader = evaluation_loader(
        synthetic_arrays, data_splits(config, synthetic_arrays.scenes), "val", "net3", dict(loaded.config), 6
    )
    validated = evaluate(loaded, loader, torch.device("cpu"))
    best = net3_run.history[net3_run.best_epoch]
    assert validated["abs_rel"] == pytest.approx(best["val_abs_rel"], rel=1e-6)
    net12 = model_from_checkpoint(net12_checkpoint, expected="net12")
    full = model_from_checkpoint(net3_run.best_checkpoint, base=net12)
    image = torch.randn(2, 3, *NET12_CFG["input_size"])
    torch.testing.assert_close(loaded.eval()(image), full.eval()(image), rtol=0, atol=0)


def test_trial_artifact_is_slim_and_the_registered_files_are_whole(tmp_path, net3_run, net12_checkpoint):
    """A trial's ``best_model/`` (written from its checkpoint) names its Net12 and loads only with it;
    the files a registered version is logged from (``save_model_files``) hold the Net12 and load alone."""
    state = load_checkpoint(net3_run.best_checkpoint)
    weights, description = write_model_files(
        tmp_path / "best_model", state["model_name"], state["model_config"], state["model"], state[BASE_KEY]
    )
    assert not any(key.startswith(BASE_PREFIX) for key in torch.load(weights, weights_only=True))
    with pytest.raises(ValueError, match=f"without the Net12 they refine, '{net12_checkpoint}'"):
        DepthPredictor.from_files(weights, description)
    artifact = DepthPredictor.from_files(weights, description, base=_base(net12_checkpoint))
    registered_files = save_model_files(load_checkpoint_model(net3_run.best_checkpoint), tmp_path / "registered")
    assert any(key.startswith(BASE_PREFIX) for key in torch.load(registered_files[0], weights_only=True))
    registered = DepthPredictor.from_files(*registered_files)
    rgb = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8).numpy()
    assert (artifact.predict(rgb) == registered.predict(rgb)).all()
