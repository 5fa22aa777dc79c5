"""The best weights a trial's checkpoints carry: each reported checkpoint keeps the best weights as
they were when it was reported, whether they were linked in or copied."""

import os

import pytest
import torch

from depthtune.checkpoints import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from depthtune.trial import BEST_DIR, _carry_best, best_weights


def _weights(value: float) -> dict:
    return {"model_name": "net12", "model_config": {}, "model": {"w": torch.full((3,), value)}, "epoch": int(value)}


@pytest.mark.parametrize("links", [True, False], ids=["hard link", "copy across filesystems"])
def test_a_carried_best_keeps_its_weights_when_a_new_best_replaces_the_file(tmp_path, monkeypatch, links):
    if not links:
        def cross_device(*_args):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "link", cross_device)
    best_file = save_checkpoint(tmp_path / "workdir" / BEST_DIR, _weights(1.0))
    reported = tmp_path / "checkpoints" / "epoch_002"
    save_checkpoint(reported, _weights(2.0))

    _carry_best(best_file, reported)
    carried = best_weights(reported)
    assert carried == reported / BEST_DIR / CHECKPOINT_FILE
    assert (carried.stat().st_ino == best_file.stat().st_ino) is links, "linked on one filesystem, else copied"

    save_checkpoint(best_file.parent, _weights(3.0))  # a later epoch becomes the best
    assert torch.equal(load_checkpoint(carried)["model"]["w"], torch.full((3,), 1.0))
    assert torch.equal(load_checkpoint(best_file)["model"]["w"], torch.full((3,), 3.0))
