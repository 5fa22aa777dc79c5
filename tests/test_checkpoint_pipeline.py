"""The background checkpoint writer: what it writes is the state at the epoch's end, its steps run in
epoch order after their checkpoint exists, the training thread does not wait for a slow report, and
a background failure reaches the training thread with its own type."""

from __future__ import annotations

import threading

import pytest
import torch

from depthtune import checkpoint_pipeline
from depthtune.checkpoint_pipeline import CheckpointPipeline, HostCopy
from depthtune.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint


def _state(weights: torch.Tensor, epoch: int) -> dict:
    return {"model": {"w": weights}, "epoch": epoch, "history": [{"loss": float(epoch)}]}


def test_the_written_checkpoint_is_the_state_when_it_was_saved(tmp_path):
    weights = torch.arange(6.0)
    pipeline = CheckpointPipeline(tmp_path, keep=3)
    directory = pipeline.save(0, _state(weights, 0))
    weights.add_(100.0)  # training goes on in place while the write is queued
    pipeline.publish(directory, None, best_epoch=0)
    pipeline.close()
    state = load_checkpoint(directory)
    assert torch.equal(state["model"]["w"], torch.arange(6.0)) and state["history"] == [{"loss": 0.0}]


def test_host_copy_reuses_its_buffers_and_snapshots_containers():
    copier, history = HostCopy(), [{"loss": 1.0}]
    first = copier.copy({"w": torch.ones(3), "history": history})
    history.append({"loss": 2.0})
    second = copier.copy({"w": torch.zeros(3), "history": history})
    assert first["w"].data_ptr() == second["w"].data_ptr()  # one buffer per tensor, overwritten
    assert first["history"] == [{"loss": 1.0}] and len(second["history"]) == 2


def test_steps_run_in_order_after_their_checkpoint_is_written_and_old_ones_are_pruned(tmp_path):
    seen = []
    pipeline = CheckpointPipeline(tmp_path, keep=1)
    for epoch in range(4):
        directory = pipeline.save(epoch, _state(torch.full((2,), float(epoch)), epoch)) if epoch != 2 else None
        pipeline.publish(
            directory,
            lambda d, epoch=epoch: seen.append((epoch, d is not None and (d / CHECKPOINT_FILE).is_file())),
            best_epoch=1,
        )
    pipeline.close()
    assert seen == [(0, True), (1, True), (2, False), (3, True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001", "epoch_003"]  # the best and the newest


def test_the_training_thread_does_not_wait_for_a_slow_report(tmp_path):
    release, reporting = threading.Event(), threading.Event()

    def slow_report(_directory):
        reporting.set()
        assert release.wait(timeout=60)

    pipeline = CheckpointPipeline(tmp_path, keep=3)
    pipeline.publish(pipeline.save(0, _state(torch.ones(2), 0)), slow_report, best_epoch=0)
    assert reporting.wait(timeout=60)
    directory = pipeline.save(1, _state(torch.ones(2), 1))  # returns while epoch 0's report is still running
    assert not release.is_set()
    pipeline.publish(directory, None, best_epoch=0)
    release.set()
    pipeline.close()
    assert (directory / CHECKPOINT_FILE).is_file()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), SystemExit(0)], ids=["disk", "stop"])
def test_a_background_failure_is_raised_on_the_training_thread(tmp_path, failure):
    def report(_directory):
        raise failure

    pipeline = CheckpointPipeline(tmp_path, keep=3)
    pipeline.publish(pipeline.save(0, _state(torch.ones(2), 0)), report, best_epoch=0)
    with pytest.raises(type(failure)):
        pipeline.close()


def test_a_failed_write_stops_later_steps_and_is_raised_at_the_next_save(tmp_path, monkeypatch):
    (tmp_path / "epoch_000").write_text("a file where the checkpoint directory should be")
    release = threading.Event()

    def held_save(directory, state):
        release.wait()  # the write fails only once its publish step is queued behind it
        save_checkpoint(directory, state)

    monkeypatch.setattr(checkpoint_pipeline, "save_checkpoint", held_save)
    published = []
    pipeline = CheckpointPipeline(tmp_path, keep=3)
    pipeline.publish(pipeline.save(0, _state(torch.ones(2), 0)), published.append, best_epoch=0)
    release.set()
    with pytest.raises(FileExistsError):
        pipeline.save(1, _state(torch.ones(2), 1))
    pipeline.close()
    assert published == []
