"""The training loop: per-epoch reporting, exact resume, Net3 on a Net12 checkpoint, bad configs."""

from __future__ import annotations

import math
import threading

import pytest
import torch

import depthtune.train
from conftest import TINY
from depthtune.checkpoints import CHECKPOINT_FILE, load_checkpoint, model_from_checkpoint
from depthtune.evaluation import data_splits, evaluate, evaluation_loader
from depthtune.models import build
from depthtune.names import METRIC_NAMES
from depthtune.profiles import EIGEN_NET12_RATES
from depthtune.tracking.lineage import load_checkpoint_model, resolve_base_model
from depthtune.train import TrainingStopped, checkpoint_due, parameter_groups, train
from depthtune.train_config import TrainConfig


def _config(model="net12", **overrides) -> TrainConfig:
    values = dict(
        model=model, model_cfg=TINY.get(model, {}), epochs=2, batch_size=6, lr=0.01, step_size=1, gamma=0.5, seed=11
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


def test_reports_every_epoch_with_all_metrics_and_a_checkpoint(tmp_path, synthetic_arrays):
    reported = []
    result = train(
        _config(),
        tmp_path / "ckpt",
        arrays=synthetic_arrays,
        on_epoch=lambda m, _model: lambda d: reported.append((m, d)),
    )
    assert [m["epoch"] for m, _ in reported] == [0.0, 1.0]
    expected = {"train_loss", "val_loss", "lr", "epoch_seconds", "images_per_second"} | {
        f"val_{n}" for n in METRIC_NAMES
    }
    for metrics, directory in reported:
        assert (directory / CHECKPOINT_FILE).is_file() or int(metrics["epoch"]) != result.best_epoch  # pruned after
        assert expected <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
    assert reported[0][0]["lr"] == 0.01 and reported[1][0]["lr"] == 0.005  # StepLR(step 1, gamma 0.5)
    assert (result.best_checkpoint / CHECKPOINT_FILE).is_file()
    assert (result.last_checkpoint / CHECKPOINT_FILE).is_file()
    state = load_checkpoint(result.last_checkpoint)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "model_config"} <= set(state)


def test_a_stop_ends_the_run_between_two_batches_after_the_queued_checkpoints(tmp_path, synthetic_arrays, monkeypatch):
    stop, steps, epochs_ended, published = threading.Event(), [], [], []
    real_step = depthtune.train.training_step

    def counted_step(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        steps.append(len(epochs_ended))  # the epochs ended before this batch
        if steps.count(1) == 1:
            stop.set()  # after the first batch of the second epoch
        return loss

    def on_epoch(metrics, _model):
        epochs_ended.append(metrics["epoch"])
        return lambda directory: published.append((metrics["epoch"], directory))

    monkeypatch.setattr(depthtune.train, "training_step", counted_step)
    with pytest.raises(TrainingStopped):
        train(_config(epochs=3), tmp_path / "ckpt", arrays=synthetic_arrays, on_epoch=on_epoch, stop=stop)
    assert steps.count(0) > 1 and steps.count(1) == 1 and epochs_ended == [0.0]  # no batch ran after the stop
    assert [epoch for epoch, _ in published] == [0.0]
    assert (published[0][1] / CHECKPOINT_FILE).is_file()  # the first epoch's checkpoint and step were finished


def test_resumed_run_equals_uninterrupted_run(tmp_path, synthetic_arrays):
    full = train(_config(epochs=3), tmp_path / "full", arrays=synthetic_arrays)
    first = train(_config(epochs=1), tmp_path / "part", arrays=synthetic_arrays)
    resumed = train(_config(epochs=3), tmp_path / "part", arrays=synthetic_arrays, resume_from=first.last_checkpoint)
    a = load_checkpoint(full.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(full.history, resumed.history):
        assert {k: v for k, v in x.items() if k not in ("epoch_seconds", "images_per_second")} == {
            k: v for k, v in y.items() if k not in ("epoch_seconds", "images_per_second")
        }


@pytest.mark.parametrize(
    ("every", "bests", "expected"),
    [
        (1, {0}, set(range(7))),
        (3, {0, 1}, {0, 1, 2, 5, 6}),
        (3, set(), {2, 5, 6}),
        (10, {0, 4}, {0, 4, 6}),
    ],
    ids=["every epoch", "bests, every 3rd and the last", "plateau: every 3rd and the last", "every beyond the budget"],
)
def test_checkpoints_fall_on_new_bests_the_last_epoch_and_every_nth(every, bests, expected):
    assert {epoch for epoch in range(7) if checkpoint_due(epoch, 7, every, epoch in bests)} == expected


def test_spaced_checkpoints_hold_each_new_best_and_resume_exactly(tmp_path, synthetic_arrays):
    """With checkpoint_every beyond the budget the loop writes only new bests and the last epoch,
    hands the callback None for the others, and a run resumed from the first checkpoint retrains the
    epochs after it into the same weights as the uninterrupted run."""
    written = []
    full = train(
        _config(epochs=4, checkpoint_every=9, keep_checkpoints=4),
        tmp_path / "full",
        arrays=synthetic_arrays,
        on_epoch=lambda m, _model: lambda d: written.append(d is not None and (d / CHECKPOINT_FILE).is_file()),
    )
    losses = [m["val_abs_rel"] for m in full.history]  # the default select_metric
    new_bests = [i == 0 or loss < min(losses[:i]) for i, loss in enumerate(losses)]
    assert written == [best or epoch == 3 for epoch, best in enumerate(new_bests)]
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == [f"epoch_{e:03d}" for e in range(4) if written[e]]
    resumed = train(
        _config(epochs=4, checkpoint_every=9),
        tmp_path / "resumed",
        arrays=synthetic_arrays,
        resume_from=tmp_path / "full" / "epoch_000",
    )
    a, b = load_checkpoint(full.last_checkpoint)["model"], load_checkpoint(resumed.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _net12(reference) -> torch.nn.Module:
    return resolve_base_model(str(reference), None, expected="net12").module()


def test_net3_trains_on_a_frozen_net12_checkpoint(tmp_path, synthetic_arrays):
    net12 = train(_config(epochs=1), tmp_path / "net12", arrays=synthetic_arrays)
    net3 = train(
        _config("net3", epochs=1, net12_checkpoint=str(net12.best_checkpoint)),
        tmp_path / "net3",
        arrays=synthetic_arrays,
        net12=_net12(net12.best_checkpoint),
    )
    frozen = model_from_checkpoint(net12.best_checkpoint, expected="net12").state_dict()
    refined = load_checkpoint_model(net3.best_checkpoint, expected="net3").state_dict()
    assert all(torch.equal(frozen[k], refined[f"net12.{k}"]) for k in frozen)


def test_net3_needs_its_net12_as_a_module(tmp_path, synthetic_arrays):
    with pytest.raises(ValueError, match="net12_checkpoint"):
        _config("net3")
    with pytest.raises(ValueError, match="resolve net12_checkpoint first"):
        train(_config("net3", net12_checkpoint="models:/net12@champion"), tmp_path / "a", arrays=synthetic_arrays)


def test_net12_reference_rejects_missing_or_wrong_checkpoint(tmp_path, synthetic_arrays):
    with pytest.raises(ValueError, match="does not exist"):
        _net12(tmp_path / "nope.pt")
    fcrn = train(_config("fcrn", epochs=1), tmp_path / "fcrn", arrays=synthetic_arrays)
    with pytest.raises(ValueError, match="holds a 'fcrn' model; expected a 'net12'"):
        _net12(fcrn.best_checkpoint)
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(ValueError, match="junk.pt"):
        _net12(not_a_checkpoint)


def test_net12_reference_rejects_another_architecture(tmp_path, synthetic_arrays):
    net12 = train(_config(epochs=1), tmp_path / "net12", arrays=synthetic_arrays)
    state = load_checkpoint(net12.best_checkpoint)
    state["model_config"] = {**state["model_config"], "width": 0.25}
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="does not fit net12"):
        _net12(tmp_path / "wrong.pt")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": -1e-3}, "lr=-0.001"),
        ({"step_size": 0}, "step_size=0"),
        ({"momentum": 1.5}, "momentum=1.5"),
        ({"model": "unet"}, "model='unet'"),
        ({"epochs": 0}, "epochs=0"),
        ({"select_metric": "val_accuracy"}, "select_metric='val_accuracy'"),
    ],
)
def test_bad_configs_name_the_value(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _config(**overrides)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_persistent_loader_workers_train_exactly_as_the_main_process(tmp_path, synthetic_arrays):
    """One DataLoader serves every epoch (persistent workers); each epoch's order and augmentation must
    still be its own, so 2 workers give the same run as loading in the main process."""
    inline = train(_config(epochs=2), tmp_path / "inline", arrays=synthetic_arrays)
    workers = train(_config(epochs=2, num_workers=2), tmp_path / "workers", arrays=synthetic_arrays)
    a = load_checkpoint(inline.last_checkpoint)["model"]
    b = load_checkpoint(workers.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in inline.history] == [h["train_loss"] for h in workers.history]


def test_the_device_resident_split_trains_exactly_as_the_loader(tmp_path, synthetic_arrays, monkeypatch):
    """Where the split fits on the GPU, the loop trains on DeviceBatches; here on the CPU (made to
    "fit"), so the same run must come out bit for bit as with the DataLoader."""
    loader = train(_config(epochs=2), tmp_path / "loader", arrays=synthetic_arrays)
    chosen = []
    monkeypatch.setattr(depthtune.train, "fits_on_device", lambda *args: chosen.append(True) or True)
    resident = train(_config(epochs=2), tmp_path / "resident", arrays=synthetic_arrays)
    assert chosen == [True]
    a, b = load_checkpoint(loader.last_checkpoint)["model"], load_checkpoint(resident.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in loader.history] == [h["train_loss"] for h in resident.history]


def test_resume_refuses_another_model(tmp_path, synthetic_arrays):
    net12 = train(_config(epochs=1), tmp_path / "net12", arrays=synthetic_arrays)
    with pytest.raises(ValueError, match="cannot resume a 'fcrn' run"):
        train(_config("fcrn"), tmp_path / "f", arrays=synthetic_arrays, resume_from=net12.last_checkpoint)


class _Diverged(torch.nn.Module):
    """A diverged model: every log-depth it predicts is ``value`` (NaN, or finite but past exp's range)."""

    predicts = "log_depth"

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.full((image.shape[0], 1, 8, 10), self.value)


@pytest.mark.parametrize("log_depth", [float("nan"), 1000.0])
def test_non_finite_predictions_are_called_divergence(synthetic_arrays, log_depth):
    """Also a finite log-depth whose depth overflows (once reported as 'no valid ground truth')."""
    config = _config()
    splits = data_splits(config, synthetic_arrays.scenes)
    loader = evaluation_loader(synthetic_arrays, splits, "val", "net12", dict(TINY["net12"]), batch_size=4)
    with pytest.raises(FloatingPointError, match="not finite: it diverged"):
        evaluate(_Diverged(log_depth), loader, torch.device("cpu"))


def test_per_layer_learning_rates_reach_the_optimizer_and_the_weights(tmp_path, synthetic_arrays):
    """lr_multipliers scale the searched rate per named layer group: every trainable parameter is in
    exactly one group, a scale 1 at a near-zero rate barely moves while the fusion layers learn at
    the base rate, and the logged lr is the base rate."""
    model = build("net12", **TINY["net12"])
    groups = {g["name"]: g for g in parameter_groups(model, 0.02, {"scale1_convs": 0.1, "scale1_full": 10})}
    assert list(groups) == ["scale1_convs", "scale1_full", "scale2_first", "scale2_hidden", "scale2_output"]
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {"scale1_convs": 0.002, "scale1_full": 0.2, "scale2_first": 0.02, "scale2_hidden": 0.02, "scale2_output": 0.02}
    )
    named = dict(model.named_parameters())
    assert {id(p) for p in groups["scale1_convs"]["params"]} == {
        id(p) for n, p in named.items() if n.startswith("features.")
    }
    assert sorted(id(p) for g in groups.values() for p in g["params"]) == sorted(id(p) for p in named.values())
    with pytest.raises(
        ValueError, match=r"lr_multipliers: \['encoder'\] name no layer group of net12; its groups are \['scale1_convs'"
    ):
        parameter_groups(model, 0.02, {"encoder": 0.1})
    with pytest.raises(ValueError, match=r"lr_multipliers\['scale1_convs'\]=0: expected a number > 0"):
        _config(lr_multipliers={"scale1_convs": 0})

    optimizer_groups = torch.optim.SGD(parameter_groups(model, 0.01, EIGEN_NET12_RATES), lr=0.01).param_groups
    assert {g["name"]: g["lr"] for g in optimizer_groups} == pytest.approx(
        {
            "scale1_convs": 0.001,
            "scale1_full": 0.1,
            "scale2_first": 0.001,
            "scale2_hidden": 0.01,
            "scale2_output": 0.001,
        }
    )  # Eigen & Fergus's rates at their base rate 0.01

    torch.manual_seed(11)  # train() seeds with the config's seed before it builds the model
    start = build("net12", **TINY["net12"])
    reported = []
    result = train(
        _config(epochs=1, lr_multipliers={"scale1_convs": 1e-9}),
        tmp_path / "slow",
        arrays=synthetic_arrays,
        on_epoch=lambda m, _model: reported.append(m),
    )
    trained = load_checkpoint(result.last_checkpoint)["model"]
    initial = start.state_dict()
    moved = {name: float((trained[name] - initial[name]).abs().max()) for name in initial if name.endswith("weight")}
    assert max(v for n, v in moved.items() if n.startswith("features.")) < 1e-6
    assert min(v for n, v in moved.items() if n.startswith("fuse.")) > 1e-5
    assert reported[0]["lr"] == pytest.approx(0.01)
